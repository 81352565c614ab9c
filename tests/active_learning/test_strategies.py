"""The portal's sampling (active_learning.ml.strategies), used by the daily draw and the replay."""

from collections import Counter

import numpy as np
import pytest

from active_learning.ml.strategies import (
    STRATEGIES,
    Pick,
    draw,
    hard_negative_affinity_from_labels,
    portal_query_strategy,
    split_budget,
    threshold_margin,
)

MIX = {"uncertainty": 0.4, "hard_negative": 0.2, "diversity": 0.3, "random": 0.1}


def _pool(n=200, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "probabilities": rng.uniform(0, 1, n),
        "thresholds": np.full(n, 0.5),
        "embeddings": rng.normal(size=(n, d)),
        "hard_negative_affinity": rng.uniform(0, 1, n),
    }


def test_budget_split_uses_largest_remainders():
    assert split_budget(10, MIX) == {
        "uncertainty": 4,
        "hard_negative": 2,
        "diversity": 3,
        "random": 1,
    }
    # exact 2.8, 1.4, 2.1, 0.7: floors 2, 1, 2, 0; the two largest remainders (.8, .7) get one
    assert split_budget(7, MIX) == {
        "uncertainty": 3,
        "hard_negative": 1,
        "diversity": 2,
        "random": 1,
    }
    # a tie goes to the strategy listed first in STRATEGIES
    assert split_budget(3, {"random": 1, "uncertainty": 1}) == {
        "uncertainty": 2,
        "hard_negative": 0,
        "diversity": 0,
        "random": 1,
    }
    assert split_budget(0, MIX) == dict.fromkeys(STRATEGIES, 0)


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ({"uncertain": 1.0}, "unknown strategies"),
        ({"random": -1.0}, "finite and >= 0"),
        ({"random": float("nan")}, "finite and >= 0"),
        ({"random": 0.0}, "all be zero"),
    ],
)
def test_bad_shares_are_refused(shares, message):
    with pytest.raises(ValueError, match=message):
        split_budget(5, shares)


def test_same_inputs_and_seed_give_the_same_picks():
    first = draw(**_pool(), budget=30, shares=MIX, seed=7)
    again = draw(**_pool(), budget=30, shares=MIX, seed=7)
    other_seed = draw(**_pool(), budget=30, shares=MIX, seed=8)
    assert first == again
    assert all(isinstance(pick, Pick) for pick in first)
    # only the random share depends on the seed
    assert [p for p in first if p.strategy != "random"] == [
        p for p in other_seed if p.strategy != "random"
    ]
    assert {p.index for p in first if p.strategy == "random"} != {
        p.index for p in other_seed if p.strategy == "random"
    }


def test_the_budget_is_split_by_shares_without_duplicates():
    picks = draw(**_pool(), budget=50, shares=MIX, seed=1)
    assert len(picks) == 50
    assert len({p.index for p in picks}) == 50
    assert Counter(p.strategy for p in picks) == {
        "uncertainty": 20,
        "hard_negative": 10,
        "diversity": 15,
        "random": 5,
    }


def test_a_budget_beyond_the_pool_takes_every_item_once():
    picks = draw(**_pool(n=12), budget=40, shares=MIX, seed=3)
    assert sorted(p.index for p in picks) == list(range(12))


def test_inclusion_probabilities_are_one_for_ranked_picks_and_k_over_n_for_random():
    picks = draw(**_pool(n=200), budget=50, shares=MIX, seed=1)
    ranked = [p for p in picks if p.strategy != "random"]
    random_picks = [p for p in picks if p.strategy == "random"]
    assert {p.inclusion_probability for p in ranked} == {1.0}
    # 5 random picks from the 200 - 45 items the other strategies left
    assert {p.inclusion_probability for p in random_picks} == {5 / 155}


def test_random_inclusion_probability_matches_the_draw_frequency():
    n, budget = 20, 8
    pool = _pool(n=n)
    shares = {"uncertainty": 0.5, "random": 0.5}  # 4 fixed, 4 random out of 16
    counts = np.zeros(n)
    recorded = set()
    runs = 4000
    for seed in range(runs):
        for pick in draw(**pool, budget=budget, shares=shares, seed=seed):
            if pick.strategy == "random":
                counts[pick.index] += 1
                recorded.add(pick.inclusion_probability)
    assert recorded == {4 / 16}
    fixed = {p.index for p in draw(**pool, budget=budget, shares=shares, seed=0)} - {
        p.index
        for p in draw(**pool, budget=budget, shares=shares, seed=0)
        if p.strategy == "random"
    }
    assert counts[sorted(fixed)].sum() == 0
    left = np.setdiff1d(np.arange(n), sorted(fixed))
    frequency = counts[left] / runs
    # binomial standard error at p = 0.25 and 4000 runs is about 0.007
    assert np.abs(frequency - 0.25).max() < 0.035


def test_uncertainty_is_the_margin_around_each_items_own_threshold():
    probabilities = np.array([0.1, 0.45, 0.8, 0.3])
    thresholds = np.array([0.5, 0.5, 0.8, 0.2])
    margin = threshold_margin(probabilities, thresholds)
    # item 2 sits on its threshold; 0.45 of 0.5 re-centres to 0.45, 0.3 of 0.2 to 0.5625
    np.testing.assert_allclose(margin, [0.8, 0.1, 0.0, 0.125])
    picks = draw(
        probabilities=probabilities,
        thresholds=thresholds,
        embeddings=None,
        hard_negative_affinity=None,
        budget=3,
        shares={"uncertainty": 1.0},
        seed=0,
    )
    assert [p.index for p in picks] == [2, 1, 3]


