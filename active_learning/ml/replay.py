"""Offline replay of the portal's sampling on a labeled data set (Django-free).

A logistic-regression learner (modAL's ActiveLearner) starts from a few seed labels and, round
after round, asks the portal's draw (active_learning.ml.strategies, the code the live daily draw
runs) for a batch to label; the replay reveals those labels from the data set and refits. After
each round it measures F1 on a held-out test set. The learning curves of the strategies, each
alone and mixed as the portal is configured, say how many labels each needs to reach the F1 that
random sampling reaches with the whole budget.

The data set is an .npz with ``X`` (n, d) features, ``y`` (n,) 0/1 labels and optionally ``t``
(n,) a time order: with ``t`` the latest part is the test set (as in production, where the model
is judged on what comes after its labels), without it a stratified split with a fixed seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from modAL.models import ActiveLearner
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from active_learning.ml.strategies import STRATEGIES, portal_query_strategy

MIX = "mix"
DEFAULT_SHARES: dict[str, float] = {
    "uncertainty": 0.45,
    "hard_negative": 0.05,
    "diversity": 0.4,
    "random": 0.1,
}


@dataclass(frozen=True)
class Dataset:
    X: NDArray[np.float64]
    y: NDArray[np.int64]
    t: NDArray[Any] | None = None


@dataclass(frozen=True)
class ReplayConfig:
    seed_labels: int = 20
    batch: int = 10
    rounds: int = 20
    strategies: tuple[str, ...] = (*STRATEGIES, MIX)
    repeats: int = 3
    shares: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SHARES))
    test_fraction: float = 0.3
    seed: int = 0
    threshold: float = 0.5

    def __post_init__(self) -> None:
        unknown = sorted(set(self.strategies) - {*STRATEGIES, MIX})
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; known: {[*STRATEGIES, MIX]}")
        if not self.strategies:
            raise ValueError("no strategies to replay")
        for name, value in (("seed_labels", self.seed_labels), ("batch", self.batch)):
            if value < 2 and name == "seed_labels":
                raise ValueError("seed_labels must be >= 2 (one of each class)")
            if value < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.rounds < 1 or self.repeats < 1:
            raise ValueError("rounds and repeats must be >= 1")
        if not 0 < self.test_fraction < 1:
            raise ValueError("test_fraction must be between 0 and 1")


def load_dataset(path: str | Path) -> Dataset:
    with np.load(path, allow_pickle=False) as data:
        missing = [key for key in ("X", "y") if key not in data]
        if missing:
            raise ValueError(f"{path}: no {' or '.join(missing)} array")
        X = np.asarray(data["X"], dtype=np.float64)
        y = np.asarray(data["y"])
        t = np.asarray(data["t"]) if "t" in data else None
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y) or (t is not None and t.shape != y.shape):
        raise ValueError(f"{path}: X must be (n, d), y and t (n,); got {X.shape}, {y.shape}")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError(f"{path}: y must be 0/1")
    return Dataset(X, y.astype(np.int64), t)


def split(
    data: Dataset, *, test_fraction: float, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Row numbers of the pool (to label from) and the test set."""
    rows = np.arange(len(data.y))
    if data.t is not None:
        order = np.argsort(data.t, kind="stable")
        cut = len(order) - max(1, round(len(order) * test_fraction))
        return np.sort(order[:cut]), np.sort(order[cut:])
    pool, test = train_test_split(
        rows, test_size=test_fraction, stratify=data.y, random_state=seed, shuffle=True
    )
    return np.sort(pool), np.sort(test)


