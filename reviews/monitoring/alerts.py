"""Drift alarms out: a signed JSON alert to `ALERT_WEBHOOK_URL`, delivered until it lands.

An alert goes out when an alarm is raised, when a warning becomes an alarm, and when it is
resolved (`drift_alarm.raised`, `drift_alarm.escalated`, `drift_alarm.resolved`). It is signed
and sent exactly as the marketplace's enforcement webhooks are (Standard Webhooks:
`reviews.enforcement.webhooks`), with a webhook id that is the same on every attempt of one
alert (`msg_drift_alarm_<id>_<event>`), so the receiver can drop a repeat.

Its state lives on the alarm's row, not in a worker: pending with the time of the next attempt,
the attempts made and the last error; delivered; or failed once `ALERT_RETRY_SCHEDULE` is spent
(or the receiver answered 410 Gone). A newer alert of the same alarm replaces one not yet
delivered (the receiver learns the alarm's current state, which is what it needs); the body is
built from the row when it is sent. Without `ALERT_WEBHOOK_URL` and `ALERT_WEBHOOK_SECRET` the
alarm says `not_configured`, and nothing is queued. Each attempt is counted in
`portal_alerts_sent` by outcome (delivered, failed).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from moderation_portal.core import metrics
from reviews.enforcement import delivery, webhooks
from reviews.monitoring.models import DriftAlarm

logger = logging.getLogger(__name__)

RAISED, ESCALATED, RESOLVED = "drift_alarm.raised", "drift_alarm.escalated", "drift_alarm.resolved"
State = DriftAlarm.AlertState
RUN_BUDGET_SECONDS = 60.0


def alerts_configured() -> bool:
    return bool(settings.ALERT_WEBHOOK_URL and settings.ALERT_WEBHOOK_SECRET)


def alert_queued(event: str, *, now: datetime) -> dict[str, Any]:
    """The alert fields of an alarm that has `event` to tell: queued for its first attempt, or
    not configured."""
    if not alerts_configured():
        return {
            "alert_event": event,
            "alert_state": State.NOT_CONFIGURED,
            "alert_attempts": 0,
            "alert_last_error": "",
            "alert_delivered_at": None,
            "alert_next_attempt_at": None,
        }
    first_delay = settings.ALERT_RETRY_SCHEDULE[0] if settings.ALERT_RETRY_SCHEDULE else 0
    return {
        "alert_event": event,
        "alert_state": State.PENDING,
        "alert_attempts": 0,
        "alert_last_error": "",
        "alert_delivered_at": None,
        "alert_next_attempt_at": now + timedelta(seconds=first_delay),
    }


def webhook_id(alarm: DriftAlarm) -> str:
    return f"msg_drift_alarm_{alarm.pk}_{alarm.alert_event.rpartition('.')[2]}"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def alert_body(alarm: DriftAlarm) -> dict[str, Any]:
    return {
        "type": alarm.alert_event,
        "data": {
            "alarm_id": alarm.pk,
            "policy": alarm.policy,
            "model_version": alarm.model_version,
            "test": alarm.test,
            "test_name": DriftAlarm.Test(alarm.test).label,
            "direction": alarm.direction,
            "severity": alarm.severity,
            "statistic": alarm.statistic,
            "p_value": alarm.p_value,
            "threshold": alarm.threshold,
            "recent_window": [_iso(alarm.recent_start), _iso(alarm.recent_end)],
            "reference_window": [_iso(alarm.reference_start), _iso(alarm.reference_end)],
            "recent_count": alarm.recent_count,
            "reference_count": alarm.reference_count,
            "raised_at": _iso(alarm.raised_at),
            "last_checked_at": _iso(alarm.last_checked_at),
            "resolved_at": _iso(alarm.resolved_at),
            "detail": alarm.detail,
        },
    }


def _encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _lease_seconds() -> float:
    return settings.ALERT_TIMEOUT_SECONDS * 4


def retry_delay(attempts: int, retry_after: int | None) -> float | None:
    """Seconds until the next attempt after `attempts` attempts, on ALERT_RETRY_SCHEDULE with the
    enforcement outbox's jitter; None when the schedule is spent."""
    return delivery.retry_delay(attempts, retry_after, schedule=settings.ALERT_RETRY_SCHEDULE)


