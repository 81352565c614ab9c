from django.apps import AppConfig


class LlmVerifyConfig(AppConfig):
    name = "llm_verify"
    verbose_name = "LLM verification"

    def ready(self) -> None:
        from llm_verify import metrics
        from moderation_portal.core.metrics import register_scrape_collector

        register_scrape_collector("llm_breaker", metrics.collect)
