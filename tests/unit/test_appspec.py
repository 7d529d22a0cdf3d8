"""The application spec (TOML, validation) and the river pipeline built from it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from river import base, compose, linear_model, preprocessing

from streamwise_core.contracts.appspec import AppSpec, FeatureSpec, FeatureType, Task, load_app_spec, parse_app_spec
from streamwise_core.contracts.errors import SpecError, StreamwiseError
from streamwise_core.contracts.schema import to_model_input
from streamwise_core.domain.pipeline import SelectPresent, build_model
from streamwise_devstack.fraud import MERCHANTS, FraudStream

ROOT = Path(__file__).resolve().parents[2]
FRAUD_SPEC = ROOT / "examples" / "fraud" / "streamwise.toml"


def spec_dict(**overrides: Any) -> dict[str, Any]:
    """A minimal valid binary spec as a dict, with top-level keys replaced."""
    data: dict[str, Any] = {
        "name": "demo",
        "task": "binary",
        "features": {"x": "float", "c": {"type": "category", "values": ["a", "b"]}},
        "model": {"name": "m", "steps": [{"use": "linear_model.LogisticRegression"}]},
    }
    data.update(overrides)
    return data


def model_dict(*steps: dict[str, Any], preprocess: str = "auto") -> dict[str, Any]:
    return {"name": "m", "preprocess": preprocess, "steps": list(steps)}


@pytest.fixture(scope="module")
def fraud() -> AppSpec:
    return load_app_spec(FRAUD_SPEC)


# --- loading ---------------------------------------------------------------------------


def test_fraud_toml_loads_with_every_declared_field(fraud: AppSpec) -> None:
    assert fraud.name == "fraud"
    assert fraud.task is Task.BINARY
    assert fraud.label.name == "is_fraud"
    assert fraud.label.classes is None
    assert fraud.classes == (False, True)
    assert list(fraud.features) == [
        "amount", "hour", "distance_km", "is_foreign", "card_present", "merchant", "txn_last_hour",
    ]
    assert fraud.features["amount"] == FeatureSpec(type=FeatureType.FLOAT)
    assert fraud.features["hour"].type is FeatureType.INT
    assert fraud.features["is_foreign"].type is FeatureType.BOOL
    assert fraud.features["merchant"].type is FeatureType.CATEGORY
    assert fraud.features["merchant"].values == MERCHANTS
    assert all(f.required for f in fraud.features.values())
    assert fraud.model.name == "fraud-lr"
    assert fraud.model.preprocess == "auto"
    (step,) = fraud.model.steps
    assert step.use == "linear_model.LogisticRegression"
    assert step.params == {"optimizer": {"use": "optim.SGD", "args": [0.05]}, "l2": 0.0}


def test_fraud_model_builds_with_its_nested_optimizer(fraud: AppSpec) -> None:
    model = build_model(fraud)
    lr = list(model.steps.values())[-1]
    assert isinstance(lr, linear_model.LogisticRegression)
    assert math.isclose(lr.optimizer.learning_rate, 0.05)
    assert lr.l2 == 0.0


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        load_app_spec(tmp_path / "nope.toml")


def test_invalid_toml_is_a_spec_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\ntask = \n', encoding="utf-8")
    with pytest.raises(SpecError, match="not valid TOML") as info:
        load_app_spec(path)
    assert str(path) in str(info.value)


def test_valid_toml_with_invalid_content_is_a_spec_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\ntask = "clustering"\n[features]\nx = "float"\n', encoding="utf-8")
    with pytest.raises(SpecError, match="invalid application spec"):
        load_app_spec(path)


def test_spec_error_is_not_retriable() -> None:
    assert issubclass(SpecError, StreamwiseError)
    assert SpecError("x").retriable is False


def test_spec_is_frozen(fraud: AppSpec) -> None:
    with pytest.raises(ValidationError):
        fraud.name = "other"  # type: ignore[misc]
    assert fraud.name == "fraud"


# --- validation ------------------------------------------------------------------------


def test_shorthand_feature_equals_the_full_table() -> None:
    spec = parse_app_spec(spec_dict(features={"x": "int", "y": {"type": "int"}, "z": {"type": "int", "required": False}}))
    assert spec.features["x"] == spec.features["y"] == FeatureSpec(type=FeatureType.INT, required=True)
    assert spec.features["z"].required is False
    assert spec.features["x"].numeric and not FeatureSpec(type=FeatureType.CATEGORY).numeric


def test_unknown_feature_type_is_refused() -> None:
    with pytest.raises(SpecError, match="x"):
        parse_app_spec(spec_dict(features={"x": "string"}))


def test_unknown_feature_option_is_refused() -> None:
    with pytest.raises(SpecError, match="extra|Extra"):
        parse_app_spec(spec_dict(features={"x": {"type": "float", "min": 0}}))


def test_at_least_one_feature() -> None:
    with pytest.raises(SpecError, match="at least one feature"):
        parse_app_spec(spec_dict(features={}))


def test_multiclass_needs_classes() -> None:
    with pytest.raises(SpecError, match="multiclass task needs label.classes"):
        parse_app_spec(spec_dict(task="multiclass"))
    with pytest.raises(SpecError, match="multiclass task needs label.classes"):
        parse_app_spec(spec_dict(task="multiclass", label={"classes": []}))
    spec = parse_app_spec(spec_dict(task="multiclass", label={"name": "kind", "classes": ["a", "b", "c"]}))
    assert spec.classes == ("a", "b", "c")
    assert spec.label.name == "kind"


@pytest.mark.parametrize("task", ["binary", "regression"])
def test_classes_only_for_multiclass(task: str) -> None:
    with pytest.raises(SpecError, match="only applies to multiclass"):
        parse_app_spec(spec_dict(task=task, label={"classes": ["a", "b"]}))


def test_regression_has_no_classes() -> None:
    spec = parse_app_spec(spec_dict(task="regression", model=model_dict({"use": "linear_model.LinearRegression"})))
    assert spec.classes is None


@pytest.mark.parametrize("name", ["", "Fraud", "-fraud", "_x", "has space", "a.b", "a/b", "a" * 64, "é"])
def test_bad_model_and_app_names_are_refused(name: str) -> None:
    with pytest.raises(SpecError, match="name"):
        parse_app_spec(spec_dict(model={"name": name, "steps": [{"use": "linear_model.LogisticRegression"}]}))
    with pytest.raises(SpecError, match="name"):
        parse_app_spec(spec_dict(name=name))


@pytest.mark.parametrize("name", ["a", "0", "fraud-lr", "fraud_lr2", "a" * 63])
def test_good_names_are_accepted(name: str) -> None:
    spec = parse_app_spec(spec_dict(name=name, model={"name": name, "steps": [{"use": "linear_model.LogisticRegression"}]}))
    assert spec.name == spec.model.name == name


def test_model_needs_a_step() -> None:
    with pytest.raises(SpecError, match="at least one step"):
        parse_app_spec(spec_dict(model={"name": "m", "steps": []}))


def test_preprocess_must_be_auto_or_none() -> None:
    with pytest.raises(SpecError, match="preprocess must be"):
        parse_app_spec(spec_dict(model=model_dict({"use": "linear_model.LogisticRegression"}, preprocess="minmax")))


def test_unknown_top_level_key_is_refused() -> None:
    with pytest.raises(SpecError, match="colour"):
        parse_app_spec(spec_dict(colour="blue"))


# --- building the pipeline ---------------------------------------------------------------


@pytest.mark.parametrize(
    "use",
    [
        "linear_model.NoSuchModel",
        "no_such_module.Model",
        "LogisticRegression",
        "sklearn:linear_model.NoSuchClassifier",
        "sklearn:no_such_module.Thing",
    ],
)
def test_unknown_step_path_is_a_spec_error_naming_it(use: str) -> None:
    spec = parse_app_spec(spec_dict(model=model_dict({"use": use})))
    with pytest.raises(SpecError) as info:
        build_model(spec)
    assert repr(use)[1:-1] in str(info.value)


def test_unknown_nested_step_path_is_a_spec_error_naming_it() -> None:
    step = {"use": "linear_model.LogisticRegression", "params": {"optimizer": {"use": "optim.NoSuchOptimizer"}}}
    spec = parse_app_spec(spec_dict(model=model_dict(step)))
    with pytest.raises(SpecError, match="optim.NoSuchOptimizer"):
        build_model(spec)


def test_bad_step_parameter_is_a_spec_error_naming_the_step() -> None:
    step = {"use": "linear_model.LogisticRegression", "params": {"no_such_param": 1}}
    spec = parse_app_spec(spec_dict(model=model_dict(step)))
    with pytest.raises(SpecError, match="cannot build linear_model.LogisticRegression"):
        build_model(spec)


def test_bad_key_in_nested_step_table_is_a_spec_error() -> None:
    step = {"use": "linear_model.LogisticRegression", "params": {"optimizer": {"use": "optim.SGD", "lr": 0.1}}}
    spec = parse_app_spec(spec_dict(model=model_dict(step)))
    with pytest.raises(SpecError):
        build_model(spec)


def test_step_args_are_built_positionally() -> None:
    step = {"use": "linear_model.LogisticRegression", "args": [{"use": "optim.Adam", "args": [0.003]}]}
    model = build_model(parse_app_spec(spec_dict(model=model_dict(step, preprocess="none"))))
    assert isinstance(model, linear_model.LogisticRegression)
    assert type(model.optimizer).__name__ == "Adam"
    assert math.isclose(model.optimizer.learning_rate, 0.003)


def test_sklearn_classifier_is_wrapped_and_learns(fraud: AppSpec) -> None:
    data = fraud.model_dump(mode="python")
    data["model"] = model_dict({"use": "sklearn:linear_model.SGDClassifier", "params": {"loss": "log_loss", "random_state": 0}})
    spec = parse_app_spec(data)
    model = build_model(spec)
    last = list(model.steps.values())[-1]
    assert isinstance(last, base.Classifier)
    assert type(last).__module__.startswith("river.compat")
    train = FraudStream(seed=3, drift_at=10**9).take(400)
    test = FraudStream(seed=4, drift_at=10**9).take(300)
    for ev in train:
        model.learn_one(to_model_input(spec, ev.features), ev.label)
    predictions = [model.predict_one(to_model_input(spec, ev.features)) for ev in test]
    assert set(predictions) <= {False, True}
    accuracy = sum(p == ev.label for p, ev in zip(predictions, test, strict=True)) / len(test)
    majority = max(sum(ev.label for ev in test), sum(not ev.label for ev in test)) / len(test)
    assert accuracy > majority + 0.1, (accuracy, majority)


def test_sklearn_regressor_is_wrapped_and_learns() -> None:
    spec = parse_app_spec(
        {
            "name": "reg",
            "task": "regression",
            "features": {"x": "float"},
            "model": model_dict({"use": "sklearn:linear_model.SGDRegressor", "params": {"random_state": 0}}),
        }
    )
    model = build_model(spec)
    assert isinstance(list(model.steps.values())[-1], base.Regressor)
    for i in range(600):
        x = (i % 21 - 10) / 10
        model.learn_one({"x": x}, 3.0 * x + 1.0)
    assert model.predict_one({"x": 0.0}) == pytest.approx(1.0, abs=0.3)
    assert model.predict_one({"x": 0.5}) > model.predict_one({"x": -0.5}) + 1.0


def test_sklearn_multiclass_gets_the_declared_classes() -> None:
    spec = parse_app_spec(
        spec_dict(
            task="multiclass",
            label={"classes": ["lo", "mid", "hi"]},
            features={"x": "float"},
            model=model_dict({"use": "sklearn:linear_model.SGDClassifier", "params": {"loss": "log_loss", "random_state": 0}}),
        )
    )
    model = build_model(spec)
    # The very first partial_fit must already know every class, or later ones are refused.
    model.learn_one({"x": -1.0}, "lo")
    model.learn_one({"x": 1.0}, "hi")
    model.learn_one({"x": 0.0}, "mid")
    assert set(model.predict_proba_one({"x": 0.2})) == {"lo", "mid", "hi"}


def test_auto_preprocessing_scales_numbers_and_one_hot_encodes_categories(fraud: AppSpec) -> None:
    model = build_model(fraud)
    pre, last = list(model.steps.values())
    assert isinstance(pre, compose.TransformerUnion)
    assert isinstance(last, linear_model.LogisticRegression)
    x1 = {"amount": 10.0, "hour": 3.0, "distance_km": 1.0, "is_foreign": 1.0, "card_present": 0.0,
          "merchant": "fuel", "txn_last_hour": 2.0, "not_declared": 7.0}
    x2 = dict(x1, amount=30.0, merchant="crypto")
    pre.learn_one(x1)
    pre.learn_one(x2)
    out = pre.transform_one(x2)
    numeric = {n for n, f in fraud.features.items() if f.numeric}
    assert numeric == {"amount", "hour", "distance_km", "is_foreign", "card_present", "txn_last_hour"}
    assert set(out) == numeric | {"merchant_fuel", "merchant_crypto"}
    assert "merchant" not in out and "not_declared" not in out
    # Standardized: amount is one std above its mean (20 ± 10); constant features become 0.
    assert out["amount"] == pytest.approx(1.0)
    assert out["hour"] == pytest.approx(0.0)
    assert out["merchant_crypto"] == 1 and out["merchant_fuel"] == 0


def test_auto_preprocessing_with_numbers_only_has_no_encoder() -> None:
    spec = parse_app_spec(spec_dict(features={"x": "float", "n": "int"}))
    model = build_model(spec)
    # river flattens nested pipelines: Select | StandardScaler | model.
    kinds = [type(s) for s in model.steps.values()]
    assert kinds == [SelectPresent, preprocessing.StandardScaler, linear_model.LogisticRegression]
    assert set(list(model.steps.values())[0].keys) == {"x", "n"}


def test_auto_preprocessing_with_categories_only_has_no_scaler() -> None:
    spec = parse_app_spec(spec_dict(features={"c": "category"}))
    model = build_model(spec)
    kinds = [type(s) for s in model.steps.values()]
    assert kinds == [SelectPresent, preprocessing.OneHotEncoder, linear_model.LogisticRegression]
    assert set(list(model.steps.values())[0].keys) == {"c"}


def test_preprocess_none_builds_the_bare_step() -> None:
    spec = parse_app_spec(spec_dict(model=model_dict({"use": "linear_model.LogisticRegression"}, preprocess="none")))
    assert isinstance(build_model(spec), linear_model.LogisticRegression)


def test_steps_are_chained_after_the_preprocessing() -> None:
    spec = parse_app_spec(
        spec_dict(
            features={"x": "float"},
            model=model_dict({"use": "preprocessing.MinMaxScaler"}, {"use": "linear_model.LogisticRegression"}),
        )
    )
    kinds = [type(s).__name__ for s in build_model(spec).steps.values()]
    assert kinds == ["SelectPresent", "StandardScaler", "MinMaxScaler", "LogisticRegression"]


@pytest.mark.parametrize(
    ("task", "use", "expected"),
    [
        ("binary", "linear_model.LinearRegression", "Classifier"),
        ("binary", "preprocessing.StandardScaler", "Classifier"),
        ("multiclass", "linear_model.LinearRegression", "Classifier"),
        ("regression", "linear_model.LogisticRegression", "Regressor"),
        ("regression", "tree.HoeffdingTreeClassifier", "Regressor"),
    ],
)
def test_last_step_must_fit_the_task(task: str, use: str, expected: str) -> None:
    label = {"classes": ["a", "b"]} if task == "multiclass" else {}
    spec = parse_app_spec(spec_dict(task=task, label=label, model=model_dict({"use": use})))
    with pytest.raises(SpecError, match=f"must be a river {expected} for a {task} task"):
        build_model(spec)


@pytest.mark.parametrize(
    ("task", "use"),
    [
        ("regression", "sklearn:linear_model.SGDClassifier"),
        ("binary", "sklearn:linear_model.SGDRegressor"),
        ("binary", "sklearn:linear_model.LogisticRegression"),
    ],
)
def test_unusable_sklearn_estimator_is_a_spec_error(task: str, use: str) -> None:
    spec = parse_app_spec(spec_dict(task=task, model=model_dict({"use": use})))
    with pytest.raises(SpecError):
        build_model(spec)


@pytest.mark.parametrize(
    ("task", "use", "kind"),
    [
        ("binary", "tree.HoeffdingTreeClassifier", base.Classifier),
        ("multiclass", "linear_model.SoftmaxRegression", base.Classifier),
        ("regression", "linear_model.LinearRegression", base.Regressor),
        ("regression", "tree.HoeffdingTreeRegressor", base.Regressor),
    ],
)
def test_last_step_of_the_right_kind_is_accepted(task: str, use: str, kind: type) -> None:
    label = {"classes": ["a", "b"]} if task == "multiclass" else {}
    model = build_model(parse_app_spec(spec_dict(task=task, label=label, model=model_dict({"use": use}))))
    assert isinstance(list(model.steps.values())[-1], kind)


def test_auto_preprocessing_tolerates_an_absent_optional_feature() -> None:
    spec = parse_app_spec(spec_dict(features={"x": "float", "y": {"type": "float", "required": False}}))
    model = build_model(spec)
    model.learn_one({"x": 1.0, "y": 2.0}, True)
    model.learn_one({"x": -1.0}, False)
    proba = model.predict_proba_one({"x": 1.0})
    assert set(proba) == {False, True}
