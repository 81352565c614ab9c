"""The labeling queue's reads: the waiting items, one item, and the figures that say whether
each strategy beats the random control, per policy."""

from collections import defaultdict

from django.conf import settings
from django.db.models import Count, QuerySet
from django.http import Http404

from active_learning.labeling.models import LabelingItem

RANDOM = "random"


def labeling_waiting() -> QuerySet[LabelingItem]:
    """Waiting items in queue order (first drawn first; a skipped item goes to the end)."""
    return LabelingItem.objects.filter(state=LabelingItem.State.PENDING).order_by("rank", "id")


def labeling_item_get(*, item_id: int) -> LabelingItem:
    item = (
        LabelingItem.objects.select_related("draw", "case__listing", "claimed_by", "answered_by")
        .filter(pk=item_id)
        .first()
    )
    if item is None:
        raise Http404("no such labeling item")
    return item


def _share(violations: int, answered: int) -> float | None:
    return violations / answered if answered else None


def labeling_figures() -> list[dict]:
    """Per policy and strategy: items drawn, answered (violation or not; `unsure` gives no
    label and is counted apart), found violating, and that share beside the random control's.

    The random control's share is also the unbiased estimate of how much of what the other
    strategies left in the pool violates (its picks are a simple random sample of it, each with
    the same inclusion probability); the deterministic strategies' shares are not estimates of
    anything but their own yield. One aggregate query."""
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in LabelingItem.objects.values("policy", "strategy", "answer").annotate(n=Count("id")):
        counts[(row["policy"], row["strategy"])][row["answer"] or "waiting"] += row["n"]
    known = [s for s in settings.LABELING_STRATEGY_SHARES if s != RANDOM]
    out = []
    for policy in sorted({policy for policy, _ in counts}):
        strategies = sorted(
            {s for p, s in counts if p == policy},
            key=lambda s: (s == RANDOM, known.index(s) if s in known else len(known), s),
        )
        random = counts.get((policy, RANDOM), {})
        random_share = _share(
            random.get(LabelingItem.Answer.VIOLATION, 0),
            random.get(LabelingItem.Answer.VIOLATION, 0)
            + random.get(LabelingItem.Answer.NO_VIOLATION, 0),
        )
        rows = []
        for strategy in strategies:
            c = counts[(policy, strategy)]
            violations = c.get(LabelingItem.Answer.VIOLATION, 0)
            answered = violations + c.get(LabelingItem.Answer.NO_VIOLATION, 0)
            share = _share(violations, answered)
            rows.append(
                {
                    "strategy": strategy,
                    "drawn": sum(c.values()),
                    "answered": answered,
                    "violations": violations,
                    "unsure": c.get(LabelingItem.Answer.UNSURE, 0),
                    "share": share,
                    "beats_random": None
                    if strategy == RANDOM or share is None or random_share is None
                    else share > random_share,
                }
            )
        out.append({"policy": policy, "random_share": random_share, "strategies": rows})
    return out
