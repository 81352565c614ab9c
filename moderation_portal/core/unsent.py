"""Sending a Celery task without losing it when the broker is down.

`task_send` is `apply_async` that, when the broker refuses, keeps the task in the database
(`UnsentTask`, with its arguments and the sender's log context) instead of dropping it with a
warning. Beat runs `unsent_tasks_send` every `UNSENT_TASKS_SWEEP_SECONDS`: it sends the kept
tasks oldest first and deletes each one the broker takes, stopping at the first refusal (the
broker is still down). Every task sent this way must be safe to run twice, as every task of the
portal is: a task the broker took just before it failed may also be kept.
"""

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import DatabaseError
from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from moderation_portal.core.models import UnsentTask
from moderation_portal.core.tracing import context_current, log_context

logger = logging.getLogger(__name__)

SWEEP_BATCH = 500


def task_send(
    task: Any,
    *,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    countdown: float | None = None,
    queue: str | None = None,
) -> bool:
    """Send `task` (a Celery task); True if the broker took it, False if it was kept to be sent
    later (or, with the database down too, logged at ERROR as lost)."""
    options: dict[str, Any] = {}
    if countdown is not None:
        options["countdown"] = countdown
    if queue is not None:
        options["queue"] = queue
    try:
        task.apply_async(args=list(args), kwargs=dict(kwargs or {}), **options)
        return True
    except Exception as exc:  # noqa: BLE001 - kombu and redis raise many kinds
        error = f"{type(exc).__name__}: {exc}"[:500]
    fields = context_current()
    try:
        UnsentTask.objects.create(
            task=task.name,
            args=list(args),
            kwargs=dict(kwargs or {}),
            options={k: v for k, v in options.items() if k == "queue"},
            log_fields=fields,
            last_error=error,
        )
    except DatabaseError:
        logger.error("the broker refused %s%s and it could not be kept", task.name, list(args))
        return False
    logger.warning("the broker refused %s%s; kept to send later: %s", task.name, list(args), error)
    return False


def unsent_tasks_send(*, limit: int = SWEEP_BATCH) -> dict[str, int]:
    """Send the kept tasks, oldest first; {"sent": n, "kept": m} (m: still waiting)."""
    from celery import current_app  # type: ignore[import-untyped]

    sent = 0
    for row in UnsentTask.objects.order_by("created_at", "id")[:limit]:
        try:
            with log_context(**row.log_fields):
                current_app.send_task(row.task, args=row.args, kwargs=row.kwargs, **row.options)
        except Exception as exc:  # noqa: BLE001
            UnsentTask.objects.filter(id=row.id).update(
                attempts=row.attempts + 1,
                last_tried_at=timezone.now(),
                last_error=f"{type(exc).__name__}: {exc}"[:500],
            )
            break
        UnsentTask.objects.filter(id=row.id).delete()
        sent += 1
    kept = UnsentTask.objects.count()
    if sent:
        logger.info("sent %s kept tasks; %s still waiting", sent, kept)
    return {"sent": sent, "kept": kept}


def collect() -> Iterable[Metric]:
    """Scrape-time gauges: tasks kept waiting for the broker, and the oldest one's age."""
    waiting = UnsentTask.objects.aggregate(n=Count("id"), oldest=Min("created_at"))
    gauge = GaugeMetricFamily(
        "portal_unsent_tasks", "Tasks the broker refused, kept until beat sends them again."
    )
    gauge.add_metric([], waiting["n"])
    yield gauge
    age = GaugeMetricFamily(
        "portal_unsent_task_oldest_seconds",
        "Age of the oldest task kept for the broker (0 when none waits).",
    )
    oldest = waiting["oldest"]
    age.add_metric([], (timezone.now() - oldest).total_seconds() if oldest else 0.0)
    yield age
