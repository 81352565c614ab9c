"""Celery task metrics from Celery's signals: tasks finished by state, their runtime and how long
they waited in the queue (`portal_celery_*` in moderation_portal.core.metrics).

The publisher stamps each message with when it became due (`portal_due_at`: now, or its eta
for a countdown), so the worker that starts it knows the wait across processes and hosts
(wall clocks, kept in sync by NTP). The `task` label is the registered task name; a message
for a task no worker knows counts as `unknown`, since its name is whatever the sender wrote.

This module is imported by moderation_portal.celery before the settings are loaded, so it
imports the families (and so prometheus_client) only when a signal fires: the settings must
choose the multiprocess store first.
"""

import time
from datetime import datetime

from celery.signals import (
    before_task_publish,
    task_failure,
    task_postrun,
    task_prerun,
    task_rejected,
    task_retry,
)

DUE_HEADER = "portal_due_at"
UNKNOWN_TASK = "unknown"

_started: dict[str, float] = {}


def _metrics():
    from moderation_portal.core import metrics

    return metrics if metrics.ENABLED else None


def _due_at(headers: dict) -> float:
    eta = headers.get("eta")
    if eta:
        try:
            return max(time.time(), datetime.fromisoformat(str(eta)).timestamp())
        except ValueError:
            pass
    return time.time()


@before_task_publish.connect
def _stamp_due_time(headers=None, **_kwargs):
    if headers is not None:
        headers[DUE_HEADER] = _due_at(headers)


@task_prerun.connect
def _task_started(task_id=None, task=None, **_kwargs):
    metrics = _metrics()
    if metrics is None or task is None:
        return
    if task_id:
        _started[task_id] = time.monotonic()
    due_at = getattr(task.request, DUE_HEADER, None)
    if isinstance(due_at, int | float):
        metrics.CELERY_QUEUE_WAIT.labels(task.name).observe(max(0.0, time.time() - due_at))


@task_postrun.connect
def _task_finished(task_id=None, task=None, state=None, **_kwargs):
    started = _started.pop(task_id, None) if task_id else None
    metrics = _metrics()
    if metrics is None or task is None:
        return
    if started is not None:
        metrics.CELERY_RUNTIME.labels(task.name).observe(time.monotonic() - started)
    # Failures and retries are counted by their own signals, which also fire where no task
    # ran to its end (a hard time limit, a lost worker process).
    if state == "SUCCESS":
        metrics.CELERY_TASKS.labels(task.name, "success").inc()


@task_failure.connect
def _task_failed(sender=None, **_kwargs):
    metrics = _metrics()
    if metrics is not None:
        metrics.CELERY_TASKS.labels(getattr(sender, "name", UNKNOWN_TASK), "failure").inc()


@task_retry.connect
def _task_retried(sender=None, **_kwargs):
    metrics = _metrics()
    if metrics is not None:
        metrics.CELERY_TASKS.labels(getattr(sender, "name", UNKNOWN_TASK), "retry").inc()


@task_rejected.connect
def _task_rejected(sender=None, message=None, **_kwargs):
    metrics = _metrics()
    if metrics is None:
        return
    name = (getattr(message, "headers", None) or {}).get("task")
    app = getattr(sender, "app", None)
    known = app is not None and isinstance(name, str) and name in app.tasks
    metrics.CELERY_TASKS.labels(name if known else UNKNOWN_TASK, "rejected").inc()
