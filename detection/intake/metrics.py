"""Ingest's metrics: what became of each event (recorded where a batch ends) and, read at
scrape time, the dead letters waiting for an operator.

Label values are closed sets: the source (api, celery, replay), the outcome, the reason code
of a rejection (the portal's own codes, never the event's text), policy codes (the schema
admits only known ones) and model versions.
"""

from collections import Counter
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from detection.intake.validation import ValidEvent
from detection.models import DeadLetter
from moderation_portal.core import metrics

# The outcomes of detection.intake.storage (importing it here would be circular).
ACCEPTED, REJECTED = "accepted", "rejected"
DEAD_LETTERED = "dead_lettered"  # a body kept whole: not a list, unparseable, too large


def ingest_record(*, source: str, outcomes: Iterable, stored: Iterable[ValidEvent] = ()) -> None:
    """Count a batch's outcomes (a rejection by its first reason's code) and observe the
    detection scores of the events it stored, every policy's score under the event's model."""
    counts: Counter[tuple[str, str]] = Counter()
    for outcome in outcomes:
        code = outcome.reasons[0]["code"] if outcome.status == REJECTED and outcome.reasons else ""
        counts[(outcome.status, code)] += 1
    for (status, code), n in counts.items():
        metrics.INGEST_EVENTS.labels(source, status, code).inc(n)
    for event in stored:
        detection = event.payload["detection"]
        version = detection["model_version"]
        for policy, score in detection["scores"].items():
            metrics.DETECTION_SCORE.labels(policy, version).observe(float(score))


def dead_lettered_record(*, source: str, code: str) -> None:
    """A body kept whole as one dead letter, its events never read."""
    metrics.INGEST_EVENTS.labels(source, DEAD_LETTERED, code).inc()


WAITING_STATES = (DeadLetter.State.PENDING, DeadLetter.State.REJECTED_AGAIN)


def collect() -> Iterable[Metric]:
    gauge = GaugeMetricFamily(
        "portal_dead_letters_waiting",
        "Dead letters not taken yet: never replayed, or rejected again on replay.",
    )
    gauge.add_metric([], DeadLetter.objects.filter(state__in=WAITING_STATES).count())
    yield gauge
