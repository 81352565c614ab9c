"""How the last N days of cases would have routed under a draft ladder, beside how they did."""

from collections import Counter
from datetime import timedelta

from django.utils import timezone

from reviews.cases.models import Case
from reviews.policies import ladder as ladder_rules
from reviews.policies.ladder import REVIEWED_ROUTES, ROUTES

MAX_CASES = 500_000


def backtest(*, draft: dict, active: dict, days: int) -> dict:
    since = timezone.now() - timedelta(days=days)
    rows = (
        Case.objects.filter(created_at__gte=since)
        .order_by("-created_at")
        .values_list("policy_id", "score")[:MAX_CASES]
    )
    moves: Counter = Counter()
    per_policy: dict[str, Counter] = {}
    total = 0
    for policy, score in rows.iterator(chunk_size=5000):
        total += 1
        before = ladder_rules.route(score, active[policy]).route
        after = ladder_rules.route(score, draft[policy]).route
        moves[(before, after)] += 1
        counter = per_policy.setdefault(policy, Counter())
        counter[("before", before)] += 1
        counter[("after", after)] += 1
    changed = sum(n for (before, after), n in moves.items() if before != after)
    human_before = sum(n for (before, _), n in moves.items() if before in REVIEWED_ROUTES)
    human_after = sum(n for (_, after), n in moves.items() if after in REVIEWED_ROUTES)
    return {
        "days": days,
        "cases": total,
        "truncated": total >= MAX_CASES,
        "changed": changed,
        "matrix": [[moves[(b, a)] for a in ROUTES] for b in ROUTES],
        "routes": [str(r) for r in ROUTES],
        "per_policy": {
            code: {
                "before": {r: c[("before", r)] for r in ROUTES},
                "after": {r: c[("after", r)] for r in ROUTES},
            }
            for code, c in sorted(per_policy.items())
        },
        "human_review_before": human_before,
        "human_review_after": human_after,
    }
