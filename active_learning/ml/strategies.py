"""The portal's sampling for labeling: which listings people label next, and why.

One function, `draw`, serves both the live daily draw (active_learning.labeling calls it with the
detection model's scores) and the offline replay (active_learning.ml.replay calls it through
`portal_query_strategy`, a modAL query strategy). Django-free: numpy, scikit-learn and modAL only.

Strategies, drawn in this order and without replacement across them (an item is picked once):

- ``hard_negative``: the highest ``hard_negative_affinity`` (items that look like the model's
  mistakes: near listings people cleared at a high score, or similar to a confirmed violation
  yet scored low). Items with affinity 0 are not candidates.
- ``uncertainty``: the smallest classification margin around the policy's threshold, as modAL
  measures it (see `threshold_margin`).
- ``diversity``: the ``beta * k`` most uncertain of what is left, clustered into ``k`` groups by
  k-means (fixed random_state) in the embedding space; the item nearest each centre. Without
  embeddings, the next ``k`` in uncertainty order.
- ``random``: uniform, without replacement, from what is left.

Quota that a strategy cannot fill (no hard-negative candidates, a pool smaller than the budget)
passes to the next strategy in that order, so the draw is as large as the pool allows.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from modAL.uncertainty import classifier_margin
from numpy.typing import NDArray
from sklearn.base import BaseEstimator
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning

STRATEGIES = ("uncertainty", "hard_negative", "diversity", "random")
# The order in which strategies take their picks: random last, so that its inclusion
# probabilities are exact over what the others left.
DRAW_ORDER = ("hard_negative", "uncertainty", "diversity", "random")


@dataclass(frozen=True)
class Pick:
    index: int  # into the candidate arrays
    strategy: str  # one of STRATEGIES
    inclusion_probability: float  # the probability this item had of being drawn by its strategy


def split_budget(budget: int, shares: Mapping[str, float]) -> dict[str, int]:
    """Whole numbers of items per strategy that sum to `budget`, in proportion to `shares`
    (largest-remainder rounding; ties go to the strategy earlier in STRATEGIES)."""
    if budget < 0:
        raise ValueError(f"budget must be >= 0, not {budget}")
    unknown = sorted(set(shares) - set(STRATEGIES))
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; known: {list(STRATEGIES)}")
    if any(not np.isfinite(share) or share < 0 for share in shares.values()):
        raise ValueError(f"shares must be finite and >= 0: {dict(shares)}")
    total = float(sum(shares.values()))
    if total <= 0:
        raise ValueError(f"shares must not all be zero: {dict(shares)}")
    names = [name for name in STRATEGIES if name in shares]
    exact = {name: budget * shares[name] / total for name in names}
    quota = {name: int(np.floor(exact[name])) for name in names}
    left = budget - sum(quota.values())
    by_remainder = sorted(names, key=lambda n: (-(exact[n] - quota[n]), STRATEGIES.index(n)))
    for name in by_remainder[:left]:
        quota[name] += 1
    return {name: quota.get(name, 0) for name in STRATEGIES}


def recentre(probabilities: NDArray[Any], thresholds: NDArray[Any]) -> NDArray[np.float64]:
    """Map each probability so that its threshold lands on 0.5 (piecewise linear, monotone):
    an item at its policy's threshold is the least certain one, whatever the threshold is."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    t = np.clip(np.asarray(thresholds, dtype=np.float64), 1e-9, 1 - 1e-9)
    return np.where(p <= t, 0.5 * p / t, 0.5 + 0.5 * (p - t) / (1 - t))


class _ThresholdCentredScores(BaseEstimator):  # type: ignore[misc]
    """A stand-in classifier for modAL: its "samples" are row numbers, and its predict_proba is
    the re-centred violation probability of that row as two classes (not, violation)."""

    def __init__(self, centred: NDArray[np.float64]) -> None:
        self.centred = centred

    def predict_proba(self, rows: NDArray[Any]) -> NDArray[np.float64]:
        q = self.centred[np.asarray(rows, dtype=np.int64).ravel()]
        return np.column_stack([1.0 - q, q])


def threshold_margin(probabilities: NDArray[Any], thresholds: NDArray[Any]) -> NDArray[np.float64]:
    """modAL's classification margin (top-1 minus top-2 class probability) of each item, with
    its probability re-centred on its threshold: 0 at the threshold, 1 far from it."""
    centred = recentre(probabilities, thresholds)
    rows = np.arange(len(centred)).reshape(-1, 1)
    margin = classifier_margin(_ThresholdCentredScores(centred), rows)
    return np.asarray(margin, dtype=np.float64)


