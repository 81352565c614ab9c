from django.contrib import admin

from moderation_portal.core.models import AuditEvent, UnsentTask


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "actor_label", "action", "object_type", "object_id", "trace_id")
    search_fields = ("trace_id", "object_id")

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(UnsentTask)
class UnsentTaskAdmin(admin.ModelAdmin):
    """Tasks the broker refused; beat sends them when it is back (moderation_portal.core.unsent)."""

    list_display = ("created_at", "task", "args", "attempts", "last_tried_at", "last_error")
    search_fields = ("task",)
    readonly_fields = [f.name for f in UnsentTask._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
