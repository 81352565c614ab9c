"""Training labels with provenance (active_learning.labels.services writes them)."""

from django.db import models
from django.db.models import Q
from django.utils import timezone


class Label(models.Model):
    """One person's judgement of one listing under one policy, with where it came from. A later
    judgement of the same (listing, policy) supersedes the earlier one, which stays as history.
    Decisions no person confirmed (automatic, LLM-verified) are kept apart: `for_training` is
    false, so a model is never trained on its own outputs."""

    class Kind(models.TextChoices):
        POSITIVE = "positive", "positive (a violation)"
        HARD_NEGATIVE = "hard_negative", "hard negative (flagged, found not violating)"
        EASY_NEGATIVE = "easy_negative", "easy negative (random sample or monitor pool)"

    class Source(models.TextChoices):
        HUMAN = "human", "moderator decision"
        QA_CORRECTION = "qa_correction", "QA correction"
        APPEAL = "appeal", "appeal outcome"
        LABELING = "labeling", "labeling queue"
        # A QA lead agreed with a sampled automatic or LLM-verified decision: a person confirmed
        # it, so it is a training label, with the QA lead as the one who decided.
        QA_CONFIRMED = "qa_confirmed", "machine decision confirmed by QA"
        AUTOMATIC = "automatic", "automatic decision (not for training)"
        LLM_VERIFIED = "llm_verified", "LLM-verified decision (not for training)"

    label_id = models.CharField(max_length=64, unique=True)  # stable, see labels.services
    listing = models.ForeignKey("detection.Listing", on_delete=models.PROTECT, related_name="+")
    event = models.ForeignKey(
        "detection.DetectionEvent", on_delete=models.PROTECT, related_name="+"
    )  # the scored event the judgement was about
    content_hash = models.CharField(max_length=64)  # sha256 of the listing text and image hashes
    policy = models.CharField(max_length=32)
    label = models.PositiveSmallIntegerField()  # 1 violation, 0 not
    kind = models.CharField(max_length=16, choices=Kind.choices)
    source = models.CharField(max_length=16, choices=Source.choices)
    for_training = models.BooleanField()
    decided_by = models.CharField(max_length=32, blank=True)  # pseudonymous id, never a name
    decided_at = models.DateTimeField(db_index=True)
    decision = models.ForeignKey(
        "reviews.Decision", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    labeling_item = models.ForeignKey(
        "active_learning.LabelingItem",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    model_name = models.CharField(max_length=128, blank=True)
    model_version = models.CharField(max_length=128, blank=True)
    score = models.FloatField(null=True, blank=True)  # the detection score for `policy`
    ladder_version = models.PositiveIntegerField(null=True, blank=True)
    llm_model = models.CharField(max_length=128, blank=True)
    prompt_version = models.CharField(max_length=64, blank=True)
    sampling_strategy = models.CharField(max_length=32, blank=True)
    inclusion_probability = models.FloatField(null=True, blank=True)
    qa_agreement = models.BooleanField(null=True, blank=True)  # None: not QA-sampled
    trace_id = models.CharField(max_length=128, blank=True)
    supersedes = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="superseded_by"
    )
    is_current = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["listing", "policy"],
                condition=Q(is_current=True, for_training=True),
                name="one_current_training_label",
            )
        ]
        indexes = [models.Index(fields=["for_training", "is_current", "decided_at"])]
