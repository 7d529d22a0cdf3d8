"""The demo fraud generator: deterministic, valid, learnable, and drifting."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamwise_core.contracts.appspec import AppSpec, load_app_spec
from streamwise_core.contracts.schema import to_model_input, validator
from streamwise_core.domain.pipeline import build_model
from streamwise_devstack.fraud import FraudStream, GeneratedEvent, LateLabels, holdout

SPEC_PATH = Path(__file__).resolve().parents[2] / "examples" / "fraud" / "streamwise.toml"


@pytest.fixture(scope="module")
def spec() -> AppSpec:
    """The fraud application spec."""
    return load_app_spec(SPEC_PATH)


def _accuracy(model: object, spec: AppSpec, events: list[GeneratedEvent]) -> float:
    """Share of ``events`` the model labels correctly."""
    hits = sum(model.predict_one(to_model_input(spec, e.features)) == e.label for e in events)  # type: ignore[attr-defined]
    return hits / len(events)


def _learn(model: object, spec: AppSpec, events: list[GeneratedEvent]) -> None:
    """Predict then learn each event in order, as the trainer does."""
    for e in events:
        x = to_model_input(spec, e.features)
        model.predict_one(x)  # type: ignore[attr-defined]
        model.learn_one(x, e.label)  # type: ignore[attr-defined]


def _fraud_share(events: list[GeneratedEvent]) -> float:
    """Share of events labelled fraud."""
    return sum(e.label for e in events) / len(events)


def test_same_seed_same_stream() -> None:
    a = FraudStream(11, drift_at=50).take(200)
    b = FraudStream(11, drift_at=50).take(200)
    assert a == b


def test_other_seed_other_stream() -> None:
    a = FraudStream(11).take(50)
    b = FraudStream(12).take(50)
    assert [e.features for e in a] != [e.features for e in b]


def test_ids_are_unique_and_follow_the_index() -> None:
    events = FraudStream(3, run_id="run-x").take(1000)
    assert [e.index for e in events] == list(range(1000))
    assert [e.id for e in events] == [f"run-x-{i}" for i in range(1000)]
    assert FraudStream(3).next_event().id == "fraud-s3-0"


def test_every_event_validates_against_the_spec(spec: AppSpec) -> None:
    check = validator(spec)
    for e in FraudStream(5, drift_at=1500).take(3000):
        assert check(e.features) == to_model_input(spec, e.features), e
        assert check.label_error(e.label) is None
        assert list(e.features) == list(spec.features)


def test_drift_flag_follows_drift_at() -> None:
    events = FraudStream(5, drift_at=100).take(200)
    assert [e.after_drift for e in events] == [i >= 100 for i in range(200)]


@pytest.mark.parametrize("after_drift", [False, True])
def test_fraud_rate_within_band(after_drift: bool) -> None:
    share = _fraud_share(holdout(10_000, 21, after_drift))
    assert 0.20 <= share <= 0.32


def test_holdout_is_one_concept_and_deterministic() -> None:
    before = holdout(100, 4, after_drift=False)
    after = holdout(100, 4, after_drift=True)
    assert not any(e.after_drift for e in before)
    assert all(e.after_drift for e in after)
    assert holdout(100, 4, after_drift=True) == after
    assert {e.id for e in before}.isdisjoint(e.id for e in after)


def test_invalid_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        FraudStream(1, fraud_rate=0.0)
    with pytest.raises(ValueError):
        FraudStream(1, label_noise=0.6)
    with pytest.raises(ValueError):
        LateLabels(1, min_delay=10, max_delay=5)


def test_drift_hurts_and_online_learning_recovers(spec: AppSpec) -> None:
    stream = FraudStream(7, drift_at=5000)
    model = build_model(spec)
    _learn(model, spec, stream.take(5000))

    before = holdout(3000, 101, after_drift=False)
    after = holdout(3000, 102, after_drift=True)
    baseline_before = 1 - _fraud_share(before)
    baseline_after = 1 - _fraud_share(after)
    acc_before = _accuracy(model, spec, before)
    acc_after_drift = _accuracy(model, spec, after)

    assert acc_before > baseline_before + 0.1
    assert acc_before > 0.9
    assert acc_after_drift < acc_before - 0.15

    post = stream.take(5000)
    assert all(e.after_drift for e in post)
    _learn(model, spec, post)
    acc_recovered = _accuracy(model, spec, after)
    assert acc_recovered > baseline_after + 0.1
    assert acc_recovered > acc_after_drift + 0.1
    assert acc_recovered > 0.88


def test_late_fraction_within_band() -> None:
    late = LateLabels(9, late_fraction=0.3)
    routed = [late.route(e) for e in FraudStream(9).take(10_000)]
    share_late = routed.count(False) / len(routed)
    assert 0.27 <= share_late <= 0.33


def test_late_labels_arrive_once_after_their_event_within_delay() -> None:
    events = FraudStream(2).take(5000)
    late = LateLabels(2, late_fraction=0.3, min_delay=50, max_delay=500)
    by_id = {e.id: e for e in events}
    held: set[str] = set()
    delivered: list[tuple[int, str]] = []
    for e in events:
        if not late.route(e):
            held.add(e.id)
        delivered += [(e.index, d.id) for d in late.due(e.index)]
    assert late.pending > 0
    delivered += [(len(events), d.id) for d in late.drain()]
    assert late.pending == 0

    ids = [i for _, i in delivered]
    assert len(ids) == len(set(ids))
    assert set(ids) == held
    for sent_at, label_id in delivered:
        event = by_id[label_id]
        assert sent_at > event.index
        if sent_at < len(events):
            assert 50 <= sent_at - event.index <= 500


def test_late_labels_carry_the_event_label() -> None:
    events = FraudStream(4).take(2000)
    late = LateLabels(4, late_fraction=1.0, min_delay=1, max_delay=3)
    for e in events:
        assert late.route(e) is False
    due = late.drain()
    assert sorted(d.event_index for d in due) == list(range(2000))
    assert {d.id: d.label for d in due} == {e.id: e.label for e in events}


def test_late_labels_are_deterministic() -> None:
    events = FraudStream(6).take(1000)
    runs = []
    for _ in range(2):
        late = LateLabels(6)
        runs.append(([late.route(e) for e in events], late.drain()))
    assert runs[0] == runs[1]


def test_no_late_labels_when_fraction_is_zero() -> None:
    late = LateLabels(1, late_fraction=0.0)
    assert all(late.route(e) for e in FraudStream(1).take(500))
    assert late.drain() == []
