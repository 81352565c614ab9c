"""Enforcement delivery's metrics: each webhook attempt's outcome and, for a delivered message,
the lag from entering the outbox to the marketplace accepting it (recorded where the attempt
is written); read at scrape time, the outbox messages not delivered yet, by state, and the age
of the oldest one still to be sent."""

from collections.abc import Iterable
from datetime import datetime

from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from moderation_portal.core import metrics
from reviews.enforcement.models import OutboxMessage

State = OutboxMessage.State
# An attempt's outcome (reviews.enforcement.delivery.message_send) as counted: the words of
# its DeliveryAttempt row. Released and lost claims wrote no attempt and do not count.
OUTCOMES = {
    "delivered": "delivered",
    "retrying": "retry",
    "failed": "failed",
    "disabled": "disabled",
}
UNDELIVERED = (State.PENDING, State.SENDING, State.RETRYING, State.FAILED)
TO_BE_SENT = (State.PENDING, State.SENDING, State.RETRYING)


def delivery_record(*, message: OutboxMessage, outcome: str, finished_at: datetime) -> None:
    counted = OUTCOMES.get(outcome)
    if counted is None:
        return
    metrics.ENFORCEMENT_DELIVERIES.labels(message.type, counted).inc()
    if counted == "delivered":
        lag = (finished_at - message.created_at).total_seconds()
        metrics.ENFORCEMENT_LAG.labels(message.type).observe(max(0.0, lag))


def collect() -> Iterable[Metric]:
    backlog = GaugeMetricFamily(
        "portal_enforcement_backlog",
        "Outbox messages not delivered yet, by state (pending, sending, retrying, failed).",
        labels=["state"],
    )
    oldest = GaugeMetricFamily(
        "portal_enforcement_oldest_pending_age_seconds",
        "Age of the oldest outbox message still to be sent (pending, sending or retrying); 0 "
        "when none is.",
    )
    now = timezone.now()
    rows = {
        row["state"]: row
        for row in OutboxMessage.objects.filter(state__in=UNDELIVERED)
        .values("state")
        .annotate(n=Count("id"), oldest=Min("created_at"))
    }
    for state in UNDELIVERED:
        backlog.add_metric([state], rows[state]["n"] if state in rows else 0)
    waiting = [rows[s]["oldest"] for s in TO_BE_SENT if s in rows]
    oldest.add_metric([], max(0.0, (now - min(waiting)).total_seconds()) if waiting else 0.0)
    yield backlog
    yield oldest
