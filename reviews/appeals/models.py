"""Seller appeals (DSA Art. 20): one per appealed enforcement action, worked by appeals staff
under the portal's lease, decided by a person other than the one who made the appealed decision.
Appeals the intake refuses are kept, with their reasons, like dead letters."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from moderation_portal.core.models import AppendOnlyModel


class Appeal(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "waiting for an appeals reviewer"
        CLAIMED = "claimed", "being reviewed"
        DECIDED = "decided", "decided"

    class Outcome(models.TextChoices):
        UPHOLD = "uphold", "upheld"
        OVERTURN = "overturn", "overturned"

    appeal_id = models.CharField(max_length=128, unique=True)  # the marketplace's idempotency key
    enforcement = models.OneToOneField(
        "reviews.Enforcement", on_delete=models.PROTECT, related_name="appeal"
    )
    decision = models.ForeignKey(
        "reviews.Decision", on_delete=models.PROTECT, related_name="appeals"
    )  # the appealed decision
    case = models.ForeignKey("reviews.Case", on_delete=models.PROTECT, related_name="appeals")
    seller = models.ForeignKey("detection.Seller", on_delete=models.PROTECT, related_name="+")
    statement = models.TextField()  # the seller's words: adversarial, shown escaped, never obeyed
    submitted_at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    # Priority: the appealed action's severity (suspension first), the SLA, the seller's reach.
    severity = models.PositiveSmallIntegerField()
    sla_due_at = models.DateTimeField()
    seller_reach = models.PositiveIntegerField(default=0)  # the seller's listings we know
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, blank=True)
    notes = models.TextField(blank=True)  # the reasoned answer sent to the seller
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    overturn_decision = models.OneToOneField(
        "reviews.Decision",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="overturned_appeal",
    )
    trace_id = models.CharField(max_length=128, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["-severity", "sla_due_at", "-seller_reach", "id"],
                condition=Q(state="pending"),
                name="appeal_queue",
            ),
        ]


class RefusedAppeal(models.Model):
    """An appeal the intake refused: what arrived, why, and when; kept for operators."""

    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    code = models.CharField(max_length=32)
    message = models.CharField(max_length=500)
    appeal_id = models.CharField(max_length=128, blank=True)
    enforcement_ref = models.CharField(max_length=64, blank=True)
    payload = models.TextField()  # the request body as JSON text, storable
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )


class Strike(AppendOnlyModel):
    """One strike against a seller (DSA Art. 23): a restriction a decision enforced. The ledger
    is append-only; counts are derived from it server-side, and a withdrawal is a row of its
    own (`StrikeWithdrawal`), never an edit."""

    seller = models.ForeignKey("detection.Seller", on_delete=models.PROTECT, related_name="+")
    decision = models.OneToOneField(
        "reviews.Decision", on_delete=models.PROTECT, related_name="strike"
    )
    policy = models.CharField(max_length=32)
    weight = models.PositiveSmallIntegerField(default=1)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["seller", "expires_at"], name="strike_seller_active")]


class StrikeWithdrawal(AppendOnlyModel):
    """A strike taken back: its decision was overturned on appeal or corrected by QA."""

    strike = models.OneToOneField(Strike, on_delete=models.PROTECT, related_name="withdrawal")
    decision = models.ForeignKey(
        "reviews.Decision", on_delete=models.PROTECT, related_name="+"
    )  # the decision that superseded the strike's
    created_at = models.DateTimeField(default=timezone.now)


class SuspensionProposal(models.Model):
    """The strike steps proposed suspending a seller (reviews/policies/repeat.py): the case whose
    strike crossed the step waits in the escalation queue until a person decides. Nothing is
    sent to the marketplace until then; a suspension also needs a warning delivered before."""

    class State(models.TextChoices):
        OPEN = "open", "waiting for a person"
        SUSPENDED = "suspended", "a person suspended the seller"
        DECLINED = "declined", "a person decided against suspension"

    seller = models.ForeignKey("detection.Seller", on_delete=models.PROTECT, related_name="+")
    case = models.ForeignKey("reviews.Case", on_delete=models.PROTECT, related_name="+")
    decision = models.ForeignKey(
        "reviews.Decision", on_delete=models.PROTECT, related_name="+"
    )  # the decision whose strike crossed the step
    reason = models.CharField(max_length=300)
    active_weight = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.OPEN)
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by_decision = models.ForeignKey(
        "reviews.Decision", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["seller"], condition=Q(state="open"), name="one_open_suspension_proposal"
            )
        ]
        ordering = ["-created_at"]
