"""Detection's own tasks (enrichment, references). The ingest task `detection.ingest_events`
lives in reviews.cases.intake, the layer that knows both the events and the cases opened for
them."""

import logging

from celery import shared_task
from django.conf import settings
from django.db import OperationalError

logger = logging.getLogger(__name__)


@shared_task(name="detection.enrich_event_task", acks_late=True)
def enrich_event_task(event_id: int) -> None:
    """Fan out the independent enrichment steps of one flag."""
    from detection.evidence.enrichment import STEPS, steps_create

    steps_create(event_ids=[event_id])
    for name in STEPS:
        enrich_step_task.apply_async(args=[event_id, str(name)])


@shared_task(
    name="detection.enrich_step_task",
    bind=True,
    acks_late=True,
    max_retries=None,
    soft_time_limit=300,
    time_limit=360,
)
def enrich_step_task(self, event_id: int, name: str) -> str:
    from detection.evidence.enrichment import step_run
    from detection.evidence.vectors import StepTransient

    final = self.request.retries >= settings.ENRICH_MAX_RETRIES
    try:
        return step_run(event_id=event_id, name=name, final_attempt=final)
    except StepTransient as exc:
        raise self.retry(exc=exc, countdown=min(60, 2**self.request.retries)) from exc


@shared_task(
    name="detection.reference_add_task",
    acks_late=True,
    autoretry_for=(OperationalError,),
    max_retries=5,
)
def reference_add_task(
    decision_id: int, case_id: int, event_id: int, policy: str, action: str, decided_at: str
) -> int:
    from datetime import datetime

    from detection.evidence.references import references_add_for_decision
    from detection.evidence.vectors import StepUnavailable

    try:
        return references_add_for_decision(
            decision_id=decision_id,
            case_id=case_id,
            event_id=event_id,
            policy=policy,
            action=action,
            decided_at=datetime.fromisoformat(decided_at),
        )
    except StepUnavailable as exc:
        logger.info("decision %s not added to the references: %s", decision_id, exc)
        return 0


@shared_task(name="detection.reference_build_index_task", acks_late=True)
def reference_build_index_task(activate: bool = False) -> str:
    from detection.evidence.references import reference_index_build

    return reference_index_build(activate=activate).version
