"""Ingest entry points: store the detection tier's events and open their cases, as one unit.

Detection stores events and knows nothing of cases; this layer knows both, so the REST endpoint
(POST /api/v1/detections/), the Celery task `detection.ingest_events` and the replay of dead
letters live here and hand detection the case opener.
"""

import json
import logging

from celery import shared_task
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from detection.intake.dead_letters import dead_letters_store
from detection.intake.metrics import dead_lettered_record
from detection.intake.storage import Outcome, batch_reject, events_ingest
from detection.intake.storage import dead_letters_replay as letters_submit_again
from detection.intake.tokens import ServiceTokenAuthentication
from detection.intake.validation import Reason
from detection.models import DeadLetter, DetectionEvent
from moderation_portal.core import metrics
from moderation_portal.core.access import DETECTION_TIER, role_permission
from moderation_portal.core.api import error_response
from moderation_portal.core.session_auth import SessionAuthentication
from reviews.cases.opening import cases_open_for_events

logger = logging.getLogger(__name__)

SOURCE_API, SOURCE_CELERY = "api", "celery"


def _open_cases(rows: list[DetectionEvent]) -> None:
    # Resolved when called, not bound at import: replacing this module's cases_open_for_events
    # (as tests do to make opening fail) takes effect.
    cases_open_for_events(events=rows)


def detections_ingest(*, events: list, source: str) -> list[Outcome]:
    """Validate and store a batch and open a case for each new event, in one transaction."""
    return events_ingest(events=events, source=source, open_cases=_open_cases)


def dead_letters_replay(*, letters: list[DeadLetter]) -> list[Outcome]:
    """Submit kept events again, opening cases for those accepted this time."""
    return letters_submit_again(letters=letters, open_cases=_open_cases)


def _too_large(count: int) -> Reason:
    return Reason(
        "$", "batch_too_large", f"{count} events; the limit is {settings.INGEST_MAX_BATCH} a batch"
    )


def _dead_lettered(source: str, code: str) -> None:
    if metrics.ENABLED:
        dead_lettered_record(source=source, code=code)


def _counts(outcomes: list[Outcome]) -> dict:
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    for outcome in outcomes:
        counts[outcome.status] += 1
    return counts


# --- REST ------------------------------------------------------------------------------------


class IngestOutcome(serializers.Serializer):
    index = serializers.IntegerField()
    event_id = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(choices=["accepted", "duplicate", "rejected"])
    reasons = serializers.ListField(child=serializers.DictField(), required=False)
    dead_letter_id = serializers.IntegerField(required=False)


class IngestOutput(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicate = serializers.IntegerField()
    rejected = serializers.IntegerField()
    results = IngestOutcome(many=True)


def _summary(outcomes: list[Outcome]) -> dict:
    return {**_counts(outcomes), "results": [o.as_dict() for o in outcomes]}


class DetectionIngestApi(APIView):
    """POST a JSON list of schema-v1 events; each is accepted, a duplicate, or rejected with
    reasons.
    """

    # DRF's session CSRF check parses the body, and with no parser answers 415 before the
    # role check; the portal's runs on Django's request, which leaves the body unread.
    authentication_classes = [ServiceTokenAuthentication, SessionAuthentication]
    permission_classes = [role_permission(DETECTION_TIER)]
    parser_classes: list = []  # the body is read and parsed here, so bad JSON is kept, not lost

    @extend_schema(
        # Any JSON list: each item is judged on its own (GET /api/v1/schema/detection-event.json),
        # and one that is not an event is rejected and kept while the rest are accepted.
        request={"application/json": {"type": "array", "items": {}}},
        responses={
            200: IngestOutput,
            400: OpenApiResponse(description="unparseable body or not a list"),
            413: OpenApiResponse(description="batch or body over the limit"),
            503: OpenApiResponse(
                description="the database is unavailable; nothing was lost, send again"
            ),
        },
    )
    def post(self, request):
        try:
            return self._ingest(request)
        except (OperationalError, InterfaceError) as exc:
            # Only errors a retry can cure get here (the others are dead-lettered per event); what
            # was stored before comes back as duplicates when the tier sends the batch again.
            logger.warning(
                "ingest over REST failed transiently: %s", type(exc).__name__, exc_info=True
            )
            response = error_response(
                "storage_unavailable",
                "The database is unavailable; send the batch again.",
                status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
            response["Retry-After"] = "5"
            return response

    def _ingest(self, request):
        try:
            body = request.body
        except RequestDataTooBig:
            letter = dead_letters_store(
                items=[
                    (
                        "<body over the size limit, not kept>",
                        [Reason("$", "body_too_large", "the request body is over the limit")],
                    )
                ],
                source=SOURCE_API,
            )[0]
            _dead_lettered(SOURCE_API, "body_too_large")
            return error_response(
                "body_too_large",
                f"The body is over {settings.INGEST_MAX_BODY_BYTES} bytes.",
                status_code=413,
                details={"dead_letter_id": letter.id},
            )
        try:
            events = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            reason = Reason("$", "unparseable_json", f"the body is not valid JSON: {exc}")
            letter = dead_letters_store(items=[(body, [reason])], source=SOURCE_API)[0]
            _dead_lettered(SOURCE_API, reason.code)
            return error_response(
                "unparseable_json",
                letter.reasons[0]["message"],
                status_code=400,
                details={"dead_letter_id": letter.id},
            )
        if not isinstance(events, list):
            reason = Reason("$", "wrong_type", "the body must be a JSON list of events")
            letter = dead_letters_store(items=[(events, [reason])], source=SOURCE_API)[0]
            _dead_lettered(SOURCE_API, reason.code)
            return error_response(
                "wrong_type", reason.message, status_code=400, details={"dead_letter_id": letter.id}
            )
        if len(events) > settings.INGEST_MAX_BATCH:
            reason = _too_large(len(events))
            outcomes = batch_reject(events=events, source=SOURCE_API, reason=reason)
            # a refusal in the one error shape; every event's dead letter is in the details
            return error_response(
                reason.code,
                reason.message,
                status_code=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                details=_summary(outcomes),
            )
        outcomes = detections_ingest(events=events, source=SOURCE_API)
        return Response(_summary(outcomes), status=status.HTTP_200_OK)


# --- Celery ----------------------------------------------------------------------------------


@shared_task(
    name="detection.ingest_events",
    acks_late=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=8,
)
def ingest_events_task(events) -> dict:
    """The detection tier's Celery entry point: one argument, a list of schema-v1 events.

    Safe to run twice: event_id is unique, so a redelivered batch yields duplicates only.
    """
    if not isinstance(events, list):
        dead_letters_store(
            items=[(events, [Reason("$", "wrong_type", "the task takes a list of events")])],
            source=SOURCE_CELERY,
        )
        _dead_lettered(SOURCE_CELERY, "wrong_type")
        return {"accepted": 0, "duplicate": 0, "rejected": 1}
    if len(events) > settings.INGEST_MAX_BATCH:
        outcomes = batch_reject(events=events, source=SOURCE_CELERY, reason=_too_large(len(events)))
    else:
        outcomes = detections_ingest(events=events, source=SOURCE_CELERY)
    counts = _counts(outcomes)
    logger.info("ingest batch of %d: %s", len(events), counts)
    return counts
