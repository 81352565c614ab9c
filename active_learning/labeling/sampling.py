"""The daily labeling draw: which listings moderators label today, and by which strategy.

The pool is what the ladder closed without any decision: cases routed to `monitor`, and the
detection tier's random sample events routed to `allow` (the only `allow` flags the portal
sees that are not selected by score), from the last LABELING_POOL_DAYS days, newest first, one
per (listing, policy), never a listing already drawn for that policy. Each is asked about its
top policy.

The budget is split evenly across the policies present in the pool (a policy with fewer pool
items than its part gives the rest to the others), and each policy is drawn on its own by
active_learning.ml.strategies.draw with the configured strategy shares. So every policy has its
own random control and "beats random" can be read per policy (`labeling_figures`), including
the rare, high-harm policies that a pool-proportional split would starve. Given the pool, the
split is deterministic, so the inclusion probability the strategy records within its policy is
the item's inclusion probability in the whole draw.

One draw per day (LabelingDraw.day is unique): a second call returns the existing draw and adds
nothing, and two concurrent calls cannot both insert; the loser returns the winner's draw.
"""

import hashlib
import logging
from collections import defaultdict
from datetime import date, datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, Max, OuterRef, Q
from django.utils import timezone

from active_learning.labeling.models import LabelingDraw, LabelingItem
from detection.models import ImageEmbedding, ListingImage, ReferenceItem
from detection.policies import POLICY_CODES
from moderation_portal.core.audit import SYSTEM, AuditAction, audit_record
from reviews.cases.models import Case
from reviews.decisions.models import Decision
from reviews.policies.services import ladder_active

logger = logging.getLogger(__name__)

# Decisions a person made: what "people cleared" means for the hard negatives.
PEOPLE = (Decision.Source.HUMAN, Decision.Source.QA_CORRECTION, Decision.Source.APPEAL)


def decision_threshold(thresholds: dict) -> float:
    """The score where the ladder's outcome turns into a decision about the listing.

    That is `review`: at or above it a flag gets a person's (or the LLM's, or an automatic)
    decision; below it (`monitor`, `allow`) it is closed with none. The pool lies entirely below
    it, so the items nearest to it are the ones whose label tells most about where the boundary
    should be and what the no-decision zone lets through. `monitor` is a watch band, not a
    decision, and the higher tiers (`llm_verify`, `warn`, `remove`) choose between kinds of
    decision, not whether one is made."""
    return float(thresholds["review"])


