from django.core.management.base import BaseCommand, CommandError

from detection.evidence.references import reference_index_activate
from detection.models import ReferenceIndexVersion


class Command(BaseCommand):
    help = "Make a reference-index version active (also how to roll back); audited."

    def add_arguments(self, parser):
        parser.add_argument("version")

    def handle(self, *args, version, **options):
        row = ReferenceIndexVersion.objects.filter(version=version).first()
        if row is None:
            known = (
                ", ".join(ReferenceIndexVersion.objects.values_list("version", flat=True)[:20])
                or "none"
            )
            raise CommandError(f"no index version {version!r} (known: {known})")
        reference_index_activate(version=row)
        self.stdout.write(f"{row.version} is active ({row.size} vectors)")
