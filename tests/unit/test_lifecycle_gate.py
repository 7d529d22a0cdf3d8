"""The validation gate: metric directions, tolerance, minimum examples (pure)."""

from __future__ import annotations

import pytest

from streamwise_core.adapters.settings import Settings
from streamwise_core.contracts.appspec import Task
from streamwise_core.contracts.codec import ModelMeta
from streamwise_core.domain.lifecycle import GateSettings, decide
from streamwise_core.domain.lifecycle.gate import higher_is_better
from streamwise_predictor.holder import ModelHolder, ServedModel

ON = GateSettings(enabled=True, tolerance=0.02, min_examples=1000, compare="publish")


def test_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).gate == GateSettings()  # type: ignore[call-arg]
    monkeypatch.setenv("STREAMWISE_GATE__TOLERANCE", "0.1")
    monkeypatch.setenv("STREAMWISE_GATE__MIN_EXAMPLES", "5")
    assert GateSettings().enabled is False  # opt-in: see GateSettings.enabled
    monkeypatch.setenv("STREAMWISE_GATE__ENABLED", "true")
    gate = Settings(_env_file=None).gate  # type: ignore[call-arg]
    assert (gate.tolerance, gate.min_examples, gate.enabled) == (0.1, 5, True)


@pytest.mark.parametrize("metric,higher", [
    ("accuracy", True), ("roc_auc_recent", True), ("macro_f1", True),
    ("log_loss", False), ("mae_recent", False), ("rmse", False),
])
def test_directions(metric: str, higher: bool) -> None:
    assert higher_is_better(metric) is higher


def test_unknown_direction_is_an_error() -> None:
    with pytest.raises(ValueError):
        higher_is_better("wobble")


def test_accuracy_within_tolerance_is_served_beyond_it_held_back() -> None:
    served = {"accuracy_recent": 0.90}
    ok = decide(Task.BINARY, {"accuracy_recent": 0.881}, 5000, served, 4000, ON)
    assert ok.serve and ok.status == "served"
    bad = decide(Task.BINARY, {"accuracy_recent": 0.879}, 5000, served, 4000, ON)
    assert not bad.serve and bad.status == "held_back"
    assert "accuracy_recent" in bad.reason and "0.8790" in bad.reason and "0.9000" in bad.reason
    assert (bad.candidate, bad.served, bad.metric) == (0.879, 0.90, "accuracy_recent")
    assert decide(Task.MULTICLASS, {"accuracy_recent": 0.95}, 5000, served, 4000, ON).serve


def test_regression_lower_is_better_with_relative_tolerance() -> None:
    served = {"mae_recent": 10.0}
    assert decide(Task.REGRESSION, {"mae_recent": 8.0}, 5000, served, 5000, ON).serve
    assert decide(Task.REGRESSION, {"mae_recent": 10.19}, 5000, served, 5000, ON).serve
    held = decide(Task.REGRESSION, {"mae_recent": 10.21}, 5000, served, 5000, ON)
    assert not held.serve and "mae_recent" in held.reason
    # a perfect served version: the tolerance is absolute
    assert decide(Task.REGRESSION, {"mae_recent": 0.01}, 5000, {"mae_recent": 0.0}, 5000, ON).serve
    assert not decide(Task.REGRESSION, {"mae_recent": 0.03}, 5000, {"mae_recent": 0.0}, 5000, ON).serve


def test_chosen_metric_log_loss() -> None:
    gate = GateSettings(enabled=True, tolerance=0.1, min_examples=0, metric="log_loss", compare="publish")
    assert decide(Task.BINARY, {"log_loss_recent": 0.21}, 10, {"log_loss_recent": 0.2}, 10, gate).serve
    assert not decide(Task.BINARY, {"log_loss_recent": 0.23}, 10, {"log_loss_recent": 0.2}, 10, gate).serve


def test_min_examples_nothing_served_disabled_and_missing_metrics() -> None:
    served = {"accuracy_recent": 0.9}
    worse = {"accuracy_recent": 0.5}
    assert decide(Task.BINARY, worse, 999, served, 5000, ON).serve
    assert decide(Task.BINARY, worse, 5000, served, 999, ON).serve
    assert not decide(Task.BINARY, worse, 1000, served, 1000, ON).serve
    assert decide(Task.BINARY, worse, 5000, None, 0, ON).reason == "nothing served yet"
    assert decide(Task.BINARY, worse, 5000, served, 5000, GateSettings(enabled=False)).serve
    assert decide(Task.BINARY, worse, 5000, {}, 5000, ON).serve
    assert not decide(Task.BINARY, {"accuracy_recent": float("nan")}, 5000, served, 5000, ON).serve


def test_zero_tolerance_holds_back_any_drop() -> None:
    gate = GateSettings(enabled=True, tolerance=0.0, min_examples=0, compare="publish")
    assert decide(Task.BINARY, {"accuracy_recent": 0.9}, 1, {"accuracy_recent": 0.9}, 1, gate).serve
    assert not decide(Task.BINARY, {"accuracy_recent": 0.8999}, 1, {"accuracy_recent": 0.9}, 1, gate).serve


def _meta(version: int) -> ModelMeta:
    return ModelMeta(app="a", model="m", version=version, task="binary", examples_seen=version)


def test_holder_follows_the_newest_generation_back_to_a_lower_version() -> None:
    holder = ModelHolder()
    assert holder.offer(ServedModel(_meta(5), "v5", generation=5))
    assert not holder.offer(ServedModel(_meta(6), "stale pointer", generation=4)), "an older generation never wins"
    assert not holder.offer(ServedModel(_meta(4), "stale", generation=5))
    assert holder.offer(ServedModel(_meta(2), "rolled back", generation=6))
    assert (holder.version, holder.generation) == (2, 6)
    assert holder.offer(ServedModel(_meta(7), "next", generation=7))
