"""`manage.py active_learning_replay`: the portal's sampling replayed on a labeled data set."""

import json
from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from active_learning.ml.replay import Dataset, first_reaching, split

ALL = ["uncertainty", "hard_negative", "diversity", "random", "mix"]


def _write(path, n=400, positives=0.05, with_time=False, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < positives).astype(int)
    y[:2] = [1, 0]
    X = rng.normal(size=(n, 4)) + 2.5 * y[:, None]
    arrays = {"X": X, "y": y}
    if with_time:
        arrays["t"] = rng.permutation(n)
    np.savez(path, **arrays)
    return path


def _replay(*args):
    out = StringIO()
    call_command("active_learning_replay", *args, stdout=out)
    return json.loads(out.getvalue())


SMALL = ["--seed-labels", "10", "--batch", "5", "--rounds", "3", "--repeats", "2"]


def test_the_replay_prints_curves_for_every_strategy(tmp_path):
    result = _replay("--dataset", str(_write(tmp_path / "d.npz")), *SMALL)
    assert sorted(result["strategies"]) == sorted(ALL)
    for name in ALL:
        entry = result["strategies"][name]
        labels = [point[0] for point in entry["curve"]]
        assert labels == [10, 15, 20, 25], name
        assert all(0.0 <= f1 <= 1.0 for _, f1 in entry["curve"])
        reached = entry["labels_to_reach_random_final_f1"]
        assert reached is None or reached in labels
    assert result["random_final_f1"] == result["strategies"]["random"]["curve"][-1][1]
    assert result["strategies"]["random"]["labels_to_reach_random_final_f1"] <= 25
    assert result["dataset"]["split"] == "stratified"
    assert result["dataset"]["pool"] + result["dataset"]["test"] == 400
    # the replay learns: the classes are well apart, so F1 ends well above the seed set's
    assert result["strategies"]["uncertainty"]["curve"][-1][1] > 0.6


def test_the_same_dataset_and_seed_replay_identically(tmp_path):
    path = str(_write(tmp_path / "d.npz"))
    assert _replay("--dataset", path, *SMALL) == _replay("--dataset", path, *SMALL)


def test_mix_uses_the_configured_shares(tmp_path, settings):
    settings.LABELING_STRATEGY_SHARES = {"random": 1.0}
    path = str(_write(tmp_path / "d.npz"))
    result = _replay("--dataset", path, *SMALL, "--strategies", "random,mix,uncertainty")
    assert sorted(result["strategies"]) == ["mix", "random", "uncertainty"]
    assert result["config"]["shares"] == {"random": 1.0}
    assert result["strategies"]["mix"]["curve"] == result["strategies"]["random"]["curve"]
    assert result["strategies"]["uncertainty"]["curve"] != result["strategies"]["random"]["curve"]


def test_without_random_there_is_no_target(tmp_path):
    path = str(_write(tmp_path / "d.npz"))
    result = _replay("--dataset", path, *SMALL, "--strategies", "uncertainty")
    assert result["random_final_f1"] is None
    assert result["strategies"]["uncertainty"]["labels_to_reach_random_final_f1"] is None


def test_a_time_order_holds_out_the_latest_items(tmp_path):
    path = _write(tmp_path / "t.npz", with_time=True)
    result = _replay("--dataset", str(path), *SMALL, "--strategies", "random")
    assert result["dataset"]["split"] == "time"
    assert result["dataset"]["test"] == 120
    with np.load(path) as data:
        t = data["t"]
        pool, test = split(Dataset(data["X"], data["y"], t), test_fraction=0.3, seed=0)
    assert t[test].min() > t[pool].max()
    assert len(test) == 120


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategies", "uncertainty,clairvoyant"], "unknown strategies"),
        (["--seed-labels", "1"], "seed_labels"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, args, message):
    path = str(_write(tmp_path / "d.npz"))
    with pytest.raises(CommandError, match=message):
        _replay("--dataset", path, *args)


def test_a_missing_or_malformed_dataset_is_refused(tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        _replay("--dataset", str(tmp_path / "absent.npz"))
    np.savez(tmp_path / "bad.npz", X=np.zeros((5, 2)), y=np.array([0, 1, 2, 0, 1]))
    with pytest.raises(CommandError, match="0/1"):
        _replay("--dataset", str(tmp_path / "bad.npz"))


def test_first_reaching_takes_the_first_point_at_or_above_the_target():
    curve = [[10, 0.2], [15, 0.5], [20, 0.45], [25, 0.6]]
    assert first_reaching(curve, 0.45) == 15
    assert first_reaching(curve, 0.6) == 25
    assert first_reaching(curve, 0.7) is None
