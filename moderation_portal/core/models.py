from django.conf import settings
from django.db import models
from django.utils import timezone


class AppendOnlyError(RuntimeError):
    pass


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only")

    def delete(self):
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only")


class AppendOnlyModel(models.Model):
    """Facts that are written once. On PostgreSQL the database refuses changes too: every
    concrete subclass is listed in `moderation_portal.core.append_only.APPEND_ONLY_MODELS`,
    whose triggers the migrations install (a test checks the list is complete)."""

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if self.pk is not None and not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} rows are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError(f"{type(self).__name__} rows are append-only")


class AuditEvent(AppendOnlyModel):
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT
    )
    actor_label = models.CharField(max_length=150)
    action = models.CharField(max_length=64)  # an AuditAction value
    object_type = models.CharField(max_length=32)
    object_id = models.CharField(max_length=64)
    trace_id = models.CharField(max_length=128, blank=True, db_index=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object")]
        ordering = ["created_at", "id"]


class UnsentTask(models.Model):
    """A Celery task the broker refused when it was sent (Redis down or restarting), kept so that
    `unsent_tasks_send` sends it once the broker is back: the follow-up work of a stored flag or
    decision is never lost to a broker outage. The admin lists them."""

    task = models.CharField(max_length=200)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    options = models.JSONField(default=dict)  # apply_async options (queue, countdown)
    log_fields = models.JSONField(default=dict)  # the sender's log context, restored on sending
    attempts = models.PositiveIntegerField(default=1)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_tried_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["created_at"], name="unsent_task_created")]

    def __str__(self) -> str:
        return f"{self.task}{self.args}"