def _claim(*, now: datetime, exclude: set[int]) -> DriftAlarm | None:
    """Take the most overdue pending alert by a conditional update that moves its next attempt
    past a lease: a worker killed mid-attempt leaves it due again when the lease runs out."""
    due = (
        DriftAlarm.objects.filter(alert_state=State.PENDING, alert_next_attempt_at__lte=now)
        .exclude(pk__in=exclude)
        .order_by("alert_next_attempt_at", "id")
    )
    lease_until = now + timedelta(seconds=_lease_seconds())
    for alarm in due[:5]:
        taken = DriftAlarm.objects.filter(
            pk=alarm.pk,
            alert_state=State.PENDING,
            alert_event=alarm.alert_event,
            alert_next_attempt_at=alarm.alert_next_attempt_at,
        ).update(alert_next_attempt_at=lease_until)
        if taken == 1:
            alarm.alert_next_attempt_at = lease_until
            return alarm
    return None


def alert_send(alarm: DriftAlarm, *, secrets: tuple[webhooks.Secret, ...]) -> str:
    """One attempt at a claimed alert; what became of it (delivered, retrying, failed, or
    superseded when a newer alert replaced it during the attempt)."""
    assert settings.ALERT_WEBHOOK_URL
    result = webhooks.deliver(
        url=settings.ALERT_WEBHOOK_URL,
        secrets=secrets,
        webhook_id=webhook_id(alarm),
        body=_encode(alert_body(alarm)),
        connect_timeout=settings.ALERT_TIMEOUT_SECONDS,
        read_timeout=settings.ALERT_TIMEOUT_SECONDS,
    )
    if metrics.ENABLED:
        metrics.ALERTS_SENT.labels(outcome="delivered" if result.delivered else "failed").inc()
    now = timezone.now()
    attempts = alarm.alert_attempts + 1
    if result.delivered:
        outcome = "delivered"
        changes = {
            "alert_state": State.DELIVERED,
            "alert_delivered_at": now,
            "alert_last_error": "",
        }
        changes["alert_next_attempt_at"] = None
    else:
        delay = None if result.permanent else retry_delay(attempts, result.retry_after_seconds)
        error = (result.error or "not delivered")[:500]
        if delay is None:
            outcome = "failed"
            changes = {"alert_state": State.FAILED, "alert_next_attempt_at": None}
        else:
            outcome = "retrying"
            changes = {"alert_next_attempt_at": now + timedelta(seconds=delay)}
        changes["alert_last_error"] = error
    mine = DriftAlarm.objects.filter(
        pk=alarm.pk,
        alert_state=State.PENDING,
        alert_event=alarm.alert_event,
        alert_next_attempt_at=alarm.alert_next_attempt_at,
    )
    if mine.update(alert_attempts=attempts, **changes) != 1:
        return "superseded"
    if outcome == "failed":
        logger.error(
            "drift alert %s failed after %s attempts: %s", webhook_id(alarm), attempts, result.error
        )
    return outcome


def alerts_deliver(*, limit: int = 50) -> dict[str, Any]:
    """Send the alerts that are due, one claim at a time, until `limit` attempts, nothing due,
    or the run's time budget is spent. Counts by outcome."""
    if not alerts_configured():
        return {"configured": False}
    secrets = webhooks.parse_secrets(settings.ALERT_WEBHOOK_SECRET or "")  # fails loudly
    counts: Counter[str] = Counter()
    seen: set[int] = set()
    deadline = time.monotonic() + RUN_BUDGET_SECONDS
    while len(seen) < limit and time.monotonic() < deadline:
        alarm = _claim(now=timezone.now(), exclude=seen)
        if alarm is None:
            break
        seen.add(alarm.pk)
        counts[alert_send(alarm, secrets=secrets)] += 1
    return {"configured": True, **counts}
