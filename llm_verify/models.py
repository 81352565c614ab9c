from django.db import models
from django.utils import timezone


class LlmVerdict(models.Model):
    """One verification of a flag by the LLM, kept whole: what was asked, what came back, what it
    cost.
    """

    class Status(models.TextChoices):
        OK = "ok", "verdict"
        SCHEMA_FAILED = (
            "schema_failed",
            "answer failed the schema or cited things that do not exist",
        )
        UNAVAILABLE = "unavailable", "LLM unavailable"
        ERROR = "error", "error"

    event = models.ForeignKey(
        "detection.DetectionEvent", on_delete=models.CASCADE, related_name="llm_verdicts"
    )
    status = models.CharField(max_length=16, choices=Status.choices)
    decision = models.CharField(max_length=16, blank=True)  # violation, no_violation, uncertain
    policy = models.CharField(max_length=32, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    rationale = models.TextField(blank=True)
    evidence = models.JSONField(default=list, blank=True)
    recommended_action = models.CharField(max_length=16, blank=True)
    model = models.CharField(max_length=200)
    prompt_version = models.CharField(max_length=64)
    latency_ms = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    estimated_cost = models.FloatField(default=0.0)
    raw_response = models.TextField(blank=True)
    error = models.TextField(blank=True)
    problems = models.JSONField(default=list, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    context = models.JSONField(default=dict)  # what the verdict could rest on, as sent
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["event", "-created_at"], name="verdict_event")]
