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
