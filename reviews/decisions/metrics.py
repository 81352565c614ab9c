"""Decisions' metrics, counted once the decision's transaction commits: a decision that is
rolled back (refused by the rules, a failed batch) never counts."""

from collections.abc import Sequence
from datetime import datetime

from django.db import transaction

from moderation_portal.core import metrics
from reviews.decisions.models import Decision

NO_POLICY = "none"


def decisions_count_on_commit(*, cases: Sequence, decisions: Sequence[Decision], now: datetime):
    """DECISIONS by source, verdict, action and policy (the decision's policy; for "no
    violation", which names none, the policy the case was flagged for); a person's time on the
    case and human decisions made after the case's SLA deadline, by the case's policy."""
    rows = []
    for case, decision in zip(cases, decisions, strict=True):
        flagged = case.policy_id or NO_POLICY
        ms = decision.time_on_case_ms
        rows.append(
            (
                (decision.source, decision.verdict, decision.action, decision.policy_id or flagged),
                flagged,
                ms / 1000 if ms is not None else None,
                decision.source == Decision.Source.HUMAN and case.sla_due_at < now,
            )
        )

    def record() -> None:
        for labels, flagged, seconds, late in rows:
            metrics.DECISIONS.labels(*labels).inc()
            if seconds is not None:
                metrics.TIME_ON_CASE.labels(flagged, labels[0]).observe(seconds)
            if late:
                metrics.SLA_BREACHES.labels(flagged).inc()

    transaction.on_commit(record)
