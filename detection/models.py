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
            models.UniqueConstraint(
                fields=["listing", "external_id"], name="uniq_image_per_listing"
            )
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

    class Meta:
        indexes = [
            # Time ranges by when the model scored: the drift check's and the dashboard's windows
            # (which also filter is_sample=False on the rows found), the models page's window.
            models.Index(fields=["emitted_at"], name="event_emitted_at"),
        ]

    def __str__(self) -> str:
        return self.event_id


class ShadowScore(models.Model):
    """A challenger model's score of a flagged listing, sent beside the champion's in the event
    (`detection.challengers`). Stored with the event for comparison; never routes anything."""

    event = models.ForeignKey(
        DetectionEvent, on_delete=models.CASCADE, related_name="shadow_scores"
    )
    model_version = models.CharField(max_length=64)
    policy = models.CharField(max_length=32)
    score = models.FloatField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["event", "model_version", "policy"], name="one_shadow_score_per_policy"
            )
        ]
        indexes = [models.Index(fields=["model_version", "policy"], name="shadow_version_policy")]

    def __str__(self) -> str:
        return f"{self.model_version} {self.policy} {self.score:.3f}"


class DeadLetter(models.Model):
    """An event that was rejected at ingest, kept whole with the reasons, and replayable."""

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        REPLAYED = "replayed", "replayed (accepted or duplicate)"
        REJECTED_AGAIN = "rejected_again", "rejected again on replay"

    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    source = models.CharField(max_length=16)

    class PayloadEncoding(models.TextChoices):
        # What arrived may hold what PostgreSQL cannot store (NUL, lone surrogates, bytes that are
        # not UTF-8), so the payload is kept in a form that can, and read back exactly on replay.
        TEXT = "text", "the text as received"
        JSON = "json", "JSON text of what was received"
        BASE64 = "base64", "base64 of received bytes that are not storable text"

    event_id = models.CharField(max_length=128, blank=True, db_index=True)
    trace_id = models.CharField(max_length=128, blank=True, db_index=True)
    payload = models.TextField()  # what arrived, in the form `payload_encoding` names
    # The default reads rows kept before the field existed: their payload is the received text.
    payload_encoding = models.CharField(
        max_length=8, choices=PayloadEncoding.choices, default=PayloadEncoding.TEXT
    )
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


# --- enrichment ------------------------------------------------------------------------------


class EnrichmentStep(models.Model):
    """One independent enrichment step of a flag; the review page shows its state and reason."""

    class Name(models.TextChoices):
        HEATMAPS = "heatmaps", "Grad-CAM heatmaps"
        NEIGHBOURS = "neighbours", "similar known violations"
        HASHES = "hashes", "perceptual-hash matches"

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        RUNNING = "running", "running"
        DONE = "done", "done"
        FAILED = "failed", "failed"
        SKIPPED = "skipped", "not available"

    event = models.ForeignKey(
        DetectionEvent, on_delete=models.CASCADE, related_name="enrichment_steps"
    )
    name = models.CharField(max_length=16, choices=Name.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    detail = models.CharField(max_length=500, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["event", "name"], name="one_step_per_event")]


class ImageEmbedding(models.Model):
    image = models.ForeignKey(ListingImage, on_delete=models.CASCADE, related_name="embeddings")
    model_version = models.CharField(max_length=128)
    source = models.CharField(max_length=16)  # local or triton
    vector = models.BinaryField()  # float32, L2-normalised
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["image", "model_version"], name="one_embedding_per_model"
            )
        ]


class Heatmap(models.Model):
    image = models.ForeignKey(ListingImage, on_delete=models.CASCADE, related_name="heatmaps")
    event = models.ForeignKey(DetectionEvent, on_delete=models.CASCADE, related_name="heatmaps")
    policy = models.CharField(max_length=32)
    model_version = models.CharField(max_length=128)
    model_label = models.CharField(max_length=300)
    overlay = models.FileField(upload_to="heatmaps/")
    raw = models.FileField(
        upload_to="heatmaps/"
    )  # the map itself, float32 .npy over the model's view
    probability = models.FloatField()
    peak_x = models.FloatField()
    peak_y = models.FloatField()
    empty = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["image", "event", "policy", "model_version"],
                name="one_heatmap_per_image_policy",
            )
        ]


