"""The one validator of features and labels (``validator(spec)``), the shape of requests'
items, and the model's view of features."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from streamwise_core.contracts.appspec import AppSpec, parse_app_spec
from streamwise_core.contracts.schema import (
    NARROW_REFUSAL,
    FeatureValidator,
    read_timestamp,
    shape_problems,
    to_model_input,
    validator,
)

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
CHECK = validator(SPEC)
VALID: dict[str, Any] = {"f": 1.5, "i": 3, "b": True, "c": "red", "free": "anything"}
MODEL_INPUT: dict[str, Any] = {"f": 1.5, "i": 3.0, "b": 1.0, "c": "red", "free": "anything"}


def same(got: Any, expected: dict[str, Any]) -> None:
    """Equal, and alike in key order and value types (``1 == 1.0 == True`` would hide them)."""
    assert type(got) is dict, got
    assert list(got.items()) == list(expected.items())
    assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]


def errors_for(name: str, value: Any, check: FeatureValidator = CHECK) -> Any:
    return check({**VALID, name: value})


# --------------------------------------------------------------------------- accepted: the model's input

ACCEPTED = [
    # (feature, value sent, what the model reads)
    ("f", 2.5, 2.5), ("f", -0.0, -0.0), ("f", 0, 0.0), ("f", -7, -7.0), ("f", 10**15, 1e15), ("f", 1e300, 1e300),
    ("f", -1e300, -1e300), ("f", 2.0**63, 2.0**63), ("f", 10**30, 1e30), ("f", 2**64 + 1, 2.0**64), ("f", 5e-324, 5e-324),
    ("i", 0, 0.0), ("i", -4, -4.0), ("i", 3.0, 3.0), ("i", -2.0, -2.0), ("i", 10**12, 1e12), ("i", 1e20, 1e20), ("i", 10**300, 1e300),
    ("b", True, 1.0), ("b", False, 0.0),
    ("c", "red", "red"), ("c", "green", "green"),
    ("free", "", ""), ("free", "RED", "RED"), ("free", "ünïcödé\u2028", "ünïcödé\u2028"),
    ("opt", 1, 1.0), ("opt", 0.25, 0.25),
]


@pytest.mark.parametrize(("name", "value", "read"), ACCEPTED)
def test_accepted_values_are_read_as_the_model_reads_them(name: str, value: Any, read: Any) -> None:
    same(errors_for(name, value), {**MODEL_INPUT, name: read})
    assert to_model_input(SPEC, {**VALID, name: value}) == {**MODEL_INPUT, name: read}


def test_valid_features_are_the_model_input_in_the_order_sent() -> None:
    same(CHECK(VALID), MODEL_INPUT)
    backwards = dict(reversed(VALID.items()))
    same(CHECK(backwards), dict(reversed(MODEL_INPUT.items())))
    same(CHECK({**VALID, "opt": -2.0}), {**MODEL_INPUT, "opt": -2.0})
    assert CHECK.check is not None and CHECK.check(VALID) == CHECK(VALID)


def test_the_features_sent_are_left_as_they_were() -> None:
    sent = {**VALID, "opt": None}
    CHECK(sent)
    assert sent == {**VALID, "opt": None}


def test_optional_feature_may_be_absent_or_null() -> None:
    same(CHECK(VALID), MODEL_INPUT)
    same(errors_for("opt", None), MODEL_INPUT)  # left out of the model's input


# --------------------------------------------------------------------------- refused: every problem named

REFUSED = [
    # numbers: booleans are no numbers, strings are not read as numbers, nothing non-finite
    ("f", True, "expected a number, got bool"),
    ("f", False, "expected a number, got bool"),
    ("f", "1.5", "expected a number, got str"),
    ("f", [1.0], "expected a number, got list"),
    ("f", {"v": 1}, "expected a number, got dict"),
    ("f", math.nan, "expected a finite number"),
    ("f", math.inf, "expected a finite number"),
    ("f", -math.inf, "expected a finite number"),
    ("f", 10**400, "expected a finite number"),
    ("f", -(10**400), "expected a finite number"),
    # integers: a whole float is one, nothing else
    ("i", 3.5, "expected an integer, got float"),
    ("i", 1e-9, "expected an integer, got float"),
    ("i", True, "expected an integer, got bool"),
    ("i", "3", "expected an integer, got str"),
    ("i", math.nan, "expected an integer, got float"),
    ("i", math.inf, "expected an integer, got float"),
    ("i", 10**400, "integer too large"),
    # booleans: only true and false
    ("b", 1, "expected true or false, got int"),
    ("b", 0, "expected true or false, got int"),
    ("b", 1.0, "expected true or false, got float"),
    ("b", "true", "expected true or false, got str"),
    # categories: a string, one of the values when they are listed
    ("c", "RED", "unknown value 'RED'; allowed: red, green"),
    ("c", "blue", "unknown value 'blue'; allowed: red, green"),
    ("c", "", "unknown value ''; allowed: red, green"),
    ("c", 1, "expected a string, got int"),
    ("c", True, "expected a string, got bool"),
    ("free", 2.0, "expected a string, got float"),
    ("free", ["x"], "expected a string, got list"),
    # optional features are checked when given
    ("opt", "x", "expected a number, got str"),
    ("opt", math.nan, "expected a finite number"),
]


@pytest.mark.parametrize(("name", "value", "msg"), REFUSED)
def test_refused_values_are_named(name: str, value: Any, msg: str) -> None:
    assert errors_for(name, value) == [{"loc": ["features", name], "msg": msg}]
    assert CHECK.model_input({**VALID, name: value}) is None


def test_unknown_category_value_is_truncated_in_the_message() -> None:
    (error,) = errors_for("c", "x" * 1000)
    assert "x" * 64 in error["msg"] and "x" * 65 not in error["msg"]


@pytest.mark.parametrize("missing", ["f", "i", "b", "c", "free"])
def test_missing_required_feature(missing: str) -> None:
    features = {k: v for k, v in VALID.items() if k != missing}
    assert CHECK(features) == [{"loc": ["features", missing], "msg": "missing required feature"}]
    assert errors_for(missing, None) == [{"loc": ["features", missing], "msg": "missing required feature"}]  # null is missing


@pytest.mark.parametrize("value", ["red", 1, None, 2.5])
def test_unknown_feature_is_refused_by_name_whatever_its_value(value: Any) -> None:
    assert errors_for("colour", value) == [{"loc": ["features", "colour"], "msg": "unknown feature"}]


def test_unknown_feature_name_is_truncated() -> None:
    (error,) = errors_for("k" * 500, 1)
    assert error["loc"] == ["features", "k" * 128]


@pytest.mark.parametrize("bad", [[1, 2], "f=1", None, 3, True])
def test_features_must_be_an_object(bad: Any) -> None:
    assert CHECK(bad) == [{"loc": ["features"], "msg": "features must be an object"}]
    assert CHECK.model_input(bad) is None


def test_every_problem_is_reported_sorted_by_location() -> None:
    errors = CHECK({"f": "x", "b": 1, "c": "blue", "zz": 1, "aa": 2})
    assert [e["loc"][1] for e in errors] == ["aa", "b", "c", "f", "free", "i", "zz"]
    by_name = {e["loc"][1]: e["msg"] for e in errors}
    assert by_name["i"] == by_name["free"] == "missing required feature"
    assert by_name["aa"] == by_name["zz"] == "unknown feature"
    assert all(e.keys() == {"loc", "msg"} for e in errors)


def test_a_problem_anywhere_is_found_after_valid_values() -> None:
    """The first refusal sends the check over every feature: earlier ones were fine."""
    assert CHECK({**VALID, "zz": 1}) == [{"loc": ["features", "zz"], "msg": "unknown feature"}]
    assert CHECK({"zz": 1, **VALID}) == [{"loc": ["features", "zz"], "msg": "unknown feature"}]
    assert CHECK({**VALID, "i": 2.5, "f": math.nan}) == [
        {"loc": ["features", "f"], "msg": "expected a finite number"},
        {"loc": ["features", "i"], "msg": "expected an integer, got float"},
    ]


def test_values_of_other_types_go_to_the_check_of_their_feature() -> None:
    """Subclasses (numpy's float64 is a float) are read as their base type, as before."""

    class Number(float):
        pass

    class Text(str):
        pass

    same(CHECK({**VALID, "f": Number(2.5), "free": Text("t")}), {**MODEL_INPUT, "f": 2.5, "free": Text("t")})
    assert errors_for("b", Number(1.0)) == [{"loc": ["features", "b"], "msg": "expected true or false, got Number"}]


# --------------------------------------------------------------------------- narrow floats (orjson's reading)


@pytest.mark.parametrize(("name", "value"), [("f", 2.0**63), ("f", -(2.0**63)), ("f", 1e300), ("i", 1e20), ("opt", -1e19)])
def test_narrow_floats_refuses_floats_that_may_have_been_big_integers(name: str, value: float) -> None:
    narrow = validator(SPEC, narrow_floats=True)
    assert errors_for(name, value, narrow) == [{"loc": ["features", name], "msg": NARROW_REFUSAL}]
    assert type(errors_for(name, value)) is dict  # the usual validator takes them


@pytest.mark.parametrize("value", [2.0**63 - 1024, -(2.0**63) + 1024, 1.5, 10**19, 2**64 - 1])
def test_narrow_floats_takes_the_rest(value: Any) -> None:
    narrow = validator(SPEC, narrow_floats=True)
    same(errors_for("f", value, narrow), {**MODEL_INPUT, "f": float(value)})


# --------------------------------------------------------------------------- labels, per task


@pytest.mark.parametrize("label", [True, False])
def test_binary_accepts_booleans(label: bool) -> None:
    assert CHECK.label_error(label) is None


@pytest.mark.parametrize("label", [1, 0, 1.0, "true", "yes", None, [True]])
def test_binary_refuses_everything_else(label: Any) -> None:
    assert CHECK.label_error(label) == "expected true or false"


MULTI = validator(make_spec("multiclass", classes=["cat", "dog", "bird"]))


@pytest.mark.parametrize("label", ["cat", "dog", "bird"])
def test_multiclass_accepts_declared_classes(label: str) -> None:
    assert MULTI.label_error(label) is None


@pytest.mark.parametrize("label", ["Cat", "fish", "", 1, True, None, ["cat"]])
def test_multiclass_refuses_other_labels(label: Any) -> None:
    assert MULTI.label_error(label) == "expected one of: cat, dog, bird"


REGRESSION = validator(make_spec("regression"))


@pytest.mark.parametrize("label", [0, -3, 2.5, -0.0, 1e300, 10**20])
def test_regression_accepts_finite_numbers(label: float) -> None:
    assert REGRESSION.label_error(label) is None


@pytest.mark.parametrize("label", [True, False, "1.5", None, math.nan, math.inf, -math.inf, 10**400, [1.0]])
def test_regression_refuses_non_numbers_and_non_finite(label: Any) -> None:
    assert REGRESSION.label_error(label) == "expected a finite number"


# --------------------------------------------------------------------------- one per spec


def test_one_validator_per_spec() -> None:
    assert validator(SPEC) is CHECK
    assert validator(SPEC, narrow_floats=True) is validator(SPEC, narrow_floats=True) is not CHECK
    other = make_spec()
    assert validator(other) is not CHECK and validator(other).spec is other
    assert validator(SPEC).model_input(VALID) == MODEL_INPUT and validator(SPEC).model_input({}) is None


def test_to_model_input_converts_without_checking() -> None:
    out = to_model_input(SPEC, {"f": 2, "i": 3, "b": True, "c": "green", "free": "x", "opt": 0.5})
    assert out == {"f": 2.0, "i": 3.0, "b": 1.0, "c": "green", "free": "x", "opt": 0.5}
    assert all(type(out[k]) is float for k in ("f", "i", "b", "opt"))
    assert to_model_input(SPEC, {"b": False})["b"] == 0.0
    assert to_model_input(SPEC, {"f": 1, "nope": 5, "opt": None}) == {"f": 1.0}


# --------------------------------------------------------------------------- the shape of requests' items

EVENT = ("EventIn", ("id", "features", "label", "timestamp"), frozenset({"features"}))
LABEL = ("LabelIn", ("id", "label", "timestamp"), frozenset({"id", "label"}))
ID_MISMATCH = "String should match pattern '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'"
NOT_UNICODE = "Input should be a valid string, unable to parse raw data as a unicode string"


@pytest.mark.parametrize(("item", "model", "problems"), [
    ({"features": {}}, EVENT, []),
    ({"id": None, "features": {}, "label": [1], "timestamp": None}, EVENT, []),
    ({"id": "a.b:c-D_9", "features": {}, "timestamp": "2026-01-31T12:00:00Z"}, EVENT, []),
    (5, EVENT, [([], "Input should be a valid dictionary or instance of EventIn")]),
    ([{"features": {}}], LABEL, [([], "Input should be a valid dictionary or instance of LabelIn")]),
    ({}, EVENT, [(["features"], "Field required")]),
    ({}, LABEL, [(["id"], "Field required"), (["label"], "Field required")]),
    ({"id": None, "label": None}, LABEL, [(["id"], "Input should be a valid string")]),
    ({"id": 5, "features": []}, EVENT, [(["id"], "Input should be a valid string"), (["features"], "Input should be a valid dictionary")]),
    ({"id": "has space", "features": {}}, EVENT, [(["id"], ID_MISMATCH)]),
    ({"id": "a" * 129, "features": {}}, EVENT, [(["id"], ID_MISMATCH)]),
    ({"id": "ok\n", "features": {}}, EVENT, [(["id"], ID_MISMATCH)]),
    ({"id": "\ud800", "features": {}}, EVENT, [(["id"], NOT_UNICODE)]),
    ({"features": {}, "\ud800": 1, "id": 5}, EVENT, [([], NOT_UNICODE)]),
    ({"features": {}, "timestamp": 1769860800}, EVENT, [(["timestamp"], read_timestamp(1))]),
    ({"features": {}, "timestamp": "yesterday"}, EVENT, [(["timestamp"], "not an ISO 8601 timestamp: 'yesterday'")]),
    ({"zz": 1, "features": {}, "aa": 2, "id": "x y"}, EVENT,
     [(["id"], ID_MISMATCH), (["zz"], "Extra inputs are not permitted"), (["aa"], "Extra inputs are not permitted")]),
])
def test_shape_problems_in_pydantics_words_and_order(item: Any, model: tuple[str, tuple[str, ...], frozenset[str]], problems: Any) -> None:
    assert shape_problems(item, *model) == problems


@pytest.mark.parametrize(("value", "read"), [
    (None, None),
    ("2026-01-31T12:00:00Z", datetime(2026, 1, 31, 12, tzinfo=UTC)),
    ("2026-01-31T14:00:00+02:00", datetime(2026, 1, 31, 14, tzinfo=timezone(timedelta(hours=2)))),
    ("2026-01-31", datetime(2026, 1, 31)),  # no time zone: the caller refuses it with its reason
    (True, "timestamp must be an ISO 8601 string with a time zone, e.g. 2026-01-31T12:00:00Z"),
    (1.5, "timestamp must be an ISO 8601 string with a time zone, e.g. 2026-01-31T12:00:00Z"),
    ("2026-02-30T00:00:00Z", "not an ISO 8601 timestamp: '2026-02-30T00:00:00Z'"),
    ("x" * 100, f"not an ISO 8601 timestamp: {'x' * 40!r}"),
])
def test_read_timestamp(value: Any, read: Any) -> None:
    assert read_timestamp(value) == read
