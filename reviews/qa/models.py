"""QA spot-checks: sampled decisions and the reviews of them."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from moderation_portal.core.models import AppendOnlyModel


class QaSample(models.Model):
    """A decision picked for a QA lead to spot-check, and why it was picked."""

    class Reason(models.TextChoices):
        AUTOMATIC = "automatic", "automatic decision"
        LLM_VERIFIED = "llm_verified", "LLM-verified decision"
        HUMAN = "human", "random share of human decisions"

    class State(models.TextChoices):
        PENDING = "pending", "waiting"
        CLAIMED = "claimed", "claimed"
        REVIEWED = "reviewed", "reviewed"

    decision = models.OneToOneField(
        "reviews.Decision", on_delete=models.PROTECT, related_name="qa_sample"
    )
    case = models.ForeignKey("reviews.Case", on_delete=models.PROTECT, related_name="qa_samples")
    policy = models.CharField(max_length=32)
    reason = models.CharField(max_length=16, choices=Reason.choices)
    band = models.CharField(
        max_length=16
    )  # confidence band of the detection score, e.g. "0.95-0.97"
    disagreement = models.BooleanField(default=False)  # the LLM and the detection score disagreed
    weight = models.FloatField(
        default=1.0
    )  # inverse sampling probability, for estimates over all decisions
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["state", "-disagreement", "created_at"], name="qa_pending")]


class QaReview(AppendOnlyModel):
    class Outcome(models.TextChoices):
        AGREE = "agree", "agree"
        CORRECT = "correct", "correct"

    sample = models.OneToOneField(QaSample, on_delete=models.PROTECT, related_name="review")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    verdict = models.CharField(max_length=16)  # what the QA lead judges right
    policy = models.CharField(max_length=32, blank=True)
    action = models.CharField(max_length=16)
    notes = models.TextField(blank=True)
    correction = models.ForeignKey(
        "reviews.Decision", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
