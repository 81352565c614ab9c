import os

from celery import Celery
from celery.signals import before_task_publish, task_postrun, task_prerun

from moderation_portal.core.tracing import current_trace_id

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "moderation_portal.settings")

app = Celery("moderation_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@before_task_publish.connect
def _carry_trace_id(headers=None, **_kwargs):
    # Tasks published while working on a listing carry its trace id in their headers.
    if headers is not None and "trace_id" not in headers:
        headers["trace_id"] = current_trace_id.get()


_tokens: dict[str, object] = {}


@task_prerun.connect
def _enter_trace(task_id=None, task=None, **_kwargs):
    trace_id = getattr(task.request, "trace_id", None) if task is not None else None
    if trace_id and task_id:
        _tokens[task_id] = current_trace_id.set(trace_id)


@task_postrun.connect
def _leave_trace(task_id=None, **_kwargs):
    token = _tokens.pop(task_id, None)
    if token is not None:
        current_trace_id.reset(token)
