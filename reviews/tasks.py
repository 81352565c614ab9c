"""Every Celery task of the reviews app, gathered here so the worker's autodiscovery finds them."""

from reviews.cases.intake import ingest_events_task
from reviews.cases.tasks import llm_verify_case_task, release_expired_leases_task
from reviews.enforcement.delivery import deliver_enforcements_task
from reviews.enforcement.transparency import submit_statements_task
from reviews.monitoring.tasks import deliver_drift_alerts_task, drift_check_task

__all__ = [
    "deliver_drift_alerts_task",
    "deliver_enforcements_task",
    "drift_check_task",
    "ingest_events_task",
    "llm_verify_case_task",
    "release_expired_leases_task",
    "submit_statements_task",
]
