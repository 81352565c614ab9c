from django.apps import AppConfig


class LlmVerifyConfig(AppConfig):
    name = "llm_verify"
    verbose_name = "LLM verification"
