from django.core.management.base import BaseCommand, CommandError

from detection.evidence.references import reference_index_build
from detection.evidence.vectors import StepUnavailable


class Command(BaseCommand):
    help = (
        "Build a new immutable version of the reference index of known violations (and activate "
        "it)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--activate", action="store_true")

    def handle(self, *args, activate=False, **options):
        try:
            version = reference_index_build(activate=activate)
        except (ValueError, StepUnavailable) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"built {version.version}: {version.size} vectors, {version.dim}-d, "
            f"{version.build_seconds:.2f} s, "
            f"recall@10 {version.recall_at_10}{' (active)' if activate else ''}"
        )
