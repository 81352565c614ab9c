from django.contrib import admin

from detection.evidence.references import reference_index_activate
from detection.models import (
    DeadLetter,
    DetectionEvent,
    EnrichmentStep,
    KnownBadImage,
    Listing,
    ReferenceIndexVersion,
    Seller,
    ServiceToken,
)


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ("id", "received_at", "source", "event_id", "state", "replay_count")
    list_filter = ("state", "source")
    search_fields = ("event_id", "trace_id")
    readonly_fields = [f.name for f in DeadLetter._meta.fields]


@admin.register(DetectionEvent)
class DetectionEventAdmin(admin.ModelAdmin):
    list_display = ("event_id", "trace_id", "top_policy", "top_score", "received_at", "source")
    search_fields = ("event_id", "trace_id")


admin.site.register(Seller)
admin.site.register(Listing)


@admin.register(ServiceToken)
class ServiceTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "key_prefix", "created_at", "last_used_at", "revoked_at")
    exclude = ("key_hash",)


admin.site.register(EnrichmentStep)


@admin.register(KnownBadImage)
class KnownBadImageAdmin(admin.ModelAdmin):
    # Read only: the bank changes through imports and decisions, each audited and versioned.
    list_display = ("id", "source", "policy", "label", "decision_id", "created_at", "withdrawn_at")
    list_filter = ("source", "policy")
    search_fields = ("sha256", "bank_ref")
    readonly_fields = [f.name for f in KnownBadImage._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ReferenceIndexVersion)
class ReferenceIndexVersionAdmin(admin.ModelAdmin):
    list_display = (
        "version",
        "is_active",
        "size",
        "dim",
        "recall_at_10",
        "build_seconds",
        "model_version",
        "created_at",
    )
    readonly_fields = [f.name for f in ReferenceIndexVersion._meta.fields]
    actions = ["activate"]

    @admin.action(description="Activate this version (instant rollback or roll forward)")
    def activate(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Choose exactly one version.", level="error")
            return
        row = reference_index_activate(version=queryset.get(), actor=request.user)
        self.message_user(request, f"{row.version} is active.")