class ReferenceItem(models.Model):
    """A known violation to compare new flags with: from a confirmed
    decision, or an imported bank.
    """

    class Source(models.TextChoices):
        DECISION = "decision", "confirmed decision"
        IMPORT = "import", "imported bank"

    source = models.CharField(max_length=16, choices=Source.choices)
    policy = models.CharField(max_length=32)
    title = models.CharField(max_length=1000, blank=True)
    image = models.ForeignKey(
        ListingImage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    bank_ref = models.CharField(max_length=200, blank=True)  # the entry's id in an imported bank
    image_file = models.FileField(upload_to="references/", blank=True)  # an imported bank's image
    case_id = models.BigIntegerField(null=True, blank=True)  # reviews.Case, by id (a higher layer)
    decision_id = models.BigIntegerField(null=True, blank=True)
    decision_action = models.CharField(max_length=16, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    model_version = models.CharField(max_length=128)
    vector = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)
    # A person took the decision back (an overturn, a QA correction): kept, never compared with.
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdrawn_by_decision_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["decision_id", "image", "model_version"],
                condition=models.Q(source="decision"),
                name="one_reference_per_decision_image",
            ),
            models.UniqueConstraint(
                fields=["bank_ref", "model_version"],
                condition=models.Q(source="import"),
                name="one_reference_per_bank_entry",
            ),
        ]
        indexes = [models.Index(fields=["model_version", "id"], name="reference_model")]


class ReferenceIndexVersion(models.Model):
    """An immutable approximate-nearest-neighbour index artifact built from ReferenceItems."""

    version = models.CharField(max_length=64, unique=True)
    path = models.CharField(max_length=500)
    model_version = models.CharField(max_length=128)
    size = models.PositiveIntegerField()
    dim = models.PositiveIntegerField()
    build_seconds = models.FloatField()
    recall_at_10 = models.FloatField(null=True, blank=True)
    memory_bytes = models.BigIntegerField(null=True, blank=True)
    manifest = models.JSONField()
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"],
                condition=models.Q(is_active=True),
                name="one_active_reference_index",
            )
        ]
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.version


class Neighbour(models.Model):
    event = models.ForeignKey(DetectionEvent, on_delete=models.CASCADE, related_name="neighbours")
    index_version = models.ForeignKey(
        ReferenceIndexVersion, on_delete=models.PROTECT, related_name="+"
    )
    rank = models.PositiveSmallIntegerField()
    reference = models.ForeignKey(ReferenceItem, on_delete=models.CASCADE, related_name="+")
    image = models.ForeignKey(
        ListingImage, on_delete=models.CASCADE, related_name="+"
    )  # our image that matched
    similarity = models.FloatField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["event", "index_version", "rank"], name="one_neighbour_per_rank"
            )
        ]
        ordering = ["rank"]


class KnownBadImage(models.Model):
    """An image new listings must not carry: from an imported bank, or from a violation a person
    confirmed (the decision is its provenance). Withdrawal is soft: the row and its history stay,
    matching leaves it out (detection.evidence.banks)."""

    class Source(models.TextChoices):
        IMPORT = "import", "imported bank"
        DECISION = "decision", "confirmed decision"

    source = models.CharField(max_length=16, choices=Source.choices, default=Source.IMPORT)
    sha256 = models.CharField(max_length=64, db_index=True)
    phash = models.BigIntegerField(db_index=True)  # 64-bit pHash, stored signed
    reference_hashes = models.JSONField(
        default=list
    )  # extra hashes of crops, for crop-robust matching
    policy = models.CharField(max_length=32)
    label = models.CharField(max_length=300, blank=True)
    bank_ref = models.CharField(max_length=200, blank=True)
    image = models.ForeignKey(
        ListingImage, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )  # the banned original, for a decision's entry
    case_id = models.BigIntegerField(null=True, blank=True)  # reviews.Case, by id (a higher layer)
    decision_id = models.BigIntegerField(null=True, blank=True)
    decision_action = models.CharField(max_length=16, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    withdrawn_at = models.DateTimeField(null=True, blank=True)
    withdrawn_by_decision_id = models.BigIntegerField(null=True, blank=True)
    withdrawn_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["decision_id", "image"],
                condition=models.Q(source="decision"),
                name="one_known_bad_per_decision_image",
            )
        ]


class EvidenceWithdrawal(models.Model):
    """A decision whose evidence a person took back. Kept so that evidence added late (the
    reference task runs after the decision's commit) for a decision already overturned is never
    added live."""

    decision_id = models.BigIntegerField(unique=True)  # reviews.Decision, by id
    withdrawn_by_decision_id = models.BigIntegerField()
    reason = models.CharField(max_length=300)
    created_at = models.DateTimeField(default=timezone.now)


class HashMatch(models.Model):
    class Kind(models.TextChoices):
        EXACT = "exact", "exact copy (sha256)"
        NEAR = "near", "near copy (pHash)"

    event = models.ForeignKey(DetectionEvent, on_delete=models.CASCADE, related_name="hash_matches")
    image = models.ForeignKey(ListingImage, on_delete=models.CASCADE, related_name="+")
    known_bad = models.ForeignKey(KnownBadImage, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    distance = models.PositiveSmallIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["event", "image", "known_bad"], name="one_match_per_pair"
            )
        ]
