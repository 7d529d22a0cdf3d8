"""The predictor without I/O: the served-model holder and request → prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest

from streamwise_core.appspec import AppSpec, load_app_spec, parse_app_spec
from streamwise_core.codec import ModelMeta
from streamwise_core.errors import ValidationFailed
from streamwise_core.inference import label_key, predict
from streamwise_core.pipeline import build_model
from streamwise_core.schema import to_model_input
from streamwise_devstack.fraud import FraudStream
from streamwise_predictor.holder import ModelHolder, ServedModel
from streamwise_predictor.predictions import Batch, Instance, check_instances
from tests.model_helpers import predict_instances

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_app_spec(ROOT / "examples" / "fraud" / "streamwise.toml")


def meta(version: int, spec: AppSpec = SPEC) -> ModelMeta:
    return ModelMeta(app=spec.name, model=spec.model.name, version=version, task=spec.task.value, examples_seen=version * 10)


def trained_fraud_model(n: int = 300, seed: int = 31) -> Any:
    model = build_model(SPEC)
    for g in FraudStream(seed=seed, drift_at=10**9).take(n):
        model.learn_one(to_model_input(SPEC, g.features), g.label)
    return model


@pytest.fixture(scope="module")
def fraud_model() -> Any:
    return trained_fraud_model()


# --- ModelHolder ---------------------------------------------------------------------------


def test_empty_holder() -> None:
    holder = ModelHolder()
    assert (holder.current, holder.version, holder.swaps) == (None, None, 0)


def test_first_offer_is_served_whatever_its_version() -> None:
    holder = ModelHolder()
    first = ServedModel(meta(0), "m0")
    assert holder.offer(first) is True
    assert holder.current is first and holder.version == 0 and holder.swaps == 1


def test_newer_swaps_older_or_equal_is_refused() -> None:
    holder = ModelHolder()
    v1, v2, v3 = (ServedModel(meta(v), f"model-{v}") for v in (1, 2, 3))
    assert holder.offer(v2) is True
    assert holder.offer(v1) is False
    assert holder.current is v2
    same = ServedModel(meta(2), "another model claiming v2")
    assert holder.offer(same) is False
    assert holder.current is v2
    assert holder.offer(v3) is True
    assert holder.current is v3 and holder.version == 3
    assert holder.offer(v2) is False
    assert holder.swaps == 2


def test_a_request_keeps_the_model_it_took_across_a_swap(fraud_model: Any) -> None:
    holder = ModelHolder()
    holder.offer(ServedModel(meta(1), fraud_model))
    instances = [Instance(id=g.id, features=g.features) for g in FraudStream(seed=32, drift_at=10**9).take(5)]

    taken = holder.current  # what a request reads once, at its start
    assert taken is not None
    before = predict_instances(SPEC, taken, instances)

    other = build_model(SPEC)  # an untrained model: every answer differs
    assert holder.offer(ServedModel(meta(2), other)) is True

    assert taken.meta.version == 1 and taken.model is fraud_model
    assert holder.current is not None and holder.current.model is other and holder.version == 2
    assert predict_instances(SPEC, taken, instances) == before
    after = predict_instances(SPEC, holder.current, instances)
    assert [p.probabilities for p in after] == [{"false": 0.5, "true": 0.5}] * 5
    assert [p.probabilities for p in after] != [p.probabilities for p in before]


# --- request models ------------------------------------------------------------------------


def test_instance_refuses_extra_keys_and_bad_ids() -> None:
    with pytest.raises(pydantic.ValidationError):
        Instance.model_validate({"features": {}, "label": True})
    with pytest.raises(pydantic.ValidationError):
        Instance.model_validate({"id": "has space", "features": {}})
    assert Instance.model_validate({"features": {"a": 1}}).id is None


def test_batch_needs_an_instance() -> None:
    with pytest.raises(pydantic.ValidationError):
        Batch.model_validate({"instances": []})
    assert len(Batch.model_validate({"instances": [{"features": {}}]}).instances) == 1


# --- check_instances -----------------------------------------------------------------------


def test_valid_instances_pass() -> None:
    instances = [Instance(id=g.id, features=g.features) for g in FraudStream(seed=33, drift_at=50).take(100)]
    assert check_instances(SPEC, instances) is None


def test_invalid_instances_name_index_id_and_field() -> None:
    good = FraudStream(seed=34, drift_at=10**9).take(1)[0].features
    missing = dict(good)
    del missing["hour"]
    instances = [
        Instance(id="ok", features=good),
        Instance(id="b1", features=dict(good, amount="12", is_foreign=1)),
        Instance(features=missing),
        Instance(id="b3", features=dict(good, merchant="casino", extra=1.0)),
    ]
    with pytest.raises(ValidationFailed) as info:
        check_instances(SPEC, instances)
    got = [(e["index"], e["id"], e["loc"]) for e in info.value.errors]
    assert got == [
        (1, "b1", ["features", "amount"]),
        (1, "b1", ["features", "is_foreign"]),
        (2, None, ["features", "hour"]),
        (3, "b3", ["features", "extra"]),
        (3, "b3", ["features", "merchant"]),
    ]
    assert info.value.errors[2]["msg"] == "missing required feature"


# --- predict_instances ---------------------------------------------------------------------


def test_binary_predictions_are_probabilities_over_true_and_false(fraud_model: Any) -> None:
    served = ServedModel(meta(7), fraud_model)
    generated = FraudStream(seed=35, drift_at=10**9).take(40)
    instances = [Instance(id=g.id, features=g.features) for g in generated]
    preds = predict_instances(SPEC, served, instances)
    assert [p.id for p in preds] == [g.id for g in generated]
    for p, g in zip(preds, generated, strict=True):
        assert p.probabilities is not None
        assert set(p.probabilities) == {"true", "false"}
        assert sum(p.probabilities.values()) == pytest.approx(1.0)
        assert all(0.0 <= v <= 1.0 for v in p.probabilities.values())
        assert isinstance(p.prediction, bool)
        assert p.prediction is (p.probabilities["true"] > p.probabilities["false"])
        expected = fraud_model.predict_proba_one(to_model_input(SPEC, g.features))
        assert p.probabilities["true"] == pytest.approx(expected[True])
    # A trained model is not a coin flip, and it tells fraud apart on most events.
    assert len({round(p.probabilities["true"], 6) for p in preds}) > 30
    accuracy = sum(p.prediction == g.label for p, g in zip(preds, generated, strict=True)) / len(generated)
    assert accuracy >= 0.75


def test_binary_prediction_serializes_with_json_keys(fraud_model: Any) -> None:
    g = FraudStream(seed=36, drift_at=10**9).take(1)[0]
    (pred,) = predict_instances(SPEC, ServedModel(meta(1), fraud_model), [Instance(features=g.features)])
    data = pred.model_dump(mode="json")
    assert set(data) == {"id", "prediction", "probabilities"}
    assert isinstance(data["id"], str) and len(data["id"]) == 32  # generated, so it can be labelled
    assert isinstance(data["prediction"], bool)
    assert set(data["probabilities"]) == {"true", "false"}


def test_multiclass_predictions() -> None:
    spec = parse_app_spec({
        "name": "mc", "task": "multiclass", "features": {"x": "float"},
        "label": {"classes": ["lo", "mid", "hi"]},
        "model": {"name": "m", "steps": [{"use": "linear_model.SoftmaxRegression"}]},
    })
    untrained = predict_instances(spec, ServedModel(meta(1, spec), build_model(spec)), [Instance(features={"x": 0.0})])
    assert (untrained[0].prediction, untrained[0].probabilities) == (None, None)
    model = build_model(spec)
    for i in range(300):
        x = (i % 30) / 10 - 1.5
        model.learn_one({"x": x}, "lo" if x < -0.5 else "hi" if x > 0.5 else "mid")
    preds = predict_instances(spec, ServedModel(meta(2, spec), model), [Instance(features={"x": v}) for v in (-1.4, 1.4)])
    assert [p.prediction for p in preds] == ["lo", "hi"]
    for p in preds:
        assert p.probabilities is not None
        assert set(p.probabilities) == {"lo", "mid", "hi"}
        assert sum(p.probabilities.values()) == pytest.approx(1.0)


def test_regression_returns_a_float_and_no_probabilities() -> None:
    spec = parse_app_spec({"name": "r", "task": "regression", "features": {"x": "float", "k": "category"},
                           "model": {"name": "m", "steps": [{"use": "linear_model.LinearRegression"}]}})
    model = build_model(spec)
    for i in range(2000):
        x = (i % 21 - 10) / 10
        model.learn_one({"x": x, "k": "a"}, 2.0 * x + 1.0)
    preds = predict_instances(spec, ServedModel(meta(1, spec), model),
                              [Instance(id="r1", features={"x": 0.0, "k": "a"}), Instance(features={"x": 1.0, "k": "a"})])
    assert preds[0].id == "r1" and preds[1].id is not None and len(preds[1].id) == 32
    for p in preds:
        assert isinstance(p.prediction, float) and not isinstance(p.prediction, bool)
        assert p.probabilities is None
    assert preds[0].prediction == pytest.approx(1.0, abs=0.25)
    assert preds[1].prediction == pytest.approx(3.0, abs=0.25)


def test_predict_and_label_key() -> None:
    assert label_key(True) == "true" and label_key(False) == "false"
    assert label_key("mid") == "mid" and label_key(3) == "3"
    model = build_model(SPEC)
    x = to_model_input(SPEC, FraudStream(seed=37, drift_at=10**9).take(1)[0].features)
    assert predict(model, SPEC.task, x) == (False, {False: 0.5, True: 0.5})
