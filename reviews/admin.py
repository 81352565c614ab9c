from django.contrib import admin

from detection.models import ReferenceIndexVersion
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


@admin.register(ReferenceIndexVersion)
class ReferenceIndexVersionAdmin(admin.ModelAdmin):
    list_display = ("version", "is_active", "size", "dim", "recall_at_10", "build_seconds", "model_version", "created_at")
    readonly_fields = [f.name for f in ReferenceIndexVersion._meta.fields]
    actions = ["activate"]

    @admin.action(description="Activate this version (instant rollback or roll forward)")
    def activate(self, request, queryset):
        from detection.references import reference_index_activate
        from reviews.services import audit_record

        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one version.", level="error")
            return
        row = queryset.get()
        previous = ReferenceIndexVersion.objects.filter(is_active=True).first()
        reference_index_activate(version=row)
        audit_record(action="reference_index_activated", obj=row, actor=request.user,
                     data={"version": row.version, "previous": previous.version if previous else None})
        self.message_user(request, f"{row.version} is active.")
