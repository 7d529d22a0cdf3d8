"""The trainer without I/O: label join, predict-then-learn, record handling, checkpoints."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streamwise_core.adapters.settings import Topics
from streamwise_core.contracts.appspec import AppSpec, DriftSpec, StepSpec, Task, load_app_spec, parse_app_spec, primary_metric
from streamwise_core.contracts.codec import pack, unpack
from streamwise_core.contracts.errors import BlobRefused
from streamwise_core.contracts.events import EventReceived, LabelReceived
from streamwise_core.contracts.schema import to_model_input
from streamwise_core.contracts.signing import Signature, Signer
from streamwise_core.domain.pipeline import build_model
from streamwise_devstack.fraud import FraudStream, GeneratedEvent
from streamwise_trainer.drift import DriftMonitor
from streamwise_trainer.join import Example, LabelJoin
from streamwise_trainer.learner import OnlineLearner
from streamwise_trainer.learning import Record, Rejected, Trainer, TrainerState
from streamwise_trainer.metrics import ProgressiveMetrics
from tests.model_helpers import checkpoint_size

from .trainer_support import learn_scored

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_app_spec(ROOT / "examples" / "fraud" / "streamwise.toml")
TOPICS = Topics.for_app("t", SPEC.name)
SIGNER = Signer({"k1": b"unit-test-signing-key-0123456789"})
EVENTS_TP = f"{TOPICS.events}:0"
LABELS_TP = f"{TOPICS.labels}:0"


def event_record(offset: int, event_id: str, features: dict[str, Any], label: Any = None, partition: int = 0) -> Record:
    value = EventReceived(id=event_id, features=features, label=label, timestamp=datetime.now(UTC)).to_bytes()
    return Record(TOPICS.events, partition, offset, event_id.encode(), value)


def label_record(offset: int, event_id: str, label: Any, partition: int = 0) -> Record:
    value = LabelReceived(id=event_id, label=label, timestamp=datetime.now(UTC)).to_bytes()
    return Record(TOPICS.labels, partition, offset, event_id.encode(), value)


def workload(events: list[GeneratedEvent], late_every: int = 3, delay: int = 7) -> list[Record]:
    """Events with inline labels, except every ``late_every``-th whose label comes ``delay`` events later."""
    records: list[Record] = []
    due: dict[int, list[GeneratedEvent]] = {}
    label_offset = 0
    for i, g in enumerate(events):
        late = i % late_every == 0
        records.append(event_record(i, g.id, g.features, None if late else g.label))
        if late:
            due.setdefault(i + delay, []).append(g)
        for d in due.pop(i, []):
            records.append(label_record(label_offset, d.id, d.label))
            label_offset += 1
    return records


def probes(n: int = 50) -> list[dict[str, Any]]:
    return [to_model_input(SPEC, g.features) for g in FraudStream(seed=99, drift_at=10**9).take(n)]


def predictions(trainer: Trainer, xs: list[dict[str, Any]]) -> list[dict[Any, float]]:
    return [trainer.state.learner.model.predict_proba_one(x) for x in xs]


def assert_same_predictions(a: list[dict[Any, float]], b: list[dict[Any, float]]) -> None:
    """Equal up to float rounding: river's OneHotEncoder keeps categories in a set whose iteration
    order may change through pickling, which reorders a sum and moves the last bit or so."""
    assert len(a) == len(b)
    for pa, pb in zip(a, b, strict=True):
        assert pa.keys() == pb.keys()
        assert pa == pytest.approx(pb, rel=1e-12, abs=1e-15)


def assert_same_metrics(a: Trainer, b: Trainer) -> None:
    ma, mb = a.state.learner.metrics.snapshot(), b.state.learner.metrics.snapshot()
    assert ma.keys() == mb.keys()
    assert ma == pytest.approx(mb, rel=1e-12, abs=1e-15)


def feed(trainer: Trainer, records: list[Record]) -> list[Rejected]:
    return [r for rec in records if (r := trainer.handle(rec)) is not None]


# --- LabelJoin -----------------------------------------------------------------------------


def test_label_after_event() -> None:
    join = LabelJoin()
    assert join.on_event("a", {"x": 1.0}, None) is None
    assert (join.waiting_features, join.waiting_labels) == (1, 0)
    assert join.on_label("a", True) == Example("a", {"x": 1.0}, True)
    assert (join.waiting_features, join.waiting_labels) == (0, 0)
    # A second label for the same id has no features left to join with: it waits.
    assert join.on_label("a", False) is None
    assert join.waiting_labels == 1


def test_label_before_event() -> None:
    join = LabelJoin()
    assert join.on_label("b", False) is None
    assert (join.waiting_features, join.waiting_labels) == (0, 1)
    assert join.on_event("b", {"x": 2.0}, None) == Example("b", {"x": 2.0}, False)
    assert (join.waiting_features, join.waiting_labels) == (0, 0)


def test_inline_label_is_an_example_at_once() -> None:
    join = LabelJoin()
    assert join.on_event("c", {"x": 3.0}, True) == Example("c", {"x": 3.0}, True)
    assert join.on_event("d", {"x": 4.0}, False) == Example("d", {"x": 4.0}, False)
    assert (join.waiting_features, join.waiting_labels) == (0, 0)


def test_falsy_labels_are_labels() -> None:
    join = LabelJoin()
    join.on_event("z", {"x": 0.0}, None)
    assert join.on_label("z", 0.0) == Example("z", {"x": 0.0}, 0.0)
    assert join.on_event("y", {"x": 0.0}, "") == Example("y", {"x": 0.0}, "")


def test_capacity_evicts_the_oldest_and_counts_it() -> None:
    join = LabelJoin(capacity=2)
    for i in range(3):
        join.on_event(f"e{i}", {"i": float(i)}, None)
    assert (join.waiting_features, join.evicted) == (2, 1)
    assert join.on_label("e0", True) is None  # e0 was evicted: its label now waits
    assert join.on_label("e1", True) == Example("e1", {"i": 1.0}, True)
    assert join.on_label("e2", False) == Example("e2", {"i": 2.0}, False)
    for i in range(3, 6):
        join.on_label(f"e{i}", True)
    assert join.waiting_labels == 2
    assert join.evicted == 3  # e0's and e3's labels were dropped too
    assert join.on_event("e3", {"i": 3.0}, None) is None
    assert join.on_event("e5", {"i": 5.0}, None) == Example("e5", {"i": 5.0}, True)


def test_re_sent_event_refreshes_instead_of_evicting() -> None:
    join = LabelJoin(capacity=2)
    join.on_event("a", {"v": 1.0}, None)
    join.on_event("b", {"v": 1.0}, None)
    join.on_event("a", {"v": 2.0}, None)
    assert (join.waiting_features, join.evicted) == (2, 0)
    join.on_event("c", {"v": 1.0}, None)  # now "b" is the oldest
    assert join.evicted == 1
    assert join.on_label("a", True) == Example("a", {"v": 2.0}, True)
    assert join.on_label("b", True) is None


# --- OnlineLearner and metrics ---------------------------------------------------------------


def fraud_x(seed: int = 5, n: int = 1) -> list[dict[str, Any]]:
    return [to_model_input(SPEC, g.features) for g in FraudStream(seed=seed, drift_at=10**9).take(n)]


def test_first_binary_prediction_is_made_by_the_untrained_model() -> None:
    learner = OnlineLearner(build_model(SPEC), Task.BINARY)
    (x,) = fraud_x()
    outcomes = [learn_scored(learner, x, True) for _ in range(10)]
    first = outcomes[0]
    assert first.y_true is True
    assert first.proba == {False: 0.5, True: 0.5}  # had it learned first, P(True) would exceed 0.5
    assert first.y_pred is False  # the tie resolves to the first class
    assert all(o.y_pred is True and o.proba[True] > 0.5 for o in outcomes[1:])
    assert learner.examples_seen == 10
    snap = learner.metrics.snapshot()
    # The pre-learning miss is scored: 9 right out of 10.
    assert snap["accuracy"] == pytest.approx(9 / 10)
    assert snap["accuracy_recent"] == pytest.approx(9 / 10)
    assert snap["log_loss"] > math.log(2) / 10


@pytest.mark.parametrize("n", [2, 5, 20])
def test_constant_binary_stream_accuracy_is_n_minus_one_over_n(n: int) -> None:
    learner = OnlineLearner(build_model(SPEC), Task.BINARY)
    (x,) = fraud_x(seed=n)
    for _ in range(n):
        learn_scored(learner, x, True)
    assert learner.examples_seen == n
    assert learner.metrics.snapshot()["accuracy"] == pytest.approx((n - 1) / n)


def test_each_outcome_is_the_prediction_of_the_model_before_that_example() -> None:
    learner = OnlineLearner(build_model(SPEC), Task.BINARY)
    reference = build_model(SPEC)
    for g in FraudStream(seed=8, drift_at=10**9).take(150):
        x = to_model_input(SPEC, g.features)
        expected = reference.predict_proba_one(x)
        outcome = learn_scored(learner, x, g.label)
        assert outcome.proba == expected
        assert outcome.y_pred == max(expected, key=expected.get)
        assert outcome.y_true is g.label
        reference.learn_one(x, g.label)


def multiclass_spec() -> AppSpec:
    return parse_app_spec({
        "name": "mc", "task": "multiclass", "features": {"x": "float", "c": "category"},
        "label": {"classes": ["a", "b", "c"]},
        "model": {"name": "m", "steps": [{"use": "linear_model.SoftmaxRegression"}]},
    })


def test_first_multiclass_outcome_has_no_prediction() -> None:
    spec = multiclass_spec()
    learner = OnlineLearner(build_model(spec), spec.task)
    first = learn_scored(learner, {"x": 1.0, "c": "q"}, "a")
    assert (first.y_true, first.y_pred, first.proba) == ("a", None, None)
    second = learn_scored(learner, {"x": 2.0, "c": "q"}, "a")
    assert second.y_pred == "a" and second.proba is not None
    for i in range(8):
        learn_scored(learner, {"x": float(i), "c": "q"}, "a")
    assert learner.examples_seen == 10
    # The first example had no prediction to score; the 9 made afterwards were all right.
    assert learner.metrics.snapshot()["accuracy"] == pytest.approx(1.0)


def test_regression_outcome_and_metrics() -> None:
    spec = parse_app_spec({"name": "r", "task": "regression", "features": {"x": "float"},
                           "model": {"name": "m", "steps": [{"use": "linear_model.LinearRegression"}]}})
    learner = OnlineLearner(build_model(spec), spec.task)
    first = learn_scored(learner, {"x": 1.0}, 5.0)
    assert first.y_pred == 0.0 and first.proba is None
    snap = learner.metrics.snapshot()
    assert snap["mae"] == pytest.approx(5.0) and snap["rmse"] == pytest.approx(5.0)
    second = learn_scored(learner, {"x": 1.0}, 5.0)
    assert 0.0 < second.y_pred < 5.0
    assert learner.metrics.snapshot()["mae"] == pytest.approx((5.0 + 5.0 - second.y_pred) / 2)


@pytest.mark.parametrize(
    ("task", "names"),
    [
        (Task.BINARY, {"accuracy", "log_loss", "roc_auc"}),
        (Task.MULTICLASS, {"accuracy", "macro_f1"}),
        (Task.REGRESSION, {"mae", "rmse"}),
    ],
)
def test_metric_names_per_task(task: Task, names: set[str]) -> None:
    snap = ProgressiveMetrics(task).snapshot()
    assert set(snap) == names | {f"{n}_recent" for n in names}
    assert primary_metric(task) in names


def test_recent_metrics_cover_only_the_window() -> None:
    metrics = ProgressiveMetrics(Task.BINARY, window=2)
    metrics.update(True, False, {False: 0.9, True: 0.1})
    metrics.update(True, True, {False: 0.2, True: 0.8})
    metrics.update(False, False, {False: 0.7, True: 0.3})
    snap = metrics.snapshot()
    assert snap["accuracy"] == pytest.approx(2 / 3)
    assert snap["accuracy_recent"] == pytest.approx(1.0)
    assert snap["log_loss_recent"] == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2)
    assert snap["log_loss"] == pytest.approx(-(math.log(0.1) + math.log(0.8) + math.log(0.7)) / 3)


def test_no_prediction_scores_nothing() -> None:
    metrics = ProgressiveMetrics(Task.BINARY)
    metrics.update(True, None, None)
    metrics.update(True, True, {False: 0.0, True: 1.0})
    assert metrics.snapshot()["accuracy"] == 1.0


# --- Trainer.handle ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stream() -> list[GeneratedEvent]:
    return FraudStream(seed=21, drift_at=10**9).take(600)


def test_topics_for_app() -> None:
    assert (TOPICS.events, TOPICS.labels, TOPICS.dead_letters) == ("t.fraud.events", "t.fraud.labels", "t.fraud.dead-letters")


def test_learns_inline_labelled_events(stream: list[GeneratedEvent]) -> None:
    trainer = Trainer(SPEC, TOPICS)
    records = [event_record(i, g.id, g.features, g.label) for i, g in enumerate(stream[:300])]
    assert feed(trainer, records) == []
    assert trainer.examples_seen == 300
    assert trainer.state.offsets == {EVENTS_TP: 299}
    assert trainer.state.join.waiting_features == 0
    snap = trainer.state.learner.metrics.snapshot()
    assert snap["accuracy"] > 0.85 and snap["roc_auc"] > 0.85


def test_learns_the_same_as_an_online_learner_fed_directly(stream: list[GeneratedEvent]) -> None:
    trainer = Trainer(SPEC, TOPICS)
    feed(trainer, [event_record(i, g.id, g.features, g.label) for i, g in enumerate(stream[:100])])
    direct = OnlineLearner(build_model(SPEC), SPEC.task)
    for g in stream[:100]:
        learn_scored(direct, to_model_input(SPEC, g.features), g.label)
    assert trainer.state.learner.metrics.snapshot() == direct.metrics.snapshot()
    xs = probes(10)
    assert predictions(trainer, xs) == [direct.model.predict_proba_one(x) for x in xs]


def test_joins_late_labels_in_either_order(stream: list[GeneratedEvent]) -> None:
    trainer = Trainer(SPEC, TOPICS)
    a, b, c = stream[:3]
    assert trainer.handle(event_record(0, a.id, a.features)) is None
    assert trainer.examples_seen == 0 and trainer.state.join.waiting_features == 1
    assert trainer.handle(label_record(0, a.id, a.label)) is None
    assert trainer.examples_seen == 1
    assert trainer.handle(label_record(1, b.id, b.label)) is None
    assert trainer.examples_seen == 1 and trainer.state.join.waiting_labels == 1
    assert trainer.handle(event_record(1, b.id, b.features)) is None
    assert trainer.examples_seen == 2
    assert trainer.handle(label_record(2, "never-seen", True)) is None
    assert trainer.handle(event_record(2, c.id, c.features)) is None
    assert (trainer.examples_seen, trainer.state.join.waiting_features, trainer.state.join.waiting_labels) == (2, 1, 1)
    assert trainer.state.offsets == {EVENTS_TP: 2, LABELS_TP: 2}


def test_mixed_workload_learns_every_labelled_event(stream: list[GeneratedEvent]) -> None:
    trainer = Trainer(SPEC, TOPICS)
    records = workload(stream[:200])
    assert feed(trainer, records) == []
    late_pending = sum(1 for i in range(200) if i % 3 == 0 and i + 7 >= 200)
    assert trainer.examples_seen == 200 - late_pending
    assert trainer.state.join.waiting_features == late_pending


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "undecodable"),
        (b"\xff\xfe\x00", "undecodable"),
        (b'{"id": "x"}', "undecodable"),
        (b'{"id": "x", "features": {"amount": [1]}, "timestamp": "2026-01-01T00:00:00Z"}', "undecodable"),
        (None, "empty message"),
    ],
)
def test_poison_bytes_are_rejected_and_the_offset_advances(stream: list[GeneratedEvent], value: bytes | None, reason: str) -> None:
    trainer = Trainer(SPEC, TOPICS)
    g = stream[0]
    trainer.handle(event_record(0, g.id, g.features, g.label))
    record = Record(TOPICS.events, 0, 1, b"k", value)
    rejected = trainer.handle(record)
    assert isinstance(rejected, Rejected)
    assert rejected.record is record
    assert rejected.reason.startswith(reason)
    assert trainer.state.offsets[EVENTS_TP] == 1
    assert trainer.examples_seen == 1
    # The partition keeps flowing after the poison message.
    assert trainer.handle(event_record(2, stream[1].id, stream[1].features, stream[1].label)) is None
    assert trainer.examples_seen == 2


def test_poison_label_bytes_are_rejected() -> None:
    trainer = Trainer(SPEC, TOPICS)
    rejected = trainer.handle(Record(TOPICS.labels, 0, 5, None, b'{"label": true}'))
    assert isinstance(rejected, Rejected) and rejected.reason.startswith("undecodable")
    assert trainer.state.offsets == {LABELS_TP: 5}


def test_features_of_the_wrong_schema_are_rejected(stream: list[GeneratedEvent]) -> None:
    trainer = Trainer(SPEC, TOPICS)
    bad = dict(stream[0].features, amount="12.5", colour="red")
    rejected = trainer.handle(event_record(0, "bad", bad, True))
    assert isinstance(rejected, Rejected)
    assert rejected.reason.startswith("features do not match the schema")
    assert "'amount'" in rejected.reason and "'colour'" in rejected.reason
    missing = dict(stream[0].features)
    del missing["hour"]
    rejected = trainer.handle(event_record(1, "missing", missing, True))
    assert isinstance(rejected, Rejected) and "missing required feature" in rejected.reason
    assert trainer.examples_seen == 0
    assert trainer.state.offsets == {EVENTS_TP: 1}
    assert trainer.state.join.waiting_features == 0


def test_wrong_label_types_are_rejected(stream: list[GeneratedEvent]) -> None:
    trainer = Trainer(SPEC, TOPICS)
    g = stream[0]
    rejected = trainer.handle(event_record(0, g.id, g.features, "yes"))
    assert isinstance(rejected, Rejected) and rejected.reason == "label: expected true or false"
    assert trainer.state.join.waiting_features == 0  # the rejected event is not kept for a later label
    trainer.handle(event_record(1, "late", g.features))
    rejected = trainer.handle(label_record(0, "late", 1.0))
    assert isinstance(rejected, Rejected) and rejected.reason == "label: expected true or false"
    assert trainer.examples_seen == 0
    assert trainer.state.join.waiting_features == 1
    assert trainer.state.offsets == {EVENTS_TP: 1, LABELS_TP: 0}
    assert trainer.handle(label_record(1, "late", True)) is None
    assert trainer.examples_seen == 1


def test_unexpected_topic_is_rejected() -> None:
    trainer = Trainer(SPEC, TOPICS)
    rejected = trainer.handle(Record(TOPICS.predictions, 0, 0, None, b"{}"))
    assert isinstance(rejected, Rejected) and rejected.reason == f"unexpected topic {TOPICS.predictions}"
    assert trainer.state.offsets == {f"{TOPICS.predictions}:0": 0}


def test_records_at_or_below_the_offset_are_skipped(stream: list[GeneratedEvent]) -> None:
    trainer = Trainer(SPEC, TOPICS)
    g0, g1, g2 = stream[:3]
    assert trainer.handle(event_record(5, g0.id, g0.features, g0.label)) is None
    assert trainer.handle(event_record(5, g1.id, g1.features, g1.label)) is None
    assert trainer.handle(event_record(3, g2.id, g2.features, g2.label)) is None
    assert (trainer.examples_seen, trainer.skipped) == (1, 2)
    # One scored prediction only: the untrained model's tie-break answer, False.
    assert trainer.state.learner.metrics.snapshot()["accuracy"] == (1.0 if g0.label is False else 0.0)
    # Offsets are per partition.
    assert trainer.handle(event_record(3, g2.id, g2.features, g2.label, partition=1)) is None
    assert trainer.examples_seen == 2
    assert trainer.state.offsets == {EVENTS_TP: 5, f"{TOPICS.events}:1": 3}
    # A skipped poison record is not rejected again either.
    assert trainer.handle(Record(TOPICS.events, 0, 4, None, b"junk")) is None
    assert trainer.skipped == 3


def test_int_feature_too_large_for_a_float_is_dead_lettered(stream: list[GeneratedEvent]) -> None:
    trainer = Trainer(SPEC, TOPICS)
    features = dict(stream[0].features, hour=10**400)
    value = json.dumps({"id": "big", "features": features, "label": True, "timestamp": "2026-01-01T00:00:00Z"}).encode()
    assert b"0" * 400 in value
    rejected = trainer.handle(Record(TOPICS.events, 0, 0, None, value))
    assert isinstance(rejected, Rejected)


def test_event_without_an_optional_feature_is_learned() -> None:
    spec = parse_app_spec({"name": "o", "task": "binary",
                           "features": {"x": "float", "y": {"type": "float", "required": False}},
                           "model": {"name": "m", "steps": [{"use": "linear_model.LogisticRegression"}]}})
    topics = Topics.for_app("t", "o")
    trainer = Trainer(spec, topics)
    value = EventReceived(id="e", features={"x": 1.0}, label=True, timestamp=datetime.now(UTC)).to_bytes()
    assert trainer.handle(Record(topics.events, 0, 0, None, value)) is None
    assert trainer.examples_seen == 1


# --- snapshot and restore ------------------------------------------------------------------


def test_snapshot_meta_and_model_blob(stream: list[GeneratedEvent]) -> None:
    trainer = Trainer(SPEC, TOPICS)
    feed(trainer, workload(stream[:120]))
    snap = trainer.snapshot(SIGNER)
    meta = snap.meta
    assert (meta.app, meta.model, meta.task, meta.version) == ("fraud", "fraud-lr", "binary", 1)
    assert meta.classes == [False, True]
    assert meta.examples_seen == trainer.examples_seen
    assert meta.offsets == trainer.state.offsets
    assert meta.metrics == trainer.state.learner.metrics.snapshot()
    model_meta, model = unpack(snap.model, SIGNER)
    assert model_meta.version == 1 and model_meta.examples_seen == trainer.examples_seen
    xs = probes(20)
    assert_same_predictions([model.predict_proba_one(x) for x in xs], predictions(trainer, xs))
    # The snapshot is a copy: later work does not change it.
    feed(trainer, [event_record(10_000, "later", stream[0].features, True)])
    assert meta.offsets[EVENTS_TP] < 10_000
    assert trainer.snapshot(SIGNER).meta.version == 2


def test_published_and_unpublished(stream: list[GeneratedEvent]) -> None:
    trainer = Trainer(SPEC, TOPICS)
    feed(trainer, [event_record(i, g.id, g.features, g.label) for i, g in enumerate(stream[:10])])
    assert trainer.unpublished == 10
    snap = trainer.snapshot(SIGNER)
    assert trainer.unpublished == 10
    trainer.mark_published(snap)
    assert trainer.unpublished == 0
    feed(trainer, [event_record(10 + i, g.id, g.features, g.label) for i, g in enumerate(stream[10:15])])
    assert trainer.unpublished == 5


def test_snapshot_restore_continue_is_identical(stream: list[GeneratedEvent]) -> None:
    records = workload(stream[:500])
    split = 280
    original = Trainer(SPEC, TOPICS)
    assert feed(original, records[:split]) == []
    assert original.state.join.waiting_features > 0  # late labels are still outstanding
    snap = original.snapshot(SIGNER)

    restored = Trainer.restore(SPEC, TOPICS, snap.checkpoint, SIGNER)
    assert restored.state is not original.state
    assert restored.examples_seen == original.examples_seen == snap.meta.examples_seen
    assert restored.state.offsets == original.state.offsets
    assert restored.state.version == original.state.version == 1
    assert_same_metrics(restored, original)
    assert restored.state.learner.metrics.snapshot() == snap.meta.metrics
    assert restored.state.join.waiting_features == original.state.join.waiting_features
    assert restored.state.join.waiting_labels == original.state.join.waiting_labels
    xs = probes(50)
    assert_same_predictions(predictions(restored, xs), predictions(original, xs))

    # Continue both with the same further records: the models stay identical.
    assert feed(original, records[split:]) == []
    assert feed(restored, records[split:]) == []
    assert restored.examples_seen == original.examples_seen
    assert restored.state.offsets == original.state.offsets
    assert_same_metrics(restored, original)
    assert_same_predictions(predictions(restored, xs), predictions(original, xs))
    # ... and they did learn something after the restore.
    at_snapshot = [unpack(snap.model, SIGNER)[1].predict_proba_one(x) for x in xs]
    assert max(abs(p[True] - q[True]) for p, q in zip(predictions(restored, xs), at_snapshot, strict=True)) > 1e-3
    assert restored.snapshot(SIGNER).meta.version == 2


def test_replay_after_restore_does_not_double_count(stream: list[GeneratedEvent]) -> None:
    records = workload(stream[:300])
    split = 150
    once = Trainer(SPEC, TOPICS)
    feed(once, records)

    first = Trainer(SPEC, TOPICS)
    feed(first, records[:split])
    restored = Trainer.restore(SPEC, TOPICS, first.snapshot(SIGNER).checkpoint, SIGNER)
    # Kafka redelivers from an older committed position: everything from the start.
    feed(restored, records)
    assert restored.skipped == split
    assert restored.examples_seen == once.examples_seen
    assert restored.state.offsets == once.state.offsets
    assert_same_metrics(restored, once)
    xs = probes(20)
    assert_same_predictions(predictions(restored, xs), predictions(once, xs))


def test_checkpoint_with_a_broken_signature_is_not_restored(stream: list[GeneratedEvent]) -> None:
    trainer = Trainer(SPEC, TOPICS)
    feed(trainer, workload(stream[:30]))
    checkpoint = trainer.snapshot(SIGNER).checkpoint
    forged = dataclasses.replace(checkpoint, signature=Signature("k1", "0" * 64))
    with pytest.raises(BlobRefused, match="bad signature"):
        Trainer.restore(SPEC, TOPICS, forged, SIGNER)
    tampered = dataclasses.replace(checkpoint, blob=checkpoint.blob[:-1] + bytes([checkpoint.blob[-1] ^ 1]))
    with pytest.raises(BlobRefused):
        Trainer.restore(SPEC, TOPICS, tampered, SIGNER)
    with pytest.raises(BlobRefused, match="unknown signing key id"):
        Trainer.restore(SPEC, TOPICS, checkpoint, Signer({"other": b"another-key-0123456789abcdef"}))
    # The genuine checkpoint still restores.
    assert Trainer.restore(SPEC, TOPICS, checkpoint, SIGNER).examples_seen == trainer.examples_seen


def test_a_model_blob_is_not_a_checkpoint(stream: list[GeneratedEvent]) -> None:
    trainer = Trainer(SPEC, TOPICS)
    feed(trainer, workload(stream[:10]))
    snap = trainer.snapshot(SIGNER)
    with pytest.raises(TypeError, match="TrainerState"):
        Trainer.restore(SPEC, TOPICS, snap.model, SIGNER)
    assert isinstance(unpack(snap.checkpoint, SIGNER)[1], TrainerState)


def test_regression_trainer_learns_labelled_events() -> None:
    spec = parse_app_spec({"name": "r", "task": "regression", "features": {"x": "float"},
                           "model": {"name": "m", "steps": [{"use": "linear_model.LinearRegression"}]}})
    topics = Topics.for_app("t", "r")
    trainer = Trainer(spec, topics)
    for i in range(200):
        x = (i % 11 - 5) / 5
        value = EventReceived(id=f"r{i}", features={"x": x}, label=2 * x + 1, timestamp=datetime.now(UTC)).to_bytes()
        assert trainer.handle(Record(topics.events, 0, i, None, value)) is None
    assert trainer.examples_seen == 200
    assert trainer.state.learner.metrics.snapshot()["mae_recent"] < 1.0


def test_a_checkpoint_embeds_the_versions_model_blob_instead_of_pickling_the_model_again(
    stream: list[GeneratedEvent],
) -> None:
    tree = SPEC.for_model(SPEC.model.model_copy(update={"steps": (StepSpec(use="tree.HoeffdingTreeClassifier"),)}))
    trainer = Trainer(tree, TOPICS)
    feed(trainer, workload(stream[:600]))
    snap = trainer.snapshot(SIGNER)
    assert snap.checkpoint is not None
    # The served blob's bytes are in the checkpoint once, and the model is not pickled beside them.
    assert snap.checkpoint.blob.count(snap.model.blob) == 1
    without_model = dataclasses.replace(trainer.state, learner=copy.copy(trainer.state.learner))
    without_model.learner.model = None
    assert len(snap.checkpoint.blob) < len(snap.model.blob) + checkpoint_size(without_model) + 200

    restored = Trainer.restore(tree, TOPICS, snap.checkpoint, SIGNER)
    assert type(restored.state.learner) is OnlineLearner
    assert restored.state.learner.app == trainer.state.learner.app
    assert restored.examples_seen == trainer.examples_seen
    assert_same_metrics(restored, trainer)
    xs = probes(30)
    assert_same_predictions(predictions(restored, xs), predictions(trainer, xs))
    # Restored and original go on identically.
    rest = workload(stream[600:800])
    rest = [dataclasses.replace(r, offset=r.offset + 10_000) for r in rest]
    feed(trainer, rest)
    feed(restored, rest)
    assert_same_predictions(predictions(restored, xs), predictions(trainer, xs))
    assert restored.state.learned_digest == trainer.state.learned_digest


def test_a_checkpoint_with_the_model_pickled_inline_still_restores(stream: list[GeneratedEvent]) -> None:
    """Checkpoints written before the model blob was embedded pickled the learner whole."""
    trainer = Trainer(SPEC, TOPICS)
    feed(trainer, workload(stream[:200]))
    meta = trainer.next_meta()
    old_style = pack(trainer.state, meta, SIGNER)
    restored = Trainer.restore(SPEC, TOPICS, old_style, SIGNER)
    assert restored.examples_seen == trainer.examples_seen
    xs = probes(20)
    assert_same_predictions(predictions(restored, xs), predictions(trainer, xs))


def _mixed_workload(seed: int) -> list[Record]:
    """Late and inline labels, a drift, poison records, events redelivered at new offsets and
    records replayed at offsets already consumed; offsets increase per topic as Kafka's do."""
    rng = random.Random(seed)
    out: list[Record] = []
    next_offset = {TOPICS.events: 0, TOPICS.labels: 0}

    def append(record: Record) -> None:
        out.append(dataclasses.replace(record, offset=next_offset[record.topic]))
        next_offset[record.topic] += 1

    for record in workload(FraudStream(seed=seed, drift_at=1500).take(4000), late_every=4, delay=5):
        roll = rng.random()
        if roll < 0.01:
            append(dataclasses.replace(record, value=b"{not json"))
        elif roll < 0.02:
            append(dataclasses.replace(record, value=(record.value or b"").replace(b'"amount"', b'"amount_x"')))
        else:
            append(record)
        if roll > 0.98:
            append(record)  # the same event again, at a new offset
        if 0.97 < roll <= 0.98:
            out.append(rng.choice(out[-20:]))  # a replay of an offset already consumed
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_records_handled_in_batches_give_exactly_what_one_at_a_time_gives(seed: int) -> None:
    spec = SPEC.for_model(SPEC.model.model_copy(update={"drift": DriftSpec(action="reset", grace=300)}))
    records = _mixed_workload(seed)
    one = Trainer(spec, TOPICS)
    many = Trainer(spec, TOPICS)
    rejected_one = [(r.record.offset, r.record.topic, r.reason) for rec in records if (r := one.handle(rec)) is not None]
    rejected_many = []
    rng = random.Random(seed)
    at = 0
    while at < len(records):
        size = rng.choice([1, 2, 7, 64, 500])
        rejected_many += [(r.record.offset, r.record.topic, r.reason) for r in many.handle_many(records[at:at + size])]
        at += size
    assert rejected_many == rejected_one
    assert len({reason.split(":")[0] for _, _, reason in rejected_one}) >= 2, "poison records of two kinds"
    assert one.skipped == many.skipped > 0
    assert one.state.duplicates == many.state.duplicates > 0
    assert one.state.learned_digest == many.state.learned_digest
    assert one.state.offsets == many.state.offsets
    assert one.examples_seen == many.examples_seen
    drifts_one, drifts_many = one.take_drifts(), many.take_drifts()
    assert drifts_one, "the workload's drift was found"
    assert [(d.examples_seen, d.offsets, d.action) for d in drifts_many] == [(d.examples_seen, d.offsets, d.action) for d in drifts_one]
    assert_same_metrics(one, many)
    xs = probes(20)
    assert_same_predictions(predictions(many, xs), predictions(one, xs))


