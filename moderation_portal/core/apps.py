from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "moderation_portal.core"
    label = "core"
    verbose_name = "Audit log and shared kernel"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from moderation_portal.core import unsent
        from moderation_portal.core.metrics import register_scrape_collector

        register_scrape_collector("unsent_tasks", unsent.collect)
