from django.apps import AppConfig


class DetectionConfig(AppConfig):
    name = "detection"
    verbose_name = "Detection and ingest"

    def ready(self) -> None:
        from detection.intake import metrics
        from moderation_portal.core.metrics import register_scrape_collector

        register_scrape_collector("dead_letters", metrics.collect)
