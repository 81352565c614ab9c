from django.core.management.base import BaseCommand

from detection.models import DeadLetter
from reviews.cases.intake import dead_letters_replay


class Command(BaseCommand):
    help = (
        "Re-submit kept dead letters through ingest; each ends replayed or rejected again, with "
        "the result kept."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--id", type=int, action="append", dest="ids", help="replay only these (repeatable)"
        )
        parser.add_argument(
            "--all", action="store_true", help="also replay letters that were rejected again before"
        )
        parser.add_argument("--limit", type=int, default=10_000)

    def handle(self, *args, ids=None, all=False, limit=10_000, **options):
        qs = DeadLetter.objects.order_by("id")
        if ids:
            qs = qs.filter(id__in=ids)
        elif all:
            qs = qs.exclude(state=DeadLetter.State.REPLAYED)
        else:
            qs = qs.filter(state=DeadLetter.State.PENDING)
        letters = list(qs[:limit])
        outcomes = dead_letters_replay(letters=letters)
        counts = {"accepted": 0, "duplicate": 0, "rejected": 0}
        for letter, outcome in zip(letters, outcomes, strict=True):
            counts[outcome.status] += 1
            if outcome.status == "rejected":
                why = "; ".join(f"{r['field']}: {r['message']}" for r in outcome.reasons)
                self.stdout.write(f"dead letter {letter.id}: rejected again ({why})")
        self.stdout.write(
            f"replayed {len(letters)}: {counts['accepted']} accepted, {counts['duplicate']} "
            f"duplicate, "
            f"{counts['rejected']} rejected again"
        )
