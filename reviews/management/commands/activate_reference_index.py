from django.core.management.base import BaseCommand, CommandError

from detection.models import ReferenceIndexVersion
from detection.references import reference_index_activate
from reviews.services import audit_record


class Command(BaseCommand):
    help = "Make a reference-index version active (also how to roll back); audited."

    def add_arguments(self, parser):
        parser.add_argument("version")

    def handle(self, *args, version, **options):
        row = ReferenceIndexVersion.objects.filter(version=version).first()
        if row is None:
            known = ", ".join(ReferenceIndexVersion.objects.values_list("version", flat=True)[:20]) or "none"
            raise CommandError(f"no index version {version!r} (known: {known})")
        previous = ReferenceIndexVersion.objects.filter(is_active=True).first()
        reference_index_activate(version=row)
        audit_record(action="reference_index_activated", obj=row,
                     data={"version": row.version, "previous": previous.version if previous else None})
        self.stdout.write(f"{row.version} is active ({row.size} vectors)")
