from django.contrib import admin

from reviews.appeals.models import Appeal, RefusedAppeal
from reviews.cases.models import Case, Queue
from reviews.enforcement.models import (
    DeliveryAttempt,
    OutboxMessage,
    StatementOfReasons,
    WebhookEndpoint,
)
from reviews.policies.models import LadderVersion, Policy


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


admin.site.register(LadderVersion)


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "type",
        "state",
        "attempts",
        "last_status",
        "next_attempt_at",
        "delivered_at",
    )
    list_filter = ("state", "type")
    search_fields = ("webhook_id", "trace_id")
    readonly_fields = [f.name for f in OutboxMessage._meta.fields]


@admin.register(DeliveryAttempt)
class DeliveryAttemptAdmin(admin.ModelAdmin):
    list_display = ("message", "number", "started_at", "status_code", "outcome", "duration_ms")
    list_filter = ("outcome",)
    readonly_fields = [f.name for f in DeliveryAttempt._meta.fields]

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


admin.site.register(WebhookEndpoint)


@admin.register(StatementOfReasons)
class StatementOfReasonsAdmin(admin.ModelAdmin):
    list_display = ("puid", "decision", "state", "attempts", "last_status", "submitted_at")
    list_filter = ("state", "already_filed")
    search_fields = ("puid", "tdb_uuid")
    readonly_fields = [f.name for f in StatementOfReasons._meta.fields]

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Appeal)
class AppealAdmin(admin.ModelAdmin):
    list_display = ("appeal_id", "enforcement", "state", "outcome", "received_at", "sla_due_at")
    list_filter = ("state", "outcome")
    search_fields = ("appeal_id",)
    readonly_fields = [f.name for f in Appeal._meta.fields]


@admin.register(RefusedAppeal)
class RefusedAppealAdmin(admin.ModelAdmin):
    list_display = ("received_at", "code", "appeal_id", "enforcement_ref", "message")
    list_filter = ("code",)
    search_fields = ("appeal_id", "enforcement_ref")
    readonly_fields = [f.name for f in RefusedAppeal._meta.fields]
