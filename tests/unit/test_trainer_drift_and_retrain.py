"""Drift detection on the error stream, the drift actions inside the trainer, and periodic
retraining with scikit-learn, scored and served like an online model."""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime

import pytest
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from streamwise_core.contracts.appspec import DriftSpec, ModelSpec, RetrainSpec, StepSpec, Task
from streamwise_core.contracts.errors import SpecError
from streamwise_core.contracts.events import EventReceived
from streamwise_core.domain.inference import predict
from streamwise_core.domain.pipeline import build_model
from streamwise_core.domain.retrain import BatchModel, build_estimator
from streamwise_devstack.fraud import FraudStream
from streamwise_trainer.drift import DriftMonitor
from streamwise_trainer.learner import RetrainingLearner
from streamwise_trainer.learning import Record, Trainer

from .trainer_support import SIGNER, learn_scored, trainer_settings

SETTINGS = trainer_settings()
SPEC, TOPICS = SETTINGS.spec, SETTINGS.topics


def _records(n: int, *, drift_at: int, seed: int = 5) -> list[Record]:
    out = []
    for i, g in enumerate(FraudStream(seed=seed, drift_at=drift_at).take(n)):
        value = EventReceived(id=g.id, features=g.features, label=g.label, timestamp=datetime.now(UTC)).to_bytes()
        out.append(Record(TOPICS.events, 0, i, g.id.encode(), value))
    return out


def test_adwin_fires_after_the_error_rate_jumps_and_not_before() -> None:
    rng = random.Random(1)
    monitor = DriftMonitor(DriftSpec(grace=100))
    found = []
    for i in range(6000):
        error = float(rng.random() < (0.05 if i < 3000 else 0.5))
        if (d := monitor.update(error, i + 1, lambda: {"t:0": i})) is not None:
            found.append(d)
    assert found, "a tenfold error rate must be noticed"
    assert 3000 < found[0].examples_seen < 3400
    assert found[0].offsets == {"t:0": found[0].examples_seen - 1}
    assert 0.05 < found[0].error_after < 1 and found[0].action == "alert"


def _two_changes(grace: int) -> list[int]:
    """Error rate 5 %, then 60 % from 3,000, then 5 % again from 4,000: two changes 1,000 apart."""
    rng = random.Random(2)
    monitor = DriftMonitor(DriftSpec(grace=grace))
    rates = [0.05 if i < 3000 else 0.6 if i < 4000 else 0.05 for i in range(8000)]
    return [i for i, rate in enumerate(rates) if monitor.update(float(rng.random() < rate), i + 1, dict)]


def test_grace_keeps_a_detector_quiet_after_a_drift() -> None:
    assert len(_two_changes(grace=100)) >= 2, "both changes are seen without a long grace"
    hits = _two_changes(grace=3000)
    assert len(hits) == 1 and 3000 < hits[0] < 3400


def _with_drift(action: str) -> Trainer:
    model = SPEC.model.model_copy(update={"drift": DriftSpec(action=action, grace=500)})  # type: ignore[arg-type]
    return Trainer(SPEC.for_model(model), TOPICS)


def test_the_trainer_detects_the_demo_streams_concept_drift() -> None:
    trainer = _with_drift("alert")
    for r in _records(9000, drift_at=5000):
        trainer.handle(r)
    drifts = trainer.take_drifts()
    assert drifts and drifts[0].examples_seen > 5000, [d.examples_seen for d in drifts]
    assert trainer.take_drifts() == [], "handed over once"


def test_reset_starts_the_model_afresh_and_keeps_the_metrics() -> None:
    trainer = _with_drift("reset")
    for r in _records(9000, drift_at=5000):
        before = trainer.state.learner.model
        trainer.handle(r)
        if trainer.state.drifts:
            assert trainer.state.learner.model is not before
            break
    else:
        pytest.fail("no drift detected")
    assert trainer.examples_seen > 5000 and trainer.state.learner.metrics.snapshot()["accuracy"] > 0.5


