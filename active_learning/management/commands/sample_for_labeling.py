from datetime import date

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from active_learning.labeling.sampling import labeling_draw


class Command(BaseCommand):
    help = (
        "Draw the day's labeling items from the monitor pool and the random sample events "
        "(strategy shares in LABELING_STRATEGY_SHARES). Once per day: drawing again the same "
        "day adds nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--budget",
            type=int,
            default=None,
            metavar="N",
            help="items to draw (default LABELING_DAILY_BUDGET)",
        )
        parser.add_argument(
            "--day", default=None, metavar="YYYY-MM-DD", help="the draw's day (default today)"
        )

    def handle(self, *args, budget=None, day=None, **options):
        budget = settings.LABELING_DAILY_BUDGET if budget is None else budget
        if budget < 0:
            raise CommandError("--budget must be 0 or more")
        try:
            the_day = date.fromisoformat(day) if day else timezone.localdate()
        except ValueError as exc:
            raise CommandError(f"--day {day!r} is not YYYY-MM-DD") from exc
        draw = labeling_draw(day=the_day, budget=budget)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(draw.counts.items())) or "nothing"
        self.stdout.write(
            f"labeling draw {draw.day.isoformat()}: {draw.items.count()} items "
            f"(budget {draw.budget}, pool {draw.pool_size}): {counts}"
        )
