"""Feature and label validation against the spec, and the model's view of features."""

from __future__ import annotations

import math
from typing import Any

import pytest

from streamwise_core.appspec import AppSpec, parse_app_spec
from streamwise_core.schema import feature_errors, label_error, to_model_input

LR = {"name": "m", "steps": [{"use": "linear_model.LogisticRegression"}]}


def make_spec(task: str = "binary", **label: Any) -> AppSpec:
    model = {"name": "m", "steps": [{"use": "linear_model.LinearRegression"}]} if task == "regression" else LR
    return parse_app_spec(
        {
            "name": "s",
            "task": task,
            "features": {
                "f": "float",
                "i": "int",
                "b": "bool",
                "c": {"type": "category", "values": ["red", "green"]},
                "free": "category",
                "opt": {"type": "float", "required": False},
            },
            "label": label,
            "model": model,
        }
    )


SPEC = make_spec()
VALID: dict[str, Any] = {"f": 1.5, "i": 3, "b": True, "c": "red", "free": "anything"}


def errors_for(name: str, value: Any) -> list[dict[str, Any]]:
    return feature_errors(SPEC, {**VALID, name: value})


def test_valid_features_have_no_errors() -> None:
    assert feature_errors(SPEC, VALID) == []
    assert feature_errors(SPEC, {**VALID, "opt": -2.0}) == []


ACCEPTED = [
    ("f", 0), ("f", -7), ("f", 2.5), ("f", -0.0), ("f", 1e300), ("f", 10**15),
    ("i", 0), ("i", -4), ("i", 3.0), ("i", -2.0), ("i", 10**12),
    ("b", True), ("b", False),
    ("c", "red"), ("c", "green"),
    ("free", ""), ("free", "RED"), ("free", "ünïcödé"),
    ("opt", 1), ("opt", 0.25),
]


@pytest.mark.parametrize(("name", "value"), ACCEPTED)
def test_accepted_values(name: str, value: Any) -> None:
    assert errors_for(name, value) == []


REFUSED = [
    ("f", True, "expected a number, got bool"),
    ("f", False, "expected a number, got bool"),
    ("f", "1.5", "expected a number, got str"),
    ("f", [1.0], "expected a number, got list"),
    ("f", {"v": 1}, "expected a number, got dict"),
    ("f", math.nan, "expected a finite number"),
    ("f", math.inf, "expected a finite number"),
    ("f", -math.inf, "expected a finite number"),
    ("i", 3.5, "expected an integer, got float"),
    ("i", 1e-9, "expected an integer, got float"),
    ("i", True, "expected an integer, got bool"),
    ("i", "3", "expected an integer, got str"),
    ("i", math.nan, "expected an integer, got float"),
    ("i", math.inf, "expected an integer, got float"),
    ("b", 1, "expected true or false, got int"),
    ("b", 0, "expected true or false, got int"),
    ("b", 1.0, "expected true or false, got float"),
    ("b", "true", "expected true or false, got str"),
    ("c", "RED", "unknown value 'RED'; allowed: red, green"),
    ("c", "blue", "unknown value 'blue'; allowed: red, green"),
    ("c", 1, "expected a string, got int"),
    ("c", True, "expected a string, got bool"),
    ("free", 2.0, "expected a string, got float"),
    ("opt", "x", "expected a number, got str"),
    ("opt", math.nan, "expected a finite number"),
]


@pytest.mark.parametrize(("name", "value", "msg"), REFUSED)
def test_refused_values(name: str, value: Any, msg: str) -> None:
    assert errors_for(name, value) == [{"loc": ["features", name], "msg": msg}]


def test_unknown_category_value_is_truncated_in_the_message() -> None:
    (error,) = errors_for("c", "x" * 1000)
    assert "x" * 64 in error["msg"] and "x" * 65 not in error["msg"]


def test_missing_required_feature() -> None:
    features = dict(VALID)
    del features["i"]
    assert feature_errors(SPEC, features) == [{"loc": ["features", "i"], "msg": "missing required feature"}]