def test_a_record_that_fails_while_learning_is_rejected_in_its_place(stream: list[GeneratedEvent]) -> None:
    trainer = Trainer(SPEC, TOPICS)
    records = [event_record(i, g.id, g.features, g.label) for i, g in enumerate(stream[:6])]
    learn = trainer.state.learner.predict_then_learn

    def failing(x: dict[str, Any], y: Any) -> Any:
        if trainer.examples_seen == 2:
            trainer.state.learner.examples_seen += 1  # fail once, on the third example
            raise RuntimeError("model broke")
        return learn(x, y)

    trainer.state.learner.predict_then_learn = failing  # type: ignore[method-assign]
    records.insert(4, dataclasses.replace(records[0], offset=100, value=b"[]"))
    records[5:] = [dataclasses.replace(r, offset=101 + i) for i, r in enumerate(records[5:])]
    rejected = trainer.handle_many(records)
    assert [(r.record.offset, r.reason.split(":")[0]) for r in rejected] == [(2, "cannot learn"), (100, "undecodable")]
    assert trainer.examples_seen == 6


@pytest.mark.parametrize("action", ["alert", "reset"])
def test_batches_learn_score_and_watch_drift_as_a_plain_sequential_loop(action: str) -> None:
    """The reference: predict, score, watch the error and learn, one example after the other."""
    drift = DriftSpec(action=action, grace=300)  # type: ignore[arg-type]
    spec = SPEC.for_model(SPEC.model.model_copy(update={"drift": drift}))
    events = FraudStream(seed=4, drift_at=1200).take(3000)
    trainer = Trainer(spec, TOPICS)
    records = [event_record(i, g.id, g.features, g.label) for i, g in enumerate(events)]
    for at in range(0, len(records), 256):
        assert trainer.handle_many(records[at:at + 256]) == []

    model, metrics, monitor = build_model(spec), ProgressiveMetrics(spec.task), DriftMonitor(drift)
    found, digest = [], ""
    for i, g in enumerate(events):
        x = to_model_input(spec, g.features)
        proba = model.predict_proba_one(x)
        y_pred = max(proba, key=proba.get) if proba else None
        metrics.update(g.label, y_pred, proba)
        model.learn_one(x, g.label)
        if (d := monitor.update(0.0 if y_pred == g.label else 1.0, i + 1, lambda: {EVENTS_TP: i})) is not None:
            found.append((d.examples_seen, d.offsets))
            if action == "reset":
                model = build_model(spec)
        digest = hashlib.blake2b(f"{digest}{g.id}".encode(), digest_size=16).hexdigest()

    assert found, "the stream's drift was found"
    assert [(d.examples_seen, d.offsets) for d in trainer.take_drifts()] == found
    assert trainer.state.learned_digest == digest
    assert trainer.state.learner.metrics.snapshot() == pytest.approx(metrics.snapshot(), rel=1e-12)
    xs = probes(20)
    assert_same_predictions(predictions(trainer, xs), [model.predict_proba_one(x) for x in xs])
