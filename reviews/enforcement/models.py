"""The enforcement outbox and its delivery to the marketplace, and statements of reasons.

An `Enforcement` row is written in the same transaction as its decision, with the
`OutboxMessage` that carries it to the marketplace's webhook (Standard Webhooks, signed).
Delivery state lives here in PostgreSQL, not in a worker's memory: a message survives restarts,
outages of the receiver for days, and killed workers, and keeps its `webhook_id` across every
attempt. Messages for one listing or one seller are delivered in the order they were written.
"""

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from moderation_portal.core.models import AppendOnlyModel


class EnforcementAction(models.TextChoices):
    REMOVE_LISTING = "remove_listing", "remove the listing"
    WARN_SELLER = "warn_seller", "warn the seller"
    SUSPEND_SELLER = "suspend_seller", "suspend the seller's account"
    RESTORE_LISTING = "restore_listing", "restore the listing"
    WITHDRAW_WARNING = "withdraw_warning", "withdraw the warning"
    LIFT_SUSPENSION = "lift_suspension", "lift the suspension"


class Enforcement(models.Model):
    decision = models.ForeignKey(
        "reviews.Decision", on_delete=models.PROTECT, related_name="enforcements"
    )
    listing = models.ForeignKey(
        "detection.Listing", on_delete=models.PROTECT, related_name="enforcements"
    )
    action = models.CharField(max_length=24, choices=EnforcementAction.choices)
    reverses = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="reversals"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)


def new_webhook_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


class OutboxMessage(models.Model):
    """One webhook to the marketplace, and where its delivery stands."""

    class Type(models.TextChoices):
        ENFORCEMENT_ACTION = "enforcement.action", "enforcement action"
        APPEAL_RESOLVED = "appeal.resolved", "appeal resolved"

    class State(models.TextChoices):
        PENDING = "pending", "waiting to be sent"
        SENDING = "sending", "being sent"
        RETRYING = "retrying", "retrying after a failed attempt"
        DELIVERED = "delivered", "delivered"
        FAILED = "failed", "failed after the last attempt"

    webhook_id = models.CharField(max_length=64, unique=True, default=new_webhook_id)
    type = models.CharField(max_length=32, choices=Type.choices)
    enforcement = models.OneToOneField(
        Enforcement, null=True, blank=True, on_delete=models.PROTECT, related_name="message"
    )
    appeal = models.OneToOneField(
        "reviews.Appeal",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="resolution_message",
    )  # appeal.resolved
    # Ordering keys: a message waits for every earlier undelivered message of its listing or seller.
    listing = models.ForeignKey("detection.Listing", on_delete=models.PROTECT, related_name="+")
    seller = models.ForeignKey("detection.Seller", on_delete=models.PROTECT, related_name="+")
    trace_id = models.CharField(max_length=128, blank=True)
    body = models.JSONField(
        null=True, blank=True
    )  # fixed at the first attempt, identical on every retry
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(
        null=True, blank=True
    )  # a sending worker's claim; stale ones are taken again
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    first_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at", "id"],
                condition=Q(state__in=["pending", "retrying"]),
                name="outbox_due",
            ),
            models.Index(
                fields=["id"], condition=Q(state__in=["pending", "retrying"]), name="outbox_open_id"
            ),
            models.Index(
                fields=["lease_until"], condition=Q(state="sending"), name="outbox_sending"
            ),
            models.Index(
                fields=["listing", "id"],
                condition=~Q(state="delivered"),
                name="outbox_open_listing",
            ),
            models.Index(
                fields=["seller", "id"], condition=~Q(state="delivered"), name="outbox_open_seller"
            ),
            models.Index(fields=["state", "created_at"], name="outbox_state"),
        ]


class DeliveryAttempt(AppendOnlyModel):
    """One try at delivering a message: what the receiver said, or why it could not be reached."""

    message = models.ForeignKey(
        OutboxMessage, on_delete=models.PROTECT, related_name="delivery_attempts"
    )
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    outcome = models.CharField(max_length=16)  # delivered, retry, failed, disabled

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "number"], name="one_attempt_per_number")
        ]


class WebhookEndpoint(models.Model):
    """The receiver's standing: a 410 Gone disables it until an operator enables it again."""

    url = models.CharField(max_length=500, unique=True)
    enabled = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)


class StatementOfReasons(models.Model):
    """The statement of reasons (DSA Art. 17) of one restricting decision, in the EU DSA
    Transparency Database's field names and values (`statement`), and where its submission to
    the Transparency Database stands. Written with the decision, from the decision: never from
    the seller's text."""

    class State(models.TextChoices):
        PENDING = "pending", "waiting to be submitted"
        SUBMITTING = "submitting", "being submitted"
        RETRYING = "retrying", "retrying after a failed attempt"
        SUBMITTED = "submitted", "filed with the Transparency Database"
        REJECTED = "rejected", "rejected by the Transparency Database"
        FAILED = "failed", "failed after the last attempt"

    decision = models.OneToOneField(
        "reviews.Decision", on_delete=models.PROTECT, related_name="statement_of_reasons"
    )
    puid = models.CharField(max_length=500, unique=True)
    statement = models.JSONField()
    ladder_version = models.ForeignKey(
        "reviews.LadderVersion", on_delete=models.PROTECT, related_name="+"
    )  # whose statement mapping wrote it
    created_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    errors = models.JSONField(default=dict, blank=True)  # field -> messages, from a 422
    tdb_uuid = models.CharField(max_length=64, blank=True)
    already_filed = models.BooleanField(default=False)  # the database had our puid already
    submitted_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_attempt_at", "id"],
                condition=Q(state__in=["pending", "retrying", "submitting"]),
                name="statement_due",
            ),
            models.Index(fields=["state", "created_at"], name="statement_state"),
        ]