def test_null_required_feature_counts_as_missing() -> None:
    assert errors_for("b", None) == [{"loc": ["features", "b"], "msg": "missing required feature"}]


def test_optional_feature_may_be_absent_or_null() -> None:
    assert feature_errors(SPEC, VALID) == []
    assert errors_for("opt", None) == []


def test_unknown_feature_is_refused_by_name() -> None:
    assert errors_for("colour", "red") == [{"loc": ["features", "colour"], "msg": "unknown feature"}]


def test_unknown_feature_name_is_truncated() -> None:
    (error,) = errors_for("k" * 500, 1)
    assert error["loc"] == ["features", "k" * 128]


def test_features_must_be_an_object() -> None:
    for bad in ([1, 2], "f=1", None, 3):
        assert feature_errors(SPEC, bad) == [{"loc": ["features"], "msg": "features must be an object"}]


def test_every_problem_is_reported_sorted_by_location() -> None:
    errors = feature_errors(SPEC, {"f": "x", "b": 1, "c": "blue", "zz": 1, "aa": 2})
    assert [e["loc"][1] for e in errors] == ["aa", "b", "c", "f", "free", "i", "zz"]
    by_name = {e["loc"][1]: e["msg"] for e in errors}
    assert by_name["i"] == by_name["free"] == "missing required feature"
    assert by_name["aa"] == by_name["zz"] == "unknown feature"


def test_float_feature_with_a_huge_integer_is_refused_not_crashing() -> None:
    assert errors_for("f", 10**400) == [{"loc": ["features", "f"], "msg": "expected a finite number"}]


def test_int_feature_too_large_for_the_model_is_refused() -> None:
    assert errors_for("i", 10**400) != []


# --- labels ------------------------------------------------------------------------------


@pytest.mark.parametrize("label", [True, False])
def test_binary_accepts_booleans(label: bool) -> None:
    assert label_error(SPEC, label) is None


@pytest.mark.parametrize("label", [1, 0, 1.0, "true", "yes", None, [True]])
def test_binary_refuses_everything_else(label: Any) -> None:
    assert label_error(SPEC, label) == "expected true or false"


MULTI = make_spec("multiclass", classes=["cat", "dog", "bird"])


@pytest.mark.parametrize("label", ["cat", "dog", "bird"])
def test_multiclass_accepts_declared_classes(label: str) -> None:
    assert label_error(MULTI, label) is None


@pytest.mark.parametrize("label", ["Cat", "fish", "", 1, True, None])
def test_multiclass_refuses_other_labels(label: Any) -> None:
    assert label_error(MULTI, label) == "expected one of: cat, dog, bird"


REGRESSION = make_spec("regression")


@pytest.mark.parametrize("label", [0, -3, 2.5, 1e300])
def test_regression_accepts_finite_numbers(label: float) -> None:
    assert label_error(REGRESSION, label) is None


@pytest.mark.parametrize("label", [True, False, "1.5", None, math.nan, math.inf, -math.inf])
def test_regression_refuses_non_numbers_and_non_finite(label: Any) -> None:
    assert label_error(REGRESSION, label) == "expected a finite number"


def test_regression_label_too_large_for_a_float_is_refused() -> None:
    assert label_error(REGRESSION, 10**400) == "expected a finite number"


# --- model input -------------------------------------------------------------------------


def test_to_model_input_converts_numbers_to_float_and_keeps_categories() -> None:
    out = to_model_input(SPEC, {"f": 2, "i": 3, "b": True, "c": "green", "free": "x", "opt": 0.5})
    assert out == {"f": 2.0, "i": 3.0, "b": 1.0, "c": "green", "free": "x", "opt": 0.5}
    assert all(type(out[k]) is float for k in ("f", "i", "b", "opt"))
    assert to_model_input(SPEC, {"b": False})["b"] == 0.0


def test_to_model_input_drops_unknown_and_null_features() -> None:
    assert to_model_input(SPEC, {"f": 1, "nope": 5, "opt": None}) == {"f": 1.0}