def draw(
    *,
    probabilities: NDArray[Any],
    thresholds: NDArray[Any],
    embeddings: NDArray[Any] | None,
    hard_negative_affinity: NDArray[Any] | None,
    budget: int,
    shares: Mapping[str, float],
    seed: int,
    beta: int = 5,
) -> list[Pick]:
    """Pick up to `budget` items (indices into the candidate arrays), split across strategies by
    `shares`. The same inputs and seed give the same picks, in the same order.

    Inclusion probabilities: a random pick records k / N, where k is the random quota and N the
    number of items the other strategies left; that is exact for simple random sampling without
    replacement over those N. The deterministic strategies (uncertainty, hard_negative,
    diversity) record 1.0: given the scores, their items were certain to be drawn, and items they
    pass over had probability 0, so their labels say nothing unbiased about the pool.
    Unbiased estimates (prevalence, precision at the threshold) use the random share alone,
    weighting each random pick by 1 / inclusion_probability (Horvitz-Thompson) over the items the
    deterministic strategies left.
    """
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    n = len(p)
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (n,))
    if embeddings is not None and len(embeddings) != n:
        raise ValueError(f"embeddings have {len(embeddings)} rows for {n} candidates")
    if hard_negative_affinity is not None and len(hard_negative_affinity) != n:
        raise ValueError(f"hard_negative_affinity has {len(hard_negative_affinity)} for {n}")
    if beta < 1:
        raise ValueError(f"beta must be >= 1, not {beta}")
    quota = split_budget(min(budget, n), shares)
    # uncertainty order: smallest margin first, ties by index (stable), so the draw is exact
    uncertainty_order = np.argsort(threshold_margin(p, t), kind="stable")
    taken = np.zeros(n, dtype=bool)
    picks: list[Pick] = []
    carry = 0

    def take(indices: Sequence[int] | NDArray[Any], strategy: str, probability: float) -> None:
        for index in indices:
            taken[index] = True
            picks.append(Pick(int(index), strategy, probability))

    for strategy in DRAW_ORDER:
        k = quota[strategy] + carry
        chosen: list[int] = []
        if k > 0 and strategy == "hard_negative" and hard_negative_affinity is not None:
            affinity = np.asarray(hard_negative_affinity, dtype=np.float64).ravel()
            order = np.argsort(-affinity, kind="stable")
            chosen = [int(i) for i in order if not taken[i] and affinity[i] > 0][:k]
        elif k > 0 and strategy == "uncertainty":
            chosen = [int(i) for i in uncertainty_order if not taken[i]][:k]
        elif k > 0 and strategy == "diversity":
            untaken = uncertainty_order[~taken[uncertainty_order]]
            chosen = _diverse(untaken, embeddings, k, beta)
        elif k > 0 and strategy == "random":
            left = np.flatnonzero(~taken)
            k = min(k, len(left))
            if k:
                rng = np.random.default_rng(seed)
                chosen = [int(i) for i in rng.choice(left, size=k, replace=False)]
                take(chosen, strategy, k / len(left))
            carry = 0
            continue
        take(chosen, strategy, 1.0)
        carry = k - len(chosen)
    return picks


def _diverse(
    candidates: NDArray[Any], embeddings: NDArray[Any] | None, k: int, beta: int
) -> list[int]:
    """`candidates` in uncertainty order; the item nearest each of k k-means centres among the
    beta * k most uncertain, in the order of the centres' most uncertain member."""
    pool = candidates[: beta * k]
    if embeddings is None or len(pool) <= k:
        return [int(i) for i in pool[:k]]
    points = np.asarray(embeddings, dtype=np.float64)[pool]
    # a fixed random_state: the same candidates give the same clusters whatever the draw's seed
    with warnings.catch_warnings():
        # duplicates (re-listed items) leave fewer distinct clusters than k; the loop below
        # still takes k distinct items
        warnings.simplefilter("ignore", ConvergenceWarning)
        kmeans = KMeans(n_clusters=k, n_init=3, random_state=0).fit(points)
    distances = kmeans.transform(points)  # (len(pool), k)
    chosen: list[int] = []
    used = np.zeros(len(pool), dtype=bool)
    for centre in range(k):
        for row in np.argsort(distances[:, centre], kind="stable"):
            if not used[row]:
                used[row] = True
                chosen.append(int(pool[row]))
                break
    return chosen


