"""The drift check and the alert deliveries, as Celery tasks on the beat schedule."""

from celery import shared_task

from reviews.monitoring.alerts import alerts_deliver
from reviews.monitoring.drift import drift_check, summary


@shared_task(name="reviews.drift_check_task", soft_time_limit=300, time_limit=360)
def drift_check_task() -> dict:
    """Hourly (beat): run every drift check, store what it found, send the alerts it raised.
    Safe to run twice: one alarm per check can be open (a unique constraint), and alerts are
    claimed before they are sent."""
    results = drift_check()
    return {**summary(results), "alerts": alerts_deliver()}


@shared_task(name="reviews.deliver_drift_alerts_task", soft_time_limit=110, time_limit=150)
def deliver_drift_alerts_task() -> dict:
    """Periodic (beat): send alerts that are due again after a failed attempt."""
    return alerts_deliver()
