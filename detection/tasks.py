import logging

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from detection.services import batch_reject, dead_letters_store, events_ingest
from detection.validation import Reason

logger = logging.getLogger(__name__)


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
            source="celery",
        )
        return {"accepted": 0, "duplicate": 0, "rejected": 1}
    if len(events) > settings.INGEST_MAX_BATCH:
        reason = Reason("$", "batch_too_large", f"{len(events)} events; the limit is {settings.INGEST_MAX_BATCH} a batch")
        outcomes = batch_reject(events=events, source="celery", reason=reason)
    else:
        outcomes = events_ingest(events=events, source="celery")
    counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
    for outcome in outcomes:
        counts[outcome.status] += 1
    logger.info("ingest batch of %d: %s", len(events), counts)
    return counts


@shared_task(name="detection.enrich_event_task", acks_late=True)
def enrich_event_task(event_id: int) -> None:
    """Fan out the independent enrichment steps of one flag."""
    from detection.enrichment import STEPS, steps_create

    steps_create(event_ids=[event_id])
    for name in STEPS:
        enrich_step_task.apply_async(args=[event_id, str(name)])


@shared_task(name="detection.enrich_step_task", bind=True, acks_late=True, max_retries=None,
             soft_time_limit=300, time_limit=360)
def enrich_step_task(self, event_id: int, name: str) -> str:
    from detection.enrichment import StepTransient, step_run

    final = self.request.retries >= settings.ENRICH_MAX_RETRIES
    try:
        return step_run(event_id=event_id, name=name, final_attempt=final)
    except StepTransient as exc:
        raise self.retry(exc=exc, countdown=min(60, 2 ** self.request.retries)) from exc


@shared_task(name="detection.reference_add_task", acks_late=True, autoretry_for=(OperationalError,), max_retries=5)
def reference_add_task(decision_id: int, case_id: int, event_id: int, policy: str, action: str, decided_at: str) -> int:
    from datetime import datetime

    from detection.enrichment import StepUnavailable
    from detection.references import references_add_for_decision

    try:
        return references_add_for_decision(decision_id=decision_id, case_id=case_id, event_id=event_id, policy=policy,
                                           action=action, decided_at=datetime.fromisoformat(decided_at))
    except StepUnavailable as exc:
        logger.info("decision %s not added to the references: %s", decision_id, exc)
        return 0


@shared_task(name="detection.reference_build_index_task", acks_late=True)
def reference_build_index_task(activate: bool = False) -> str:
    from detection.references import reference_index_build

    return reference_index_build(activate=activate).version