def _seed_rows(y: NDArray[np.int64], n: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """A random seed set of n pool rows holding at least one of each class (a logistic
    regression needs both; the portal starts from some confirmed violations)."""
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if len(positives) == 0 or len(negatives) == 0:
        raise ValueError("the pool must hold items of both labels")
    first = [int(rng.choice(positives)), int(rng.choice(negatives))]
    rest = np.setdiff1d(np.arange(len(y)), first)
    chosen = rng.choice(rest, size=min(n - 2, len(rest)), replace=False)
    return np.concatenate([np.array(first, dtype=np.int64), chosen.astype(np.int64)])


def _one_run(
    X_pool: NDArray[np.float64],
    y_pool: NDArray[np.int64],
    X_test: NDArray[np.float64],
    y_test: NDArray[np.int64],
    seed_rows: NDArray[np.int64],
    shares: Mapping[str, float],
    config: ReplayConfig,
    seed: int,
) -> list[tuple[int, float]]:
    labeled = np.zeros(len(y_pool), dtype=bool)
    labeled[seed_rows] = True

    def positives() -> NDArray[np.float64]:
        return np.asarray(X_pool[labeled & (y_pool == 1)], dtype=np.float64)

    def negatives() -> NDArray[np.float64]:
        return np.asarray(X_pool[labeled & (y_pool == 0)], dtype=np.float64)

    learner = ActiveLearner(
        # liblinear: a few ms per fit on a few hundred labels, where lbfgs takes ten times that
        estimator=LogisticRegression(
            solver="liblinear", class_weight="balanced", max_iter=2000, random_state=seed
        ),
        query_strategy=portal_query_strategy(
            shares,
            seed=seed,
            threshold=config.threshold,
            positive_embeddings=positives,
            negative_embeddings=negatives,
        ),
        X_training=X_pool[seed_rows],
        y_training=y_pool[seed_rows],
    )

    def measure() -> tuple[int, float]:
        predicted = (learner.predict_proba(X_test)[:, 1] >= config.threshold).astype(int)
        return int(labeled.sum()), float(f1_score(y_test, predicted, zero_division=0))

    curve = [measure()]
    for _ in range(config.rounds):
        unlabeled = np.flatnonzero(~labeled)
        if len(unlabeled) == 0:
            break
        indices, _rows = learner.query(X_pool[unlabeled], n_instances=config.batch)
        chosen = unlabeled[np.asarray(indices, dtype=np.int64)]
        labeled[chosen] = True
        learner.teach(X_pool[chosen], y_pool[chosen])
        curve.append(measure())
    return curve


def first_reaching(curve: Sequence[Sequence[float]], target: float) -> int | None:
    """The labels at the first point of `curve` whose F1 reaches `target`."""
    for labels, f1 in curve:
        if f1 >= target - 1e-9:
            return int(labels)
    return None


def run_replay(data: Dataset, config: ReplayConfig) -> dict[str, Any]:
    """Learning curves per strategy, averaged over `config.repeats` seed sets."""
    # One thread: thousands of small fits, where BLAS and OpenMP threads only add overhead.
    # modAL 0.4.2.1 calls check_array(force_all_finite=...), which scikit-learn 1.7 warns about.
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*force_all_finite", category=FutureWarning)
        return _run_replay(data, config)


def _run_replay(data: Dataset, config: ReplayConfig) -> dict[str, Any]:
    pool_rows, test_rows = split(data, test_fraction=config.test_fraction, seed=config.seed)
    scaler = StandardScaler().fit(data.X[pool_rows])
    X_pool, y_pool = scaler.transform(data.X[pool_rows]), data.y[pool_rows]
    X_test, y_test = scaler.transform(data.X[test_rows]), data.y[test_rows]
    if not (y_test == 1).any():
        raise ValueError("the test set holds no positives: F1 is undefined")
    curves: dict[str, list[list[tuple[int, float]]]] = {name: [] for name in config.strategies}
    for repeat in range(config.repeats):
        seed = config.seed + repeat
        # the same seed labels for every strategy in a repeat: a paired comparison
        seed_rows = _seed_rows(y_pool, config.seed_labels, np.random.default_rng(seed))
        for name in config.strategies:
            shares = dict(config.shares) if name == MIX else {name: 1.0}
            curves[name].append(
                _one_run(X_pool, y_pool, X_test, y_test, seed_rows, shares, config, seed)
            )
    averaged = {name: _average(runs) for name, runs in curves.items()}
    target = averaged["random"][-1][1] if "random" in averaged else None
    return {
        "strategies": {
            name: {
                "curve": curve,
                "final_f1": curve[-1][1],
                "labels_to_reach_random_final_f1": (
                    None if target is None else first_reaching(curve, target)
                ),
            }
            for name, curve in averaged.items()
        },
        "random_final_f1": target,
        "random_labels": averaged["random"][-1][0] if "random" in averaged else None,
        "dataset": {
            "pool": len(pool_rows),
            "test": len(test_rows),
            "pool_positives": int(y_pool.sum()),
            "test_positives": int(y_test.sum()),
            "split": "time" if data.t is not None else "stratified",
        },
        "config": {
            "seed_labels": config.seed_labels,
            "batch": config.batch,
            "rounds": config.rounds,
            "repeats": config.repeats,
            "shares": dict(config.shares),
            "threshold": config.threshold,
            "learner": "modAL ActiveLearner(LogisticRegression(liblinear, class_weight=balanced))",
        },
    }


def _average(runs: list[list[tuple[int, float]]]) -> list[list[float]]:
    """Pointwise mean over repeats (label counts agree unless a pool ran out; then the
    shortest run decides the length and the counts are averaged too)."""
    length = min(len(run) for run in runs)
    out: list[list[float]] = []
    for i in range(length):
        labels = float(np.mean([run[i][0] for run in runs]))
        f1 = float(np.mean([run[i][1] for run in runs]))
        out.append([round(labels) if labels.is_integer() else round(labels, 1), round(f1, 4)])
    return out
