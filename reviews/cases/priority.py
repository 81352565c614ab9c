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

SEVERITY_MINUTES = 60
SCORE_MINUTES = 120
REACH_MINUTES = 30
REACH_CAP = 10.0


def priority_key(
    *, sla_due_at: datetime, severity: int, score: float, seller_listings: int
) -> datetime:
    reach = min(math.log2(1 + max(seller_listings, 0)), REACH_CAP)
    credit = SEVERITY_MINUTES * severity + SCORE_MINUTES * score + REACH_MINUTES * reach
    return sla_due_at - timedelta(minutes=credit)
