from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "moderation_portal.core"
    label = "core"
    verbose_name = "Audit log and shared kernel"
    default_auto_field = "django.db.models.BigAutoField"
