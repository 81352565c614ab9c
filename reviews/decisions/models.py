"""Decisions: append-only facts, whoever or whatever made them."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from moderation_portal.core.models import AppendOnlyModel


class Decision(AppendOnlyModel):
    class Verdict(models.TextChoices):
        VIOLATION = "violation", "violation"
        NO_VIOLATION = "no_violation", "no violation"

    class Action(models.TextChoices):
        REMOVE = "remove", "remove listing"
        WARN = "warn", "warn seller"
        SUSPEND = "suspend", "suspend seller account"
        NONE = "none", "no action"

    class Source(models.TextChoices):
        HUMAN = "human", "moderator"
        AUTOMATIC = "automatic", "automatic (policy ladder)"
        LLM_VERIFIED = "llm_verified", "LLM-verified"
        QA_CORRECTION = "qa_correction", "QA correction"
        APPEAL = "appeal", "appeal"

    case = models.ForeignKey("reviews.Case", on_delete=models.PROTECT, related_name="decisions")
    verdict = models.CharField(max_length=16, choices=Verdict.choices)
    policy = models.ForeignKey(
        "reviews.Policy", to_field="code", null=True, blank=True, on_delete=models.PROTECT
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    notes = models.TextField(blank=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT
    )
    ladder_version = models.ForeignKey("reviews.LadderVersion", on_delete=models.PROTECT)
    time_on_case_ms = models.PositiveIntegerField(null=True, blank=True)
    supersedes = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT)
    llm_verdict = models.ForeignKey(
        "llm_verify.LlmVerdict", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    trace_id = models.CharField(max_length=128)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]
