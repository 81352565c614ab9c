from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    name = "reviews"
    verbose_name = "Reviews, routing and decisions"

    def ready(self) -> None:
        from reviews.cases import receivers  # noqa: F401  (optional reactions to enrichment progress)
