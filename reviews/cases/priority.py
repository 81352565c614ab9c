"""Routing by the policy ladder, and the priority key queues are ordered by.

Priority is an earliest-effective-deadline key, stored per case and indexed:

    priority_key = sla_due_at
                   - 60 min  x severity            (1..5)
                   - 120 min x detection score     (0..1)
                   - 30 min  x log2(1 + seller's listings)   (seller reach, capped at 10)

Claim-next takes the smallest key first. Every key moves with the same clock, so the order is
static and cheap to index, while cases near their SLA still rise: an old case's key is earlier
than a fresh case's of the same policy and score.

A case sent to the top of the queue (a re-upload of a banned image: reviews.cases.known_bad)
has its key moved back a century: before every ordinary key, and in their usual order among
themselves.
"""

import math
from datetime import UTC, datetime, timedelta

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


TOP_OF_QUEUE_SHIFT = timedelta(days=36525)
TOP_OF_QUEUE_LINE = datetime(1970, 1, 1, tzinfo=UTC)  # no ordinary key is this early


def priority_key_top(key: datetime) -> datetime:
    """The key that puts a case before every ordinary one; the same again when it is already."""
    return key if priority_is_top(key) else key - TOP_OF_QUEUE_SHIFT


def priority_is_top(key: datetime) -> bool:
    return key < TOP_OF_QUEUE_LINE