def day_seed(day: date) -> int:
    """The draw's seed, derived from the day alone: the same day always draws the same items."""
    digest = hashlib.sha256(f"labeling-draw:{day.isoformat()}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def labeling_pool(*, now: datetime | None = None) -> list[dict]:
    """The candidate cases (see the module), newest first, as dicts of the columns the draw
    needs."""
    now = now or timezone.now()
    since = now - timedelta(days=settings.LABELING_POOL_DAYS)
    decided = Decision.objects.filter(case_id=OuterRef("pk"))
    drawn = LabelingItem.objects.filter(
        case__listing_id=OuterRef("listing_id"), policy=OuterRef("policy_id")
    )
    rows = (
        Case.objects.filter(state=Case.State.CLOSED, created_at__gte=since)
        .filter(
            Q(route=Case.Route.MONITOR) | Q(route=Case.Route.ALLOW, detection_event__is_sample=True)
        )
        .exclude(Exists(decided))
        .exclude(Exists(drawn))
        .order_by("-created_at", "-id")
        .values("id", "listing_id", "policy_id", "score", "detection_event__scores")[
            : settings.LABELING_POOL_MAX
        ]
    )
    pool, seen = [], set()
    for row in rows:
        key = (row["listing_id"], row["policy_id"])
        if key in seen:
            continue
        seen.add(key)
        scores = row["detection_event__scores"] or {}
        score = scores.get(row["policy_id"], row["score"])
        pool.append(
            {
                "case_id": row["id"],
                "listing_id": row["listing_id"],
                "policy": row["policy_id"],
                "score": float(score),
            }
        )
    return pool


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def listing_vectors(
    listing_ids: list[int], *, model_version: str | None = None
) -> tuple[str | None, dict[int, np.ndarray]]:
    """Each listing's mean stored image embedding (unit length), in one model version: the
    given one, else the version that covers most of `listing_ids`."""
    rows = ImageEmbedding.objects.filter(
        image__listing_id__in=listing_ids, image__state=ListingImage.State.STORED
    )
    if model_version is not None:
        rows = rows.filter(model_version=model_version)
    per_version: dict[str, dict[int, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    for listing_id, version, vector in rows.values_list(
        "image__listing_id", "model_version", "vector"
    ):
        per_version[version][listing_id].append(np.frombuffer(bytes(vector), dtype=np.float32))
    if not per_version:
        return model_version, {}
    version = model_version or max(sorted(per_version), key=lambda v: len(per_version[v]))
    vectors = per_version.get(version, {})
    ids = sorted(vectors)
    if not ids:
        return version, {}
    means = _unit(np.stack([np.mean(np.stack(vectors[i]), axis=0) for i in ids]))
    return version, dict(zip(ids, means, strict=True))


def cleared_vectors(*, version: str, thresholds: dict[str, float]) -> dict[str, np.ndarray]:
    """Policy -> image vectors of listings people cleared although the model scored them at or
    above the decision threshold (the model's false positives). A case's latest decision by a
    person counts, so a cleared listing that a QA lead corrected to a violation is left out."""
    latest: dict[int, tuple[int, str, str, float]] = {}
    for case_id, listing_id, policy, score, verdict in (
        Decision.objects.filter(source__in=PEOPLE)
        .order_by("-created_at", "-id")
        .values_list("case_id", "case__listing_id", "case__policy_id", "case__score", "verdict")[
            : settings.LABELING_POOL_MAX
        ]
    ):
        latest.setdefault(case_id, (listing_id, policy, verdict, score))
    by_policy: dict[str, set[int]] = defaultdict(set)
    for listing_id, policy, verdict, score in latest.values():
        if verdict == Decision.Verdict.NO_VIOLATION and score >= thresholds.get(policy, 1.0):
            by_policy[policy].add(listing_id)
    wanted = sorted({i for ids in by_policy.values() for i in ids})
    if not wanted:
        return {}
    _, vectors = listing_vectors(wanted, model_version=version)
    return {
        policy: np.stack([vectors[i] for i in sorted(ids) if i in vectors])
        for policy, ids in by_policy.items()
        if any(i in vectors for i in ids)
    }


def violation_vectors(*, version: str, dim: int) -> dict[str, np.ndarray]:
    """Policy -> image vectors of confirmed violations (reference items not withdrawn).

    Reference vectors live in the neighbour space `<image model>|<text model>|text=w`, rows of
    [sqrt(1-w) * image, sqrt(w) * text] (detection.evidence.vectors.combine); the first `dim`
    components, made unit length again, are the image embedding of the same image model, so the
    imported banks count as well as the decisions' images."""
    rows = ReferenceItem.objects.filter(
        model_version__startswith=f"{version}|", withdrawn_at__isnull=True
    ).values_list("policy", "vector")
    by_policy: dict[str, list[np.ndarray]] = defaultdict(list)
    for policy, vector in rows:
        full = np.frombuffer(bytes(vector), dtype=np.float32)
        if len(full) > dim and np.linalg.norm(full[:dim]) > 0:
            by_policy[policy].append(full[:dim])
    return {policy: _unit(np.stack(vecs)) for policy, vecs in by_policy.items()}


def hard_negative_affinity(
    *,
    vectors: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    cleared: np.ndarray | None,
    violations: np.ndarray | None,
) -> np.ndarray:
    """Per row, the highest cosine similarity (never below 0) to (a) a listing people cleared at
    a high score, and, for a row scored below the threshold, (b) a confirmed violation."""
    affinity = np.zeros(len(vectors), dtype=np.float64)
    if cleared is not None and len(cleared):
        affinity = np.maximum(affinity, (vectors @ cleared.T).max(axis=1))
    if violations is not None and len(violations):
        similar = (vectors @ violations.T).max(axis=1)
        affinity = np.maximum(affinity, np.where(scores < threshold, similar, 0.0))
    return np.clip(affinity, 0.0, 1.0)


def split_across_policies(budget: int, sizes: dict[str, int]) -> dict[str, int]:
    """Even parts of `budget` per policy, none above its pool size (water-filling); leftovers of
    an uneven split go to the policies first in POLICY_CODES."""
    order = [p for p in POLICY_CODES if sizes.get(p)] + sorted(
        p for p in sizes if sizes[p] and p not in POLICY_CODES
    )
    parts = dict.fromkeys(order, 0)
    left = budget
    open_ = list(order)
    while left > 0 and open_:
        share, extra = divmod(left, len(open_))
        for position, policy in enumerate(open_):
            give = min(share + (1 if position < extra else 0), sizes[policy] - parts[policy])
            parts[policy] += give
            left -= give
        open_ = [p for p in open_ if parts[p] < sizes[p]]
    return parts


def labeling_draw(*, day: date, budget: int, seed: int | None = None) -> LabelingDraw:
    """Draw `day`'s labeling items (see the module); returns the day's draw, existing or new."""
    existing = LabelingDraw.objects.filter(day=day).first()
    if existing is not None:
        return existing
    from active_learning.ml.strategies import draw as strategies_draw

    seed = day_seed(day) if seed is None else seed
    shares = dict(settings.LABELING_STRATEGY_SHARES)
    now = timezone.now()
    pool = labeling_pool(now=now)
    ladder = ladder_active()
    thresholds = {code: decision_threshold(row) for code, row in ladder.thresholds.items()}
    version, vectors = listing_vectors(sorted({row["listing_id"] for row in pool}))
    dim = len(next(iter(vectors.values()))) if vectors else 0
    cleared = cleared_vectors(version=version, thresholds=thresholds) if version else {}
    violations = violation_vectors(version=version, dim=dim) if version and dim else {}

    by_policy: dict[str, list[dict]] = defaultdict(list)
    for row in pool:
        if row["policy"] in thresholds:
            by_policy[row["policy"]].append(row)
    parts = split_across_policies(budget, {p: len(rows) for p, rows in by_policy.items()})
    chosen: list[tuple[dict, str, float]] = []
    for offset, (policy, part) in enumerate(parts.items()):
        rows = by_policy[policy]
        if part <= 0:
            continue
        scores = np.array([row["score"] for row in rows], dtype=np.float64)
        threshold = thresholds[policy]
        have = [vectors.get(row["listing_id"]) for row in rows]
        embeddings = affinity = None
        if all(v is not None for v in have):
            # The embedding space is used only when every candidate has a vector in it: a
            # missing row cannot be placed, and leaving it out would bias the pool.
            embeddings = np.stack(have)
            affinity = hard_negative_affinity(
                vectors=embeddings,
                scores=scores,
                threshold=threshold,
                cleared=cleared.get(policy),
                violations=violations.get(policy),
            )
        picks = strategies_draw(
            probabilities=scores,
            thresholds=np.full(len(rows), threshold),
            embeddings=embeddings,
            hard_negative_affinity=affinity,
            budget=part,
            shares=shares,
            seed=seed + offset,
        )
        seen: set[int] = set()
        for pick in picks:
            if pick.index not in seen:
                seen.add(pick.index)
                chosen.append((rows[pick.index], pick.strategy, pick.inclusion_probability))

    # The queue order is shuffled, so the position never tells a labeler which strategy (or how
    # uncertain a score) brought the item.
    order = np.random.default_rng(seed).permutation(len(chosen))
    counts: dict[str, int] = defaultdict(int)
    for _, strategy, _ in chosen:
        counts[strategy] += 1
    try:
        with transaction.atomic():
            draw = LabelingDraw.objects.create(
                day=day,
                budget=budget,
                shares=shares,
                counts=dict(sorted(counts.items())),
                pool_size=len(pool),
                created_at=now,
            )
            # Ranks run on across draws, so the queue is first in, first out over days.
            base = (LabelingItem.objects.aggregate(last=Max("rank"))["last"] or 0) + 1
            LabelingItem.objects.bulk_create(
                [
                    LabelingItem(
                        draw=draw,
                        case_id=row["case_id"],
                        policy=row["policy"],
                        score=row["score"],
                        threshold=thresholds[row["policy"]],
                        strategy=strategy,
                        inclusion_probability=probability,
                        rank=base + int(rank),
                        created_at=now,
                    )
                    for (row, strategy, probability), rank in zip(chosen, order, strict=True)
                ]
            )
            audit_record(
                action=AuditAction.LABELING_DRAWN,
                obj=draw,
                label=SYSTEM,
                data={
                    "day": day.isoformat(),
                    "budget": budget,
                    "pool": len(pool),
                    "counts": draw.counts,
                    "shares": shares,
                },
            )
    except IntegrityError:
        # Another worker drew this day first (the unique day): that draw is the day's.
        return LabelingDraw.objects.get(day=day)
    logger.info(
        "labeling draw %s: %d items from a pool of %d (%s)",
        day,
        len(chosen),
        len(pool),
        ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
    )
    return draw
