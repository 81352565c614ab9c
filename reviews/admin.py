from django.contrib import admin

from reviews.cases.models import Case, Queue
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
