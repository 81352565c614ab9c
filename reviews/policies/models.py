"""Policies and the versioned enforcement ladder that routes flags (rules in ladder.py)."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from detection.policies import POLICY_CODES


class Policy(models.Model):
    code = models.CharField(max_length=32, unique=True, choices=[(c, c) for c in POLICY_CODES])
    name = models.CharField(max_length=100)
    severity = models.PositiveSmallIntegerField(help_text="1 (low) to 5 (highest harm)")
    sla_hours = models.PositiveIntegerField(help_text="time from flag to human decision")
    guideline = models.TextField(blank=True)

    class Meta:
        ordering = ["-severity", "code"]
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return self.code


class LadderVersion(models.Model):
    """The enforcement ladder (rules in reviews/policies/ladder.py). A draft is edited; publishing
    gives it the next version number, after which it never changes. One published version is
    active."""

    class State(models.TextChoices):
        DRAFT = "draft", "draft"
        PUBLISHED = "published", "published"

    version = models.PositiveIntegerField(unique=True, null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.DRAFT)
    thresholds = models.JSONField()
    # policy code -> Transparency Database category, keywords and ground (policies/statements.py)
    statement_mapping = models.JSONField(default=dict)
    # policy code -> strike weight, window and steps, and the known-bad rule (policies/repeat.py)
    repeat_rules = models.JSONField(default=dict)
    notes = models.TextField(blank=True)
    based_on = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    published_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=Q(is_active=True), name="one_active_ladder"
            ),
            models.UniqueConstraint(
                fields=["state"], condition=Q(state="draft"), name="one_ladder_draft"
            ),
            models.CheckConstraint(
                condition=Q(state="draft", version__isnull=True)
                | Q(state="published", version__isnull=False),
                name="published_ladders_have_a_version",
            ),
        ]
        ordering = ["-version"]

    def __str__(self) -> str:
        return f"ladder v{self.version}" if self.version else "ladder draft"
