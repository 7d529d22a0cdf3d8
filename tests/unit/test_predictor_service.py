"""The predictor without I/O: the served-model holder and request → prediction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydantic
import pytest

from streamwise_core.contracts.appspec import AppSpec, load_app_spec, parse_app_spec
from streamwise_core.contracts.codec import ModelMeta
from streamwise_core.contracts.errors import ValidationFailed
from streamwise_core.contracts.schema import to_model_input
from streamwise_core.domain.inference import label_key, predict
from streamwise_core.domain.pipeline import build_model
from streamwise_devstack.fraud import FraudStream
from streamwise_predictor import predictions
from streamwise_predictor.holder import ModelHolder, ServedModel
from streamwise_predictor.predictions import Batch, Checked, Instance, read_request
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


# --- read_request ---------------------------------------------------------------------------


def batch(instances: list[dict[str, Any]]) -> bytes:
    return json.dumps({"instances": instances}).encode()


def refused(body: bytes, max_batch: int | None = 10) -> list[dict[str, Any]]:
    with pytest.raises(ValidationFailed) as info:
        read_request(SPEC, body, max_batch)
    return info.value.errors


def test_valid_instances_are_read_as_the_model_reads_them() -> None:
    generated = FraudStream(seed=33, drift_at=50).take(100)
    checked = read_request(SPEC, batch([{"id": g.id, "features": g.features} for g in generated]), 100)
    assert checked == [Checked(g.id, to_model_input(SPEC, g.features)) for g in generated]
    assert all(type(c) is Checked for c in checked)
    one = generated[0]
    assert read_request(SPEC, json.dumps({"features": one.features}).encode(), None) == [Checked(None, to_model_input(SPEC, one.features))]
    assert read_request(SPEC, json.dumps({"id": None, "features": one.features}).encode(), None)[0].id is None


def test_invalid_instances_name_index_id_and_field() -> None:
    good = FraudStream(seed=34, drift_at=10**9).take(1)[0].features
    missing = dict(good)
    del missing["hour"]
    errors = refused(batch([
        {"id": "ok", "features": good},
        {"id": "b1", "features": dict(good, amount="12", is_foreign=1)},
        {"features": missing},
        {"id": "b3", "features": dict(good, merchant="casino", extra=1.0)},
        {"id": "ok", "features": good},
    ]))
    got = [(e["index"], e["id"], e["loc"]) for e in errors]
    assert got == [
        (1, "b1", ["features", "amount"]),
        (1, "b1", ["features", "is_foreign"]),
        (2, None, ["features", "hour"]),
        (3, "b3", ["features", "extra"]),
        (3, "b3", ["features", "merchant"]),
        (4, "ok", ["id"]),
    ]
    assert errors[2]["msg"] == "missing required feature"
    assert errors[5]["msg"] == "duplicate id in this request"


def test_an_instance_of_the_wrong_shape_is_named_alone() -> None:
    """As pydantic named them: nothing else is checked once an instance has the wrong shape."""
    good = FraudStream(seed=34, drift_at=10**9).take(1)[0].features
    assert refused(batch([{"id": "a", "features": dict(good, amount="x")}, {"id": "p 1", "features": good, "label": True}])) == [
        {"index": 1, "id": "p 1", "loc": ["id"], "msg": "String should match pattern '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'"},
        {"index": 1, "id": "p 1", "loc": ["label"], "msg": "Extra inputs are not permitted"},
    ]
    assert refused(json.dumps([{"features": good}]).encode(), None) == [
        {"index": 0, "id": None, "loc": [], "msg": "Input should be a valid dictionary or instance of Instance"},
    ]
    assert refused(json.dumps({"id": 5}).encode(), None) == [
        {"index": 0, "id": None, "loc": ["id"], "msg": "Input should be a valid string"},
        {"index": 0, "id": None, "loc": ["features"], "msg": "Field required"},
    ]


@pytest.mark.parametrize(("body", "errors"), [
    (b"[]", [{"loc": ["body"], "msg": "expected an object with 'instances'"}]),
    (b'{"instances": []}', [{"loc": ["body", "instances"], "msg": "expected a non-empty list of instances"}]),
    (b'{"instances": {}, "model": "x"}', [
        {"loc": ["body", "model"], "msg": "unknown field"},
        {"loc": ["body", "instances"], "msg": "expected a non-empty list of instances"},
    ]),
    (batch([{"features": {}}] * 11), [{"loc": ["body", "instances"], "msg": "at most 10 instances per batch"}]),
    # an unknown field stops the check before the features
    (b'{"instances": [{"features": {}}], "x": 1}', [{"loc": ["body", "x"], "msg": "unknown field"}]),
    (b'{"instances": [{"features": {"amount": NaN}}]}', None),
    (b"", [{"loc": ["body"], "msg": "empty body: expected JSON"}]),
])
def test_what_is_wrong_around_a_batch(body: bytes, errors: list[dict[str, Any]] | None) -> None:
    got = refused(body)
    if errors is None:
        assert got[0]["loc"] == ["body"] and got[0]["msg"].startswith("invalid JSON")
    else:
        assert got == errors


def test_integers_past_64_bits_are_read_exactly() -> None:
    good = FraudStream(seed=34, drift_at=10**9).take(1)[0].features
    body = json.dumps({"features": dict(good, amount=10**30, hour=2**64)}).encode()
    (checked,) = read_request(SPEC, body, None)
    assert checked.x["amount"] == 1e30 and checked.x["hour"] == 2.0**64
    assert refused(json.dumps({"features": dict(good, is_foreign=10**30)}).encode(), None)[0]["msg"] == "expected true or false, got int"


@pytest.mark.parametrize(("y", "proba"), [
    (True, {False: 0.25, True: 0.75}), (None, None), (None, {}), (2.5, None), (float("nan"), None), (float("inf"), None),
    ("a", {"a": float("nan"), "b": 0.5}), ("a", {"a": float("inf"), "b": float("-inf")}), (True, {True: 1e308, False: 1e308}),
    (True, {True: 10**400, False: 0.0}), (True, {True: 10**300, False: 0.0}), (True, {True: "0.5", False: 0.5}),
    (True, {True: "nan", False: 0.5}), (True, {True: "x", False: 0.5}), (True, {True: None, False: 0.5}),
    (True, {True: 1, False: 0}), (1e308, {True: 1e308}), (-0.0, {"a": -0.0}), (True, {True: complex(1, 0)}),
])
def test_the_finite_check_gives_the_element_by_element_verdict(y: Any, proba: Any) -> None:
    np = pytest.importorskip("numpy")
    assert predictions._finite_answer(y, proba) == predictions._finite_values(y, proba)
    if isinstance(y, float):
        assert predictions._finite_answer(np.float64(y), proba) == predictions._finite_values(np.float64(y), proba)
    if proba:
        as_numpy = {k: np.float64(v) if isinstance(v, float) else v for k, v in proba.items()}
        assert predictions._finite_answer(y, as_numpy) == predictions._finite_values(y, as_numpy)


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
