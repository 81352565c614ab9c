from django.contrib import admin

from reviews.models import AuditEvent, Case, LadderVersion, Policy, Queue


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "severity", "sla_hours")


@admin.register(Queue)
class QueueAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "kind", "position")


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    list_display = ("id", "policy", "score", "route", "state", "created_at")
    list_filter = ("state", "route", "policy")
    search_fields = ("trace_id",)
    readonly_fields = [f.name for f in Case._meta.fields]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "actor_label", "action", "object_type", "object_id", "trace_id")
    search_fields = ("trace_id", "object_id")

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


admin.site.register(LadderVersion)
