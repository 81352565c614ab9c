import json

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from detection.schema import event_schema
from detection.services import batch_reject, dead_letters_store, events_ingest
from detection.validation import Reason
from moderation_portal.api import error_response
from moderation_portal.roles import ALL_ROLES, DETECTION_TIER, role_permission


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


def _summary(outcomes) -> dict:
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    for outcome in outcomes:
        counts[outcome.status] += 1
    return {**counts, "results": [o.as_dict() for o in outcomes]}


class DetectionIngestApi(APIView):
    """POST a JSON list of schema-v1 events; each is accepted, a duplicate, or rejected with reasons."""

    permission_classes = [role_permission(DETECTION_TIER)]
    parser_classes: list = []  # the body is read and parsed here, so bad JSON is kept, not lost

    @extend_schema(
        request={"application/json": {"type": "array", "items": {"type": "object"}}},
        responses={200: IngestOutput, 400: OpenApiResponse(description="unparseable body or not a list"),
                   413: OpenApiResponse(description="batch or body over the limit")},
    )
    def post(self, request):
        try:
            body = request.body
        except RequestDataTooBig:
            letter = dead_letters_store(
                items=[("<body over the size limit, not kept>", [Reason("$", "body_too_large", "the request body is over the limit")])],
                source="api",
            )[0]
            return error_response("body_too_large", f"The body is over {settings.INGEST_MAX_BODY_BYTES} bytes.",
                                  status_code=413, details={"dead_letter_id": letter.id})
        try:
            events = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            reason = Reason("$", "unparseable_json", f"the body is not valid JSON: {exc}")
            letter = dead_letters_store(items=[(body, [reason])], source="api")[0]
            return error_response("unparseable_json", reason.message, status_code=400,
                                  details={"dead_letter_id": letter.id})
        if not isinstance(events, list):
            reason = Reason("$", "wrong_type", "the body must be a JSON list of events")
            letter = dead_letters_store(items=[(events, [reason])], source="api")[0]
            return error_response("wrong_type", reason.message, status_code=400, details={"dead_letter_id": letter.id})
        if len(events) > settings.INGEST_MAX_BATCH:
            reason = Reason("$", "batch_too_large", f"{len(events)} events; the limit is {settings.INGEST_MAX_BATCH} a batch")
            outcomes = batch_reject(events=events, source="api", reason=reason)
            return Response(_summary(outcomes), status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        outcomes = events_ingest(events=events, source="api")
        return Response(_summary(outcomes), status=status.HTTP_200_OK)


class DetectionEventSchemaApi(APIView):
    """The JSON Schema of one event (schema version 1), built from the configured limits."""

    permission_classes = [role_permission(*ALL_ROLES)]

    @extend_schema(responses={200: {"type": "object"}})
    def get(self, request):
        return Response(event_schema())
