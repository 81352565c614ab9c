"""The enforcement outbox: what the marketplace must do because of a decision.

A row is written in the same transaction as its decision. Delivery to the marketplace is not
built yet (the enforcement issue builds it here); until then rows wait in the outbox.
"""

from django.db import models
from django.utils import timezone


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
