from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from active_learning.labels.export import labels_export


class Command(BaseCommand):
    help = (
        "Write the versioned training-label export: DIR/<version>/labels.parquet, "
        "machine_labels.parquet (analysis only), images.parquet and manifest.json. The same "
        "database state and --as-of give the same files and version."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--out",
            default=None,
            metavar="DIR",
            help="where versions are written (default LABEL_EXPORT_DIR)",
        )
        parser.add_argument(
            "--as-of",
            default=None,
            metavar="TIMESTAMP",
            help="ISO 8601 with a timezone, e.g. 2026-12-01T00:00:00Z; labels decided up to it "
            "(default now, to the second)",
        )

    def handle(self, *args, out=None, as_of=None, **options):
        if as_of:
            try:
                when = datetime.fromisoformat(as_of)
            except ValueError as exc:
                raise CommandError(f"--as-of {as_of!r} is not an ISO 8601 timestamp") from exc
            if when.tzinfo is None:
                raise CommandError("--as-of needs a timezone (e.g. Z or +00:00)")
        else:
            when = timezone.now().replace(microsecond=0)
        result = labels_export(out_dir=Path(out) if out else settings.LABEL_EXPORT_DIR, as_of=when)
        m = result.manifest
        splits = ", ".join(f"{name} {s['rows']}" for name, s in m["splits"].items())
        self.stdout.write(
            f"label export {result.version}: {m['rows']} training labels ({splits}), "
            f"{m['analysis_only']['rows']} analysis-only; {result.path}"
        )
