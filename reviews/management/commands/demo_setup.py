import secrets
import time
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.core.management.base import BaseCommand

from detection.models import DetectionEvent, KnownBadImage, ReferenceIndexVersion
from moderation_portal.core.access import PERSON_ROLES
from reviews.policies.bootstrap import defaults_ensure

DEMO_USERS = {
    "moderator": "demo-moderator",
    "appeals": "demo-appeals",
    "qa_lead": "demo-qa",
    "policy_admin": "demo-admin",
}
SEED_MODERATOR = (
    "demo-seed-moderator"  # decides a few cases at set-up so similar cases have history
)


class Command(BaseCommand):
    help = (
        "Demo set-up: demo model weights (built locally), a known-bad bank and reference index, "
        "simulated flagged listings, and one login per role (fresh passwords, printed here)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--count", type=int, default=80, help="listings to simulate on a new database"
        )
        parser.add_argument("--seed", type=int, default=2026)

    def log(self, message: str) -> None:
        self.stdout.write(f"[demo] {message}")
        self.stdout.flush()

    def handle(self, *args, count, seed, **options):
        defaults_ensure()
        self._demo_ladder()
        self._weights()
        self._bank_and_index()
        if not DetectionEvent.objects.exists():
            started = time.monotonic()
            self.log(
                f"simulating {count} flagged listings through the Celery ingest path (enrichment "
                f"runs in "
                "process in the embedded mode: about a second a listing)…"
            )
            call_command(
                "simulate_detection_tier",
                "--count",
                str(count),
                "--seed",
                str(seed),
                "--malformed-ratio",
                "0.05",
                "--challengers",  # a shadow model beside the champion, compared on /models/
            )
            self.log(f"simulated in {time.monotonic() - started:.0f} s")
            self._seed_decisions()
        lines = []
        for role in PERSON_ROLES:
            username = DEMO_USERS[role]
            password = secrets.token_urlsafe(9)
            user, _ = User.objects.get_or_create(username=username)
            user.set_password(password)
            user.save()
            user.groups.set([Group.objects.get(name=role)])
            lines.append(f"  {role:<13} {username:<16} {password}")
        User.objects.filter(username=DEMO_USERS["moderator"]).first().groups.add(
            Group.objects.get(name="senior_moderator")
        )
        self.stdout.write("\nDemo logins (new passwords on every start):")
        self.stdout.write("\n".join(lines))
        self.stdout.write("\nOpen http://127.0.0.1:8000 and log in.\n")

    def _demo_ladder(self) -> None:
        """Ladder v2 for the demo: every automatic and LLM-verified decision may be sampled for QA
        (qa_rate 1.0; the band factor still halves it in the upper half of a band), so the QA
        queue has work. Published like any version, so the ladder's history shows it."""
        import copy

        from reviews.policies import ladder as ladder_rules
        from reviews.policies import services
        from reviews.policies.models import LadderVersion

        if LadderVersion.objects.filter(state=LadderVersion.State.PUBLISHED).count() > 1:
            return
        admin, _ = User.objects.get_or_create(username="demo-setup")
        admin.set_unusable_password()
        admin.save()
        thresholds = copy.deepcopy(services.ladder_active().thresholds)
        for row in thresholds.values():
            row["qa_rate"] = 1.0
        services.ladder_draft_save(
            user=admin,
            thresholds=ladder_rules.validate(thresholds),
            notes="demo: QA samples every automatic and LLM-verified decision",
        )
        version = services.ladder_publish(user=admin)
        self.log(f"ladder v{version.version}: QA rate 1.0 for the demo (v1 keeps the defaults)")

    def _weights(self) -> None:
        path = Path(settings.DETECTION_MODEL_CONFIG)
        if path.exists():
            return
        if path.parent.name != "demo":
            self.log(f"no image model config at {path}: heatmaps and neighbours will say so")
            return
        from detection.ml.models import build_demo_weights

        started = time.monotonic()
        self.log(
            "building demo model weights locally (an RN50 tower with random weights and "
            "per-policy heads "
            "fitted on synthetic photos; not a trained detector)…"
        )
        built = build_demo_weights(path.parent, per_policy=12)
        self.log(f"demo weights at {built} ({time.monotonic() - started:.0f} s)")

    def _bank_and_index(self) -> None:
        from detection.evidence.references import known_bad_import, reference_index_build
        from detection.evidence.vectors import StepUnavailable
        from detection.intake.simulator import known_bad_bank

        if not KnownBadImage.objects.exists():
            result = known_bad_import(entries=known_bad_bank(), source_name="demo-bank")
            self.log(
                f"known-bad bank: {result['imported']} images, {result['embedded']} reference "
                f"embeddings"
            )
        if not ReferenceIndexVersion.objects.filter(is_active=True).exists():
            try:
                version = reference_index_build(activate=True)
                self.log(
                    f"reference index {version.version}: {version.size} vectors, recall@10 "
                    f"{version.recall_at_10}"
                )
            except (ValueError, StepUnavailable) as exc:
                self.log(f"no reference index: {exc}")

    def _seed_decisions(self) -> None:
        """A few confirmed decisions, so similar known violations have a past decision to show."""
        from detection.intake.simulator import HARD_NEGATIVES
        from reviews.cases import claims
        from reviews.cases.models import Case
        from reviews.decisions.services import DecisionSpec

        hard_negative_titles = {title for _, title, _, _ in HARD_NEGATIVES}

        user, _ = User.objects.get_or_create(username=SEED_MODERATOR)
        user.set_unusable_password()
        user.save()
        user.groups.set([Group.objects.get(name="moderator")])
        decided = 0
        for _ in range(
            min(12, Case.objects.filter(state=Case.State.QUEUED, queue_kind="review").count() // 3)
        ):
            claimed = claims.case_claim_next(user=user)
            if claimed is None:
                break
            # the simulator's look-alikes (water guns, herbs) are cleared, as a moderator would
            cleared = claimed.listing.title in hard_negative_titles
            claims.case_decide(
                case=claimed,
                user=user,
                spec=DecisionSpec(
                    verdict="no_violation" if cleared else "violation",
                    policy=None if cleared else claimed.policy_id,
                    action="none" if cleared else "remove",
                    notes="seeded at demo set-up",
                ),
            )
            decided += 1
        if decided:
            from detection.evidence.references import reference_index_build

            try:
                version = reference_index_build(activate=True)
                self.log(
                    f"{decided} seeded decisions; reference index {version.version} now has "
                    f"{version.size} vectors"
                )
            except ValueError as exc:
                self.log(f"index not rebuilt: {exc}")
