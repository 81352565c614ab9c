from django.apps import AppConfig


class ReviewsConfig(AppConfig):
    name = "reviews"
    verbose_name = "Reviews, routing and decisions"

    def ready(self) -> None:
        from reviews import receivers  # noqa: F401  (connects to detection's signals)
