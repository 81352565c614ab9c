import uuid

from django.db import models
from django.utils import timezone


class Seller(models.Model):
    external_id = models.CharField(max_length=128, unique=True)
    account_created_at = models.DateTimeField()
    prior_violations = models.PositiveIntegerField(default=0)
    country = models.CharField(max_length=2)
    first_seen_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.external_id


class Listing(models.Model):
    external_id = models.CharField(max_length=128, unique=True)
    seller = models.ForeignKey(Seller, on_delete=models.PROTECT, related_name="listings")
    title = models.CharField(max_length=1000)
    description = models.TextField(blank=True)
    price_amount = models.DecimalField(max_digits=14, decimal_places=2)
    price_currency = models.CharField(max_length=3)
    category = models.CharField(max_length=128)
    region = models.CharField(max_length=32)
    language = models.CharField(max_length=16)
    listed_at = models.DateTimeField()
    first_seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["seller", "-listed_at"])]

    def __str__(self) -> str:
        return self.external_id


class ListingImage(models.Model):
    class State(models.TextChoices):
        STORED = "stored", "stored"
        PENDING_FETCH = "pending_fetch", "waiting to be fetched"
        FETCH_FAILED = "fetch_failed", "fetch failed"

    listing = models.ForeignKey(Listing, on_delete=models.CASCADE, related_name="images")
    external_id = models.CharField(max_length=128)
    position = models.PositiveSmallIntegerField(default=0)
    source_url = models.URLField(max_length=2000, blank=True)
    sha256 = models.CharField(max_length=64, db_index=True)
    content = models.FileField(upload_to="images/", blank=True)
    content_type = models.CharField(max_length=32, blank=True)
    width = models.PositiveIntegerField(null=True)
    height = models.PositiveIntegerField(null=True)
    byte_size = models.PositiveIntegerField(null=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.STORED)
    error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["listing", "external_id"], name="uniq_image_per_listing")
        ]
        ordering = ["position", "id"]


class DetectionEvent(models.Model):
    """One flag from the detection tier. `event_id` is the idempotency key."""

    event_id = models.CharField(max_length=128, unique=True)
    trace_id = models.CharField(max_length=128, db_index=True)
    schema_version = models.PositiveSmallIntegerField(default=1)
    emitted_at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    listing = models.ForeignKey(Listing, on_delete=models.PROTECT, related_name="events")
    model_name = models.CharField(max_length=128)
    model_version = models.CharField(max_length=64)
    scores = models.JSONField()
    modality_scores = models.JSONField(default=dict)
    reason_codes = models.JSONField(default=list)
    is_sample = models.BooleanField(default=False)
    top_policy = models.CharField(max_length=32)
    top_score = models.FloatField()
    source = models.CharField(max_length=16)  # celery, api, replay
    # Which ingest call inserted the row: tells an accepted event from a concurrent duplicate.
    ingest_batch = models.UUIDField(default=uuid.uuid4, db_index=False)

    def __str__(self) -> str:
        return self.event_id


class DeadLetter(models.Model):
    """An event that was rejected at ingest, kept whole with the reasons, and replayable."""

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        REPLAYED = "replayed", "replayed (accepted or duplicate)"
        REJECTED_AGAIN = "rejected_again", "rejected again on replay"

    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    source = models.CharField(max_length=16)
    event_id = models.CharField(max_length=128, blank=True, db_index=True)
    trace_id = models.CharField(max_length=128, blank=True, db_index=True)
    payload = models.TextField()  # the event exactly as received (JSON text, or the raw body)
    reasons = models.JSONField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    replay_count = models.PositiveIntegerField(default=0)
    last_replayed_at = models.DateTimeField(null=True, blank=True)
    last_replay_result = models.JSONField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["state", "received_at"])]


class ServiceToken(models.Model):
    """A machine credential (the detection tier). Only a hash of the token is stored."""

    name = models.CharField(max_length=100, unique=True)
    user = models.OneToOneField("auth.User", on_delete=models.CASCADE, related_name="service_token")
    key_prefix = models.CharField(max_length=8, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