def _four_clusters():
    """Four tight clusters of 25; the items nearest the threshold all lie in cluster 0."""
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)
    cluster = np.repeat(np.arange(4), 25)
    embeddings = centres[cluster] + rng.normal(scale=0.3, size=(100, 2))
    distance_to_threshold = np.where(cluster == 0, 0.01, 0.05) + rng.uniform(0, 0.01, 100)
    return cluster, embeddings, 0.5 + distance_to_threshold


def test_diversity_spreads_across_clusters_where_uncertainty_does_not():
    cluster, embeddings, probabilities = _four_clusters()
    common = {
        "probabilities": probabilities,
        "thresholds": np.full(100, 0.5),
        "embeddings": embeddings,
        "hard_negative_affinity": None,
        "budget": 4,
        "seed": 0,
        "beta": 25,
    }
    uncertain = draw(**common, shares={"uncertainty": 1.0})
    diverse = draw(**common, shares={"diversity": 1.0})
    assert sorted(cluster[[p.index for p in uncertain]]) == [0, 0, 0, 0]
    assert sorted(cluster[[p.index for p in diverse]]) == [0, 1, 2, 3]
    assert {p.strategy for p in diverse} == {"diversity"}


def test_diversity_without_embeddings_falls_back_to_uncertainty_order():
    _, _, probabilities = _four_clusters()
    common = {
        "probabilities": probabilities,
        "thresholds": np.full(100, 0.5),
        "embeddings": None,
        "hard_negative_affinity": None,
        "budget": 4,
        "seed": 0,
    }
    diverse = draw(**common, shares={"diversity": 1.0})
    uncertain = draw(**common, shares={"uncertainty": 1.0})
    assert [p.index for p in diverse] == [p.index for p in uncertain]


def test_hard_negatives_are_the_highest_affinity():
    affinity = np.zeros(30)
    affinity[[4, 17, 9]] = [0.9, 0.7, 0.8]
    picks = draw(
        probabilities=np.full(30, 0.2),
        thresholds=np.full(30, 0.5),
        embeddings=None,
        hard_negative_affinity=affinity,
        budget=5,
        shares={"hard_negative": 1.0},
        seed=0,
    )
    # three candidates (affinity 0 is none); the quota left passes to uncertainty
    assert [(p.index, p.strategy) for p in picks[:3]] == [
        (4, "hard_negative"),
        (9, "hard_negative"),
        (17, "hard_negative"),
    ]
    assert [p.strategy for p in picks[3:]] == ["uncertainty", "uncertainty"]


def test_no_hard_negative_candidates_passes_their_quota_on():
    picks = draw(**{**_pool(), "hard_negative_affinity": None}, budget=10, shares=MIX, seed=0)
    assert len(picks) == 10
    assert Counter(p.strategy for p in picks) == {"uncertainty": 6, "diversity": 3, "random": 1}


def test_replay_affinity_marks_confident_looking_mistakes():
    pool = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0], [9.0, 9.0]])
    probabilities = np.array([0.05, 0.9, 0.9, 0.05, 0.05])
    positives = np.array([[0.0, 0.1]])  # a labeled violation near items 0 and 1
    negatives = np.array([[5.0, 5.1]])  # a labeled clear near items 2 and 3
    affinity = hard_negative_affinity_from_labels(
        probabilities, np.full(5, 0.5), pool, positives, negatives
    )
    # item 0: scored low beside a violation; item 2: scored high beside a clear
    assert set(np.argsort(-affinity)[:2].tolist()) == {0, 2}
    # item 1 (high beside a violation) and item 3 (low beside a clear) look right
    assert affinity[0] > 1.5 * affinity[3]
    assert affinity[2] > 1.5 * affinity[1]
    # item 4, low and far from every label, is scored on distance alone
    assert affinity[4] < affinity[3]
    without_clears = hard_negative_affinity_from_labels(
        probabilities, np.full(5, 0.5), pool, positives
    )
    # without labeled negatives nothing scored above the threshold is a hard negative
    assert without_clears[[1, 2]].tolist() == [0.0, 0.0]


def test_the_draw_works_as_a_modal_query_strategy():
    from modAL.models import ActiveLearner
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] > 0.8).astype(int)
    seed_rows = np.r_[np.flatnonzero(y == 1)[:3], np.flatnonzero(y == 0)[:7]]
    learner = ActiveLearner(
        estimator=LogisticRegression(),
        query_strategy=portal_query_strategy(
            MIX, seed=0, positive_embeddings=lambda: X[seed_rows][y[seed_rows] == 1]
        ),
        X_training=X[seed_rows],
        y_training=y[seed_rows],
    )
    indices, rows, picks = learner.query(X, n_instances=10, return_metrics=True)
    assert len(set(indices.tolist())) == 10
    np.testing.assert_array_equal(rows, X[indices])
    assert [p.index for p in picks] == indices.tolist()
    assert Counter(p.strategy for p in picks) == {
        "uncertainty": 4,
        "hard_negative": 2,
        "diversity": 3,
        "random": 1,
    }
