"""Queues and cases: what moderators work, with its routing, priority and lease."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from reviews.policies import ladder


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
        default=list,
        blank=True,
        help_text="if set, the user must also be in one of these groups (e.g. senior_moderator)",
    )
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "slug"]

    def __str__(self) -> str:
        return self.slug

    def filters(self) -> list[tuple[str, list]]:
        """The queue's rule, once: the case columns it narrows and the values each may take.
        The ORM (`narrow`), the claim statement and the summaries (`holds`) all derive from it."""
        rule: list[tuple[str, list]] = [("queue_kind", [self.kind])]
        for column, values in (
            ("policy_id", self.policies),
            ("region", self.regions),
            ("language", self.languages),
        ):
            if values:
                rule.append((column, list(values)))
        return rule

    def narrow(self, qs):
        for column, values in self.filters():
            qs = qs.filter(**{f"{column}__in": values})
        return qs

    def holds(self, row: dict) -> bool:
        """Whether a case, as a dict of its columns, belongs to this queue."""
        return all(row[column] in values for column, values in self.filters())

    @classmethod
    def default_review(cls) -> "Queue":
        """The unsaved stand-in for "no queue given": every review case."""
        return cls(slug="all", kind=cls.Kind.REVIEW)


class Case(models.Model):
    class Route(models.TextChoices):  # the names are the ladder's (reviews.policies.ladder.Route)
        AUTO_ACTION = ladder.Route.AUTO_ACTION, "automatic action"
        LLM_VERIFY = ladder.Route.LLM_VERIFY, "LLM-verified action"
        HUMAN_REVIEW = ladder.Route.HUMAN_REVIEW, "human review"
        MONITOR = ladder.Route.MONITOR, "monitor"
        ALLOW = ladder.Route.ALLOW, "allow"

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

    detection_event = models.OneToOneField(
        "detection.DetectionEvent", on_delete=models.PROTECT, related_name="case"
    )
    listing = models.ForeignKey("detection.Listing", on_delete=models.PROTECT, related_name="cases")
    trace_id = models.CharField(max_length=128, db_index=True)
    policy = models.ForeignKey(
        "reviews.Policy", to_field="code", on_delete=models.PROTECT, related_name="cases"
    )
    score = models.FloatField()
    region = models.CharField(max_length=32)
    language = models.CharField(max_length=16)
    route = models.CharField(max_length=16, choices=Route.choices)
    route_reason = models.CharField(max_length=200, blank=True)
    ladder_version = models.ForeignKey(
        "reviews.LadderVersion", on_delete=models.PROTECT, related_name="cases"
    )
    state = models.CharField(max_length=16, choices=State.choices)
    queue_kind = models.CharField(
        max_length=16, choices=Queue.Kind.choices, default=Queue.Kind.REVIEW
    )
    # Earliest-effective-deadline ordering: see reviews/cases/priority.py for the formula.
    priority_key = models.DateTimeField()
    sla_due_at = models.DateTimeField()
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="claimed_cases",
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    llm_state = models.CharField(
        max_length=16, choices=LlmState.choices, default=LlmState.NOT_APPLICABLE
    )
    # The tier's action for the score (remove, warn, none): what an automatic or LLM-verified
    # decision may take; an LLM can never take more than this.
    ladder_action = models.CharField(max_length=16, default="none")
    llm_verdict = models.ForeignKey(
        "llm_verify.LlmVerdict", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    llm_started_at = models.DateTimeField(
        null=True, blank=True
    )  # when the running verification began
    suspension_review = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["priority_key", "id"],
                condition=Q(state="queued"),
                name="case_queued_priority",
            ),
            models.Index(
                fields=["lease_expires_at"], condition=Q(state="claimed"), name="case_claimed_lease"
            ),
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


class UserPreference(models.Model):
    """Wellbeing settings a moderator chooses; the defaults are the protective ones."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="portal_preference"
    )
    blur_images = models.BooleanField(default=True)
    greyscale_images = models.BooleanField(default=True)
    updated_at = models.DateTimeField(default=timezone.now)