def test_a_checkpoint_restores_the_detector_exactly() -> None:
    records = _records(8000, drift_at=4000)
    straight = _with_drift("alert")
    for r in records:
        straight.handle(r)
    first = _with_drift("alert")
    for r in records[:3000]:
        first.handle(r)
    snap = first.snapshot(SIGNER)
    assert snap.checkpoint is not None
    resumed = Trainer.restore(first.spec, TOPICS, snap.checkpoint, SIGNER)
    for r in records:
        resumed.handle(r)
    assert [d.examples_seen for d in resumed.state.drifts] == [d.examples_seen for d in straight.state.drifts]
    assert resumed.state.learned_digest == straight.state.learned_digest


RETRAIN = ModelSpec(
    name="fraud-batch", kind="retrain", retrain=RetrainSpec(every=200, window=500),
    steps=(StepSpec(use="linear_model.LogisticRegression", params={"max_iter": 500}),),
)


def test_retraining_fits_every_m_examples_on_the_last_k() -> None:
    app = SPEC.for_model(RETRAIN)
    learner = RetrainingLearner(app)
    stream = FraudStream(seed=9, drift_at=10**9).take(1000)
    for g in stream[:199]:
        learn_scored(learner, g.features, g.label)
    assert learner.fits == 0 and learner.model.pipeline is None
    assert predict(learner.model, Task.BINARY, stream[0].features) == (None, None), "nothing to answer before the first fit"
    for g in stream[199:1000]:
        learn_scored(learner, g.features, g.label)
    assert learner.fits == 5 and learner.examples_seen == 1000
    # The model served equals a pipeline fitted by hand on the last 500 examples.
    window = stream[500:1000]
    reference = make_pipeline(DictVectorizer(sparse=False), StandardScaler(), LogisticRegression(max_iter=500))
    reference.fit([g.features for g in window], [g.label for g in window])
    probe = FraudStream(seed=10, drift_at=10**9).take(50)
    for g in probe:
        ours = learner.model.predict_proba_one(g.features)
        theirs = reference.predict_proba([g.features])[0]
        assert ours[True] == pytest.approx(theirs[list(reference.classes_).index(True)])
    assert 0.7 < learner.metrics.snapshot()["accuracy"] <= 1.0


def test_a_retrained_model_survives_the_signed_blob_and_answers_like_river() -> None:
    app = SPEC.for_model(RETRAIN)
    trainer = Trainer(app, TOPICS)
    for r in _records(600, drift_at=10**9):
        trainer.handle(r)
    snap = trainer.snapshot(SIGNER)
    model = pickle.loads(snap.model.blob)
    assert isinstance(model, BatchModel)
    g = FraudStream(seed=12, drift_at=10**9).next_event()
    label, proba = predict(model, Task.BINARY, g.features)
    assert isinstance(label, bool) and set(proba or {}) == {False, True}
    assert snap.meta.model == "fraud-batch" and snap.meta.examples_seen == 600
    # Its checkpoint holds the served blob, and restores the window and the fitted pipeline.
    assert snap.checkpoint is not None and snap.checkpoint.blob.count(snap.model.blob) == 1
    restored = Trainer.restore(app, TOPICS, snap.checkpoint, SIGNER)
    learner = restored.state.learner
    assert isinstance(learner, RetrainingLearner) and learner.fits == 3 and len(learner._window) == 500
    assert predict(learner.model, Task.BINARY, g.features) == (label, proba)


def test_build_model_refuses_a_retrain_spec_and_bad_sklearn_paths_are_spec_errors() -> None:
    with pytest.raises(SpecError, match="retrained periodically"):
        build_model(SPEC.for_model(RETRAIN))
    bad = RETRAIN.model_copy(update={"steps": (StepSpec(use="linear_model.NoSuchThing"),)})
    with pytest.raises(SpecError, match="not a class of sklearn"):
        build_estimator(SPEC, bad)
