from django.contrib import admin

from detection.models import DeadLetter, DetectionEvent, Listing, Seller, ServiceToken


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



from detection.models import EnrichmentStep, KnownBadImage  # noqa: E402

admin.site.register(EnrichmentStep)
admin.site.register(KnownBadImage)
