"""How cases route under a ladder: the last N days under a draft beside the active version, and
(`reviews.policies.challengers`) a challenger model's scores beside the champion's under the
active version. Both count with `routing_tally`, so a what-if and a backtest agree by
construction."""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from django.utils import timezone

from reviews.cases.models import Case
from reviews.policies import ladder as ladder_rules
from reviews.policies.ladder import REVIEWED_ROUTES, ROUTES

MAX_CASES = 500_000

# A flag as a ladder sees it: the policy it is routed under and its score for that policy.
Row = tuple[str, float]


@dataclass
class RoutingTally:
    """Routes of the same flags on two sides (`before` and `after`)."""

    total: int = 0
    moves: Counter = field(default_factory=Counter)  # (route before, route after) → flags
    per_policy: dict[str, Counter] = field(default_factory=dict)  # policy → (side, route) → n

    def side(self, name: str) -> Counter:
        """Flags per route on one side ("before" or "after"), all policies together."""
        out: Counter = Counter()
        for counter in self.per_policy.values():
            for (side, route), n in counter.items():
                if side == name:
                    out[route] += n
        return out


def routing_tally(pairs: Iterable[tuple[Row, Row]], *, before: dict, after: dict) -> RoutingTally:
    """Route each pair's first row under the `before` ladder and its second under `after`
    (thresholds by policy code), counting the moves and, per policy, each side's routes.

    The ladder backtest pairs a case's row with itself under two ladders; the challenger what-if
    pairs the champion's row with the challenger's under one ladder."""
    tally = RoutingTally()
    for (policy_before, score_before), (policy_after, score_after) in pairs:
        tally.total += 1
        route_before = ladder_rules.route(score_before, before[policy_before]).route
        route_after = ladder_rules.route(score_after, after[policy_after]).route
        tally.moves[(route_before, route_after)] += 1
        tally.per_policy.setdefault(policy_before, Counter())[("before", route_before)] += 1
        tally.per_policy.setdefault(policy_after, Counter())[("after", route_after)] += 1
    return tally


def move_matrix(tally: RoutingTally) -> list[list[int]]:
    """moves[before][after] in the order of ROUTES."""
    return [[tally.moves[(b, a)] for a in ROUTES] for b in ROUTES]


def reviewed(counts: Counter) -> int:
    return sum(n for route, n in counts.items() if route in REVIEWED_ROUTES)


def backtest(*, draft: dict, active: dict, days: int) -> dict:
    since = timezone.now() - timedelta(days=days)
    rows = (
        Case.objects.filter(created_at__gte=since)
        .order_by("-created_at")
        .values_list("policy_id", "score")[:MAX_CASES]
    )
    tally = routing_tally(
        ((row, row) for row in rows.iterator(chunk_size=5000)), before=active, after=draft
    )
    changed = sum(n for (before, after), n in tally.moves.items() if before != after)
    return {
        "days": days,
        "cases": tally.total,
        "truncated": tally.total >= MAX_CASES,
        "changed": changed,
        "matrix": move_matrix(tally),
        "routes": [str(r) for r in ROUTES],
        "per_policy": {
            code: {
                "before": {r: c[("before", r)] for r in ROUTES},
                "after": {r: c[("after", r)] for r in ROUTES},
            }
            for code, c in sorted(tally.per_policy.items())
        },
        "human_review_before": reviewed(tally.side("before")),
        "human_review_after": reviewed(tally.side("after")),
    }
