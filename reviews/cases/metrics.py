"""Cases' metrics: cases opened and claims (recorded where they happen) and, read at scrape
time, each queue's depth, oldest waiting case and SLA breaches.

The `queue` label is a Queue row's slug (or "all", claim-next without a queue): rows an admin
creates, a handful, never a moderator's input.
"""

from collections import Counter
from collections.abc import Iterable

from django.db import transaction
from django.db.models import Count, Min, Q
from django.http import Http404
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from moderation_portal.core import metrics
from reviews.cases.models import Case, Queue
from reviews.cases.selectors import queue_get_for_user

CLAIMED, EMPTY, REFUSED = "claimed", "empty", "refused"
UNKNOWN_QUEUE = "unknown"


def cases_opened_record(cases: list[Case]) -> None:
    """Count opened cases by policy and route once the transaction that opens them commits
    (a batch that is rolled back and stored event by event counts each case once)."""
    counts = Counter((case.policy_id, case.route) for case in cases)
    not_configured = sum(1 for case in cases if case.llm_state == Case.LlmState.NOT_CONFIGURED)

    def record() -> None:
        for (policy, route), n in counts.items():
            metrics.CASES_OPENED.labels(policy, route).inc(n)
        if not_configured:
            metrics.LLM_VERDICTS.labels("not_configured").inc(not_configured)

    transaction.on_commit(record)


def claim_record(*, queue: Queue, outcome: str, seconds: float) -> None:
    metrics.CLAIMS.labels(queue.slug, outcome).inc()
    metrics.CLAIM_LATENCY.labels(queue.slug).observe(seconds)


def claim_queue_get(*, slug: str, user) -> Queue:
    """The queue a claim-next names, if the user may work it (else 404, counted as refused).
    The slug is the caller's input: it becomes a label only when it names a real queue."""
    try:
        return queue_get_for_user(slug=slug, user=user)
    except Http404:
        if metrics.ENABLED:
            known = Queue.objects.filter(slug=slug).exists()
            metrics.CLAIMS.labels(slug if known else UNKNOWN_QUEUE, REFUSED).inc()
        raise


def collect() -> Iterable[Metric]:
    depth = GaugeMetricFamily(
        "portal_queue_depth", "Cases waiting for a moderator, per queue.", labels=["queue"]
    )
    oldest = GaugeMetricFamily(
        "portal_queue_oldest_age_seconds",
        "Age of the oldest case waiting in the queue (0 when none waits).",
        labels=["queue"],
    )
    breached = GaugeMetricFamily(
        "portal_queue_sla_breached",
        "Cases waiting in the queue past their SLA deadline.",
        labels=["queue"],
    )
    now = timezone.now()
    waiting = Case.objects.filter(state=Case.State.QUEUED)
    # One aggregate query per queue of cases (its own filters, on the queued-cases indexes); a
    # portal has a handful. Appeals, QA and labeling queues hold other items than cases.
    for queue in Queue.objects.filter(kind__in=[Queue.Kind.REVIEW, Queue.Kind.ESCALATION]):
        row = queue.narrow(waiting).aggregate(
            n=Count("id"),
            oldest=Min("created_at"),
            breached=Count("id", filter=Q(sla_due_at__lt=now)),
        )
        depth.add_metric([queue.slug], row["n"])
        age = (now - row["oldest"]).total_seconds() if row["oldest"] else 0.0
        oldest.add_metric([queue.slug], max(0.0, age))
        breached.add_metric([queue.slug], row["breached"])
    yield depth
    yield oldest
    yield breached
