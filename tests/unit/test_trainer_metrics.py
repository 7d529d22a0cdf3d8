"""Our O(1) progressive metrics agree with river's and scikit-learn's on random streams."""

from __future__ import annotations

import random

import pytest
from river import metrics as rm
from river import utils
from sklearn.metrics import f1_score, roc_auc_score

from streamwise_core.contracts.appspec import Task
from streamwise_trainer.metrics import ProgressiveMetrics


def binary_stream(n: int, seed: int) -> list[tuple[bool, dict[bool, float]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        y = rng.random() < 0.3
        p = min(max(rng.gauss(0.65 if y else 0.35, 0.2), 0.0), 1.0)
        out.append((y, {False: 1 - p, True: p}))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_binary_metrics_match_river_and_sklearn(seed: int) -> None:
    stream = binary_stream(3000, seed)
    ours = ProgressiveMetrics(Task.BINARY, window=500)
    acc, loss = rm.Accuracy(), rm.LogLoss()
    acc_recent = utils.Rolling(rm.Accuracy(), window_size=500)
    for y, proba in stream:
        y_pred = max(proba, key=proba.get)
        ours.update(y, y_pred, proba)
        acc.update(y, y_pred)
        acc_recent.update(y, y_pred)
        loss.update(y, proba)
    snap = ours.snapshot()
    assert snap["accuracy"] == pytest.approx(acc.get())
    assert snap["accuracy_recent"] == pytest.approx(acc_recent.get())
    assert snap["log_loss"] == pytest.approx(loss.get())
    truth, scores = [y for y, _ in stream], [p[True] for _, p in stream]
    assert snap["roc_auc"] == pytest.approx(roc_auc_score(truth, scores), abs=2e-3)
    assert snap["roc_auc_recent"] == pytest.approx(roc_auc_score(truth[-500:], scores[-500:]), abs=2e-3)


def test_auc_is_one_half_until_both_classes_were_seen_and_one_for_a_perfect_ranking() -> None:
    m = ProgressiveMetrics(Task.BINARY)
    m.update(True, True, {True: 0.9, False: 0.1})
    assert m.snapshot()["roc_auc"] == 0.5
    m.update(False, False, {True: 0.2, False: 0.8})
    assert m.snapshot()["roc_auc"] == 1.0
    m.update(False, True, {True: 0.95, False: 0.05})
    assert m.snapshot()["roc_auc"] == pytest.approx(0.5)


def test_multiclass_macro_f1_matches_sklearn() -> None:
    rng = random.Random(5)
    classes = ["a", "b", "c", "d"]
    pairs = [(rng.choice(classes), rng.choice(classes[:3])) for _ in range(2000)]
    m = ProgressiveMetrics(Task.MULTICLASS, window=300)
    for y, p in pairs:
        m.update(y, p, None)
    snap = m.snapshot()
    truth, pred = [y for y, _ in pairs], [p for _, p in pairs]
    assert snap["macro_f1"] == pytest.approx(f1_score(truth, pred, average="macro", zero_division=0))
    assert snap["macro_f1_recent"] == pytest.approx(f1_score(truth[-300:], pred[-300:], average="macro", zero_division=0))
    assert snap["accuracy"] == pytest.approx(sum(t == p for t, p in pairs) / 2000)


def test_regression_metrics_match_river() -> None:
    rng = random.Random(9)
    m = ProgressiveMetrics(Task.REGRESSION, window=100)
    mae, rmse, mae_recent = rm.MAE(), rm.RMSE(), utils.Rolling(rm.MAE(), window_size=100)
    for _ in range(1000):
        y, p = rng.gauss(0, 3), rng.gauss(0, 3)
        m.update(y, p, None)
        mae.update(y, p)
        rmse.update(y, p)
        mae_recent.update(y, p)
    snap = m.snapshot()
    assert snap["mae"] == pytest.approx(mae.get())
    assert snap["rmse"] == pytest.approx(rmse.get())
    assert snap["mae_recent"] == pytest.approx(mae_recent.get())


def test_the_recent_window_histogram_follows_the_window_as_it_fills_and_slides() -> None:
    stream = binary_stream(1300, 4)
    ours = ProgressiveMetrics(Task.BINARY, window=500)
    loss_recent = utils.Rolling(rm.LogLoss(), window_size=500)
    truth, scores = [y for y, _ in stream], [p[True] for _, p in stream]
    for i, (y, proba) in enumerate(stream, start=1):
        ours.update(y, max(proba, key=proba.get), proba)
        loss_recent.update(y, proba)
        if i in (1, 2, 499, 500, 501, 999, 1000, 1300):
            snap = ours.snapshot()
            window = slice(max(i - 500, 0), i)
            expected = roc_auc_score(truth[window], scores[window]) if len(set(truth[window])) == 2 else 0.5
            assert snap["roc_auc_recent"] == pytest.approx(expected, abs=2e-3), i
            assert snap["log_loss_recent"] == pytest.approx(loss_recent.get()), i


def test_metrics_checkpointed_before_the_recent_histogram_existed_restore_it() -> None:
    import pickle

    ours = ProgressiveMetrics(Task.BINARY, window=200)
    for y, proba in binary_stream(700, 5):
        ours.update(y, max(proba, key=proba.get), proba)
    expected = ours.snapshot()
    old = pickle.loads(pickle.dumps(ours))
    del old.__dict__["_recent_bins"]  # the state as an older trainer pickled it
    restored = pickle.loads(pickle.dumps(old))
    assert restored.snapshot() == expected
    y, proba = binary_stream(1, 6)[0]
    restored.update(y, max(proba, key=proba.get), proba)
    ours.update(y, max(proba, key=proba.get), proba)
    assert restored.snapshot() == ours.snapshot()
