"""The log context (moderation_portal.core.tracing) travels with the tasks sent under it: a task
sent while working on a case logs that case's trace id in the worker, whether or not the task
sets it itself. Connected by importing this module (moderation_portal.celery).

Eager tasks (CELERY_EAGER) run in the sender's own context and need nothing carried.
"""

from typing import Any

from celery.signals import before_task_publish, celeryd_after_setup, task_postrun, task_prerun

from moderation_portal.core.tracing import (
    FIELDS,
    Tokens,
    context_current,
    context_enter,
    context_leave,
)

HEADER = "log_context"
LEGACY_HEADER = "trace_id"  # what messages sent before the other fields existed carry

_entered: dict[str, Tokens] = {}


@before_task_publish.connect(dispatch_uid="portal-log-context-publish")
def _carry(headers: dict[str, Any] | None = None, **_kwargs: Any) -> None:
    if headers is None or HEADER in headers:
        return
    fields = context_current()
    if fields:
        headers[HEADER] = fields


def _carried(request: Any) -> dict[str, object]:
    fields = getattr(request, HEADER, None)
    if isinstance(fields, dict):
        return {k: v for k, v in fields.items() if k in FIELDS and isinstance(v, str | int)}
    trace_id = getattr(request, LEGACY_HEADER, None)
    return {"trace_id": trace_id} if isinstance(trace_id, str) and trace_id else {}


@task_prerun.connect(dispatch_uid="portal-log-context-prerun")
def _enter(task_id: str | None = None, task: Any = None, **_kwargs: Any) -> None:
    if task is None or not task_id:
        return
    fields = _carried(task.request)
    if fields:
        _entered[task_id] = context_enter(fields)


@task_postrun.connect(dispatch_uid="portal-log-context-postrun")
def _leave(task_id: str | None = None, **_kwargs: Any) -> None:
    tokens = _entered.pop(task_id or "", None)
    if tokens is not None:
        context_leave(tokens)


@celeryd_after_setup.connect(dispatch_uid="portal-log-context-banner")
def _no_banner_in_json(instance: Any = None, **_kwargs: Any) -> None:
    # The worker's start-up banner is printed, not logged: with LOG_FORMAT=json it would be the
    # only output that is not one JSON object per line. Where it connected and that it is
    # ready are still logged.
    from django.conf import settings

    if instance is not None and settings.LOG_FORMAT == "json":
        instance.quiet = True
