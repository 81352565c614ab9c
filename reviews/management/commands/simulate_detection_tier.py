import time

from django.core.management.base import BaseCommand, CommandError
from kombu.exceptions import OperationalError as KombuOperationalError

from detection.intake.simulator import DetectionTierSimulator
from reviews.cases.intake import ingest_events_task


class Command(BaseCommand):
    help = (
        "Publish realistic flagged listings through the real Celery ingest path "
        "(detection.ingest_events)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, required=True, help="number of events to publish")
        parser.add_argument(
            "--rate", type=float, default=0.0, help="events per second (0: as fast as possible)"
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--malformed-ratio", type=float, default=0.0, help="share of malformed events, 0..1"
        )
        parser.add_argument("--batch-size", type=int, default=50)
        parser.add_argument(
            "--challengers",
            action="store_true",
            help="also send a shadow model's scores (detection.challengers) beside the champion's",
        )

    def handle(self, *args, count, rate, seed, malformed_ratio, batch_size, challengers, **options):
        if count < 0 or not 0.0 <= malformed_ratio <= 1.0 or rate < 0 or batch_size < 1:
            raise CommandError(
                "--count ≥ 0, --rate ≥ 0, --batch-size ≥ 1 and 0 ≤ --malformed-ratio ≤ 1"
            )
        sim = DetectionTierSimulator(seed=seed, challengers=challengers)
        sent, started = 0, time.monotonic()
        while sent < count:
            n = min(batch_size, count - sent)
            if rate > 0:
                n = min(n, max(1, int(rate)))
            batch = sim.batch(n, malformed_ratio=malformed_ratio)
            try:
                ingest_events_task.apply_async(args=[batch], queue="ingest")
            except KombuOperationalError as exc:
                # Celery has already retried the publish; say exactly how far it got, so the
                # batches after that can be sent again (event_id makes resending safe).
                raise CommandError(
                    f"the broker is unavailable: published {sent} of {count} events "
                    f"(seed {seed}) before: {exc}"
                ) from exc
            sent += n
            if rate > 0:
                wait = started + sent / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
        self.stdout.write(
            f"published {sent} events in {time.monotonic() - started:.1f} s (seed {seed})"
        )
