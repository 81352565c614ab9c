"""Routing by the policy ladder, and the priority key queues are ordered by.

Priority is an earliest-effective-deadline key, stored per case and indexed:

    priority_key = sla_due_at
                   - 60 min  x severity            (1..5)
                   - 120 min x detection score     (0..1)
                   - 30 min  x log2(1 + seller's listings)   (seller reach, capped at 10)

Claim-next takes the smallest key first. Every key moves with the same clock, so the order is
static and cheap to index, while cases near their SLA still rise: an old case's key is earlier
than a fresh case's of the same policy and score.
"""

import math
from datetime import datetime, timedelta

from reviews.models import Case

SEVERITY_MINUTES = 60
SCORE_MINUTES = 120
REACH_MINUTES = 30
REACH_CAP = 10.0


def route_for(score: float, thresholds: dict) -> tuple[str, str]:
    if score >= thresholds["auto_action"]:
        return Case.Route.AUTO_ACTION, f"score {score:.2f} ≥ automatic action {thresholds['auto_action']:.2f}"
    if score >= thresholds["llm_verify"]:
        return Case.Route.LLM_VERIFY, (
            f"score {score:.2f} in the LLM-verifiable band "
            f"[{thresholds['llm_verify']:.2f}, {thresholds['auto_action']:.2f})"
        )
    if score >= thresholds["review"]:
        return Case.Route.HUMAN_REVIEW, f"score {score:.2f} ≥ review {thresholds['review']:.2f}"
    if score >= thresholds["monitor"]:
        return Case.Route.MONITOR, f"score {score:.2f} ≥ monitor {thresholds['monitor']:.2f}"
    return Case.Route.ALLOW, f"score {score:.2f} below monitor {thresholds['monitor']:.2f}"


def priority_key(*, sla_due_at: datetime, severity: int, score: float, seller_listings: int) -> datetime:
    reach = min(math.log2(1 + max(seller_listings, 0)), REACH_CAP)
    credit = SEVERITY_MINUTES * severity + SCORE_MINUTES * score + REACH_MINUTES * reach
    return sla_due_at - timedelta(minutes=credit)
