"""The labeling queue: the daily draw (active_learning.labeling.sampling) and its items."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class LabelingDraw(models.Model):
    """One day's draw. Unique per day: drawing again the same day adds nothing."""

    day = models.DateField(unique=True)
    budget = models.PositiveIntegerField()
    shares = models.JSONField()  # strategy -> share of the budget, as configured
    counts = models.JSONField(default=dict)  # strategy -> items drawn
    pool_size = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)


class LabelingItem(models.Model):
    """A listing chosen for a label-only judgement (no enforcement)."""

    class State(models.TextChoices):
        PENDING = "pending", "waiting"
        CLAIMED = "claimed", "claimed"
        ANSWERED = "answered", "answered"

    class Answer(models.TextChoices):
        VIOLATION = "violation", "violation"
        NO_VIOLATION = "no_violation", "no violation"
        UNSURE = "unsure", "unsure (no label)"

    draw = models.ForeignKey(LabelingDraw, on_delete=models.PROTECT, related_name="items")
    case = models.ForeignKey("reviews.Case", on_delete=models.PROTECT, related_name="+")
    policy = models.CharField(max_length=32)  # the policy the label is asked for
    score = models.FloatField()
    threshold = models.FloatField()  # the policy's decision threshold the uncertainty is about
    strategy = models.CharField(max_length=32)
    inclusion_probability = models.FloatField()
    rank = models.PositiveIntegerField()  # order in the queue
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    answer = models.CharField(max_length=16, choices=Answer.choices, blank=True)
    answered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    answered_at = models.DateTimeField(null=True, blank=True)
    time_on_item_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["draw", "case", "policy"], name="one_item_per_draw")
        ]
        indexes = [models.Index(fields=["state", "rank"], name="labeling_waiting")]