# --- the learner-facing side, for the offline replay -------------------------------------------


def hard_negative_affinity_from_labels(
    probabilities: NDArray[Any],
    thresholds: NDArray[Any],
    pool_embeddings: NDArray[Any],
    positive_embeddings: NDArray[Any],
    negative_embeddings: NDArray[Any] | None = None,
) -> NDArray[np.float64]:
    """Affinity for the replay, where the labels so far stand in for what people decided:
    items that look like the model's mistakes.

    - scored below the threshold yet near a labeled positive (a violation the model misses):
      (how far below, 0..1) * (similarity to the nearest labeled positive);
    - scored above the threshold yet near a labeled negative (what people would clear at a high
      score): (how far above, 0..1) * (similarity to the nearest labeled negative).

    Similarity is 1 / (1 + d / median d) in the embedding space, in (0, 1]; the affinity is the
    larger of the two, 0 for an item near neither kind of label.
    """
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    t = np.clip(np.broadcast_to(np.asarray(thresholds, dtype=np.float64), p.shape), 1e-9, 1 - 1e-9)
    pool = np.asarray(pool_embeddings, dtype=np.float64)
    below = np.clip((t - p) / t, 0.0, 1.0) * _similarity(pool, positive_embeddings)
    above = np.zeros(len(p))
    if negative_embeddings is not None:
        above = np.clip((p - t) / (1 - t), 0.0, 1.0) * _similarity(pool, negative_embeddings)
    return np.asarray(np.maximum(below, above), dtype=np.float64)


def _similarity(pool: NDArray[np.float64], labeled: NDArray[Any]) -> NDArray[np.float64]:
    """1 / (1 + d / median d), d the distance from each pool item to its nearest labeled one."""
    points = np.asarray(labeled, dtype=np.float64)
    if len(points) == 0 or len(pool) == 0:
        return np.zeros(len(pool))
    squared = (pool**2).sum(axis=1)[:, None] - 2 * pool @ points.T + (points**2).sum(axis=1)[None]
    nearest = np.sqrt(np.clip(squared.min(axis=1), 0.0, None))
    scale = float(np.median(nearest)) or 1.0
    return np.asarray(1.0 / (1.0 + nearest / scale), dtype=np.float64)


QueryStrategy = Callable[..., tuple[NDArray[np.int64], list[Pick]]]


def portal_query_strategy(
    shares: Mapping[str, float],
    *,
    seed: int,
    threshold: float = 0.5,
    beta: int = 5,
    positive_embeddings: Callable[[], NDArray[Any]] | None = None,
    negative_embeddings: Callable[[], NDArray[Any]] | None = None,
) -> QueryStrategy:
    """The portal's draw as a modAL query strategy: ``ActiveLearner(...,
    query_strategy=portal_query_strategy(shares, seed=...))``, then
    ``learner.query(X_pool, n_instances=k)``. The fitted classifier's predict_proba gives the
    probabilities, X_pool is the embedding space, and `positive_embeddings` and
    `negative_embeddings` (called at each query) give the labeled items for the hard-negative
    affinity (`hard_negative_affinity_from_labels`; no hard negatives without them).

    It returns (indices, picks), the shape modAL's query unpacks as (result, metrics): with
    ``return_metrics=True`` the learner hands back the picks with their strategies.
    """
    calls = [0]

    def query(
        classifier: Any, X_pool: NDArray[Any], n_instances: int = 1
    ) -> tuple[NDArray[np.int64], list[Pick]]:
        pool = np.asarray(X_pool, dtype=np.float64)
        probabilities = np.asarray(classifier.predict_proba(pool), dtype=np.float64)[:, 1]
        thresholds = np.full(len(pool), threshold)
        affinity = None
        if positive_embeddings is not None:
            affinity = hard_negative_affinity_from_labels(
                probabilities,
                thresholds,
                pool,
                positive_embeddings(),
                None if negative_embeddings is None else negative_embeddings(),
            )
        # a fresh random stream per query, reproducible from the seed and the query's number
        calls[0] += 1
        picks = draw(
            probabilities=probabilities,
            thresholds=thresholds,
            embeddings=pool,
            hard_negative_affinity=affinity,
            budget=n_instances,
            shares=shares,
            seed=seed * 1_000_003 + calls[0],
            beta=beta,
        )
        return np.array([pick.index for pick in picks], dtype=np.int64), picks

    return query
