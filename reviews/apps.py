from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    name = "reviews"
    verbose_name = "Reviews, routing and decisions"

    def ready(self) -> None:
        from moderation_portal.core.metrics import register_scrape_collector
        from reviews.cases import metrics as case_metrics
        from reviews.cases import receivers  # noqa: F401  (optional reactions to enrichment progress)
        from reviews.enforcement import metrics as enforcement_metrics
        from reviews.monitoring import metrics as drift_metrics

        register_scrape_collector("queues", case_metrics.collect)
        register_scrape_collector("enforcement", enforcement_metrics.collect)
        register_scrape_collector("drift", drift_metrics.drift_collect)
