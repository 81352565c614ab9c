from django.apps import AppConfig


class ActiveLearningConfig(AppConfig):
    name = "active_learning"
    verbose_name = "Active learning and label export"

    def ready(self) -> None:
        from active_learning.labels import receivers  # noqa: F401  (judgements become labels)
