from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from detection.policies import POLICY_CODES


class AppendOnlyError(RuntimeError):
    pass


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only")

    def delete(self):
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only")


class AppendOnlyModel(models.Model):
    """Facts that are written once. The database refuses changes too (see the migration)."""

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if self.pk is not None and not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} rows are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError(f"{type(self).__name__} rows are append-only")


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
    """The enforcement ladder (reviews/ladder.py). A draft is edited; publishing gives it the next
    version number, after which it never changes. One published version is active."""

    class State(models.TextChoices):
        DRAFT = "draft", "draft"
        PUBLISHED = "published", "published"

    version = models.PositiveIntegerField(unique=True, null=True, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.DRAFT)
    thresholds = models.JSONField()
    notes = models.TextField(blank=True)
    based_on = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    published_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    published_at = models.DateTimeField(null=True, blank=True)
    is_active = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=Q(is_active=True), name="one_active_ladder"),
            models.UniqueConstraint(fields=["state"], condition=Q(state="draft"), name="one_ladder_draft"),
            models.CheckConstraint(
                condition=Q(state="draft", version__isnull=True) | Q(state="published", version__isnull=False),
                name="published_ladders_have_a_version",
            ),
        ]
        ordering = ["-version"]

    def __str__(self) -> str:
        return f"ladder v{self.version}" if self.version else "ladder draft"


class Queue(models.Model):
    class Kind(models.TextChoices):
        REVIEW = "review", "review"
        ESCALATION = "escalation", "escalation"
        APPEALS = "appeals", "appeals"
        QA = "qa", "QA"
        LABELING = "labeling", "labeling"

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.REVIEW)
    policies = models.JSONField(default=list, blank=True, help_text="policy codes; empty means all")
    regions = models.JSONField(default=list, blank=True)
    languages = models.JSONField(default=list, blank=True)
    roles = models.JSONField(default=list, help_text="roles that may work this queue")
    groups = models.JSONField(
        default=list, blank=True, help_text="if set, the user must also be in one of these groups (e.g. senior_moderator)"
    )
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "slug"]

    def __str__(self) -> str:
        return self.slug


class Case(models.Model):
    class Route(models.TextChoices):
        AUTO_ACTION = "auto_action", "automatic action"
        LLM_VERIFY = "llm_verify", "LLM-verified action"
        HUMAN_REVIEW = "human_review", "human review"
        MONITOR = "monitor", "monitor"
        ALLOW = "allow", "allow"

    class State(models.TextChoices):
        QUEUED = "queued", "waiting for a moderator"
        CLAIMED = "claimed", "claimed"
        DECIDED = "decided", "decided"
        CLOSED = "closed", "closed without human review"

    class LlmState(models.TextChoices):
        NOT_APPLICABLE = "not_applicable", "not applicable"
        NOT_CONFIGURED = "not_configured", "LLM verifier not configured"
        PENDING = "pending", "pending"
        RUNNING = "running", "asking the LLM"
        DONE = "done", "done"
        FAILED = "failed", "failed"
        UNAVAILABLE = "unavailable", "LLM unavailable"

    detection_event = models.OneToOneField("detection.DetectionEvent", on_delete=models.PROTECT, related_name="case")
    listing = models.ForeignKey("detection.Listing", on_delete=models.PROTECT, related_name="cases")
    trace_id = models.CharField(max_length=128, db_index=True)
    policy = models.ForeignKey(Policy, to_field="code", on_delete=models.PROTECT, related_name="cases")
    score = models.FloatField()
    region = models.CharField(max_length=32)
    language = models.CharField(max_length=16)
    route = models.CharField(max_length=16, choices=Route.choices)
    route_reason = models.CharField(max_length=200, blank=True)
    ladder_version = models.ForeignKey(LadderVersion, on_delete=models.PROTECT, related_name="cases")
    state = models.CharField(max_length=16, choices=State.choices)
    queue_kind = models.CharField(max_length=16, choices=Queue.Kind.choices, default=Queue.Kind.REVIEW)
    # Earliest-effective-deadline ordering: see reviews/routing.py for the formula.
    priority_key = models.DateTimeField()
    sla_due_at = models.DateTimeField()
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="claimed_cases"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    llm_state = models.CharField(max_length=16, choices=LlmState.choices, default=LlmState.NOT_APPLICABLE)
    # The tier's action for the score (remove, warn, none): what an automatic or LLM-verified
    # decision may take; an LLM can never take more than this.
    ladder_action = models.CharField(max_length=16, default="none")
    llm_verdict = models.ForeignKey("llm_verify.LlmVerdict", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    llm_started_at = models.DateTimeField(null=True, blank=True)  # when the running verification began
    suspension_review = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["priority_key", "id"], condition=Q(state="queued"), name="case_queued_priority"
            ),
            models.Index(fields=["lease_expires_at"], condition=Q(state="claimed"), name="case_claimed_lease"),
            models.Index(fields=["claimed_by", "state"], name="case_claimed_by"),
            models.Index(fields=["state", "policy"], name="case_state_policy"),
            models.Index(fields=["listing", "-created_at"], name="case_listing"),
        ]

    def __str__(self) -> str:
        return f"case {self.pk}"


class CaseSkip(models.Model):
    """A moderator passed on a case (with a reason); claim-next does not offer it to them again."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="skips")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=500)
    escalated = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["user", "-created_at"], name="skip_user")]


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

    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="decisions")
    verdict = models.CharField(max_length=16, choices=Verdict.choices)
    policy = models.ForeignKey(Policy, to_field="code", null=True, blank=True, on_delete=models.PROTECT)
    action = models.CharField(max_length=16, choices=Action.choices)
    notes = models.TextField(blank=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    ladder_version = models.ForeignKey(LadderVersion, on_delete=models.PROTECT)
    time_on_case_ms = models.PositiveIntegerField(null=True, blank=True)
    supersedes = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT)
    llm_verdict = models.ForeignKey("llm_verify.LlmVerdict", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    trace_id = models.CharField(max_length=128)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]


class Enforcement(models.Model):
    """The outbox of actions for the marketplace; a delivery task sends them."""

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        SENT = "sent", "sent"
        FAILED = "failed", "failed"

    decision = models.OneToOneField(Decision, on_delete=models.PROTECT, related_name="enforcement")
    listing = models.ForeignKey("detection.Listing", on_delete=models.PROTECT, related_name="enforcements")
    action = models.CharField(max_length=16)
    reverses = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["state", "created_at"], name="enforcement_state")]


class AuditEvent(AppendOnlyModel):
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT)
    actor_label = models.CharField(max_length=150)
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=32)
    object_id = models.CharField(max_length=64)
    trace_id = models.CharField(max_length=128, blank=True, db_index=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object")]
        ordering = ["created_at", "id"]


class UserPreference(models.Model):
    """Wellbeing settings a moderator chooses; the defaults are the protective ones."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="portal_preference")
    blur_images = models.BooleanField(default=True)
    greyscale_images = models.BooleanField(default=True)
    updated_at = models.DateTimeField(default=timezone.now)


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

    decision = models.OneToOneField(Decision, on_delete=models.PROTECT, related_name="qa_sample")
    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="qa_samples")
    policy = models.CharField(max_length=32)
    reason = models.CharField(max_length=16, choices=Reason.choices)
    band = models.CharField(max_length=16)  # confidence band of the detection score, e.g. "0.95-0.97"
    disagreement = models.BooleanField(default=False)  # the LLM and the detection score disagreed
    weight = models.FloatField(default=1.0)  # inverse sampling probability, for estimates over all decisions
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    claimed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["state", "-disagreement", "created_at"], name="qa_pending")]


class QaReview(AppendOnlyModel):
    class Outcome(models.TextChoices):
        AGREE = "agree", "agree"
        CORRECT = "correct", "correct"

    sample = models.OneToOneField(QaSample, on_delete=models.PROTECT, related_name="review")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    verdict = models.CharField(max_length=16)  # what the QA lead judges right
    policy = models.CharField(max_length=32, blank=True)
    action = models.CharField(max_length=16)
    notes = models.TextField(blank=True)
    correction = models.ForeignKey(Decision, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
