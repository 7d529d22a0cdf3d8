"""The one-pass reader gives exactly the verdicts of ``feature_errors`` and ``to_model_input``."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streamwise_core.appspec import parse_app_spec
from streamwise_core.schema import ModelInputReader, feature_errors, to_model_input

SPEC = parse_app_spec({
    "name": "r", "task": "binary",
    "features": {
        "amount": "float",
        "count": "int",
        "flag": "bool",
        "kind": {"type": "category", "values": ["a", "b"]},
        "free": "category",
        "maybe": {"type": "float", "required": False},
    },
    "model": {"name": "m", "steps": [{"use": "linear_model.LogisticRegression"}]},
})
READER = ModelInputReader(SPEC)

values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**308, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["a", "b", "c", ""]), st.text(max_size=3),
)
names = st.sampled_from(["amount", "count", "flag", "kind", "free", "maybe", "unknown"])


@settings(max_examples=1000, deadline=None)
@given(st.dictionaries(names, values, max_size=7))
def test_reader_agrees_with_feature_errors(features: dict[str, Any]) -> None:
    read = READER(features)
    if feature_errors(SPEC, features):
        assert read is None
    else:
        assert_same_input(read, to_model_input(SPEC, features))


def assert_same_input(read: dict[str, Any] | None, expected: dict[str, Any]) -> None:
    """Equal, and alike in key order and value types (``1 == 1.0 == True`` would hide them)."""
    assert read is not None
    assert list(read.items()) == list(expected.items())
    assert [type(v) for v in read.values()] == [type(v) for v in expected.values()]


def test_valid_event_is_converted() -> None:
    features = {"amount": 3, "count": 2.0, "flag": True, "kind": "a", "free": "zz"}
    assert_same_input(READER(features), {"amount": 3.0, "count": 2.0, "flag": 1.0, "kind": "a", "free": "zz"})
    assert_same_input(READER({**features, "flag": False, "amount": -0.0}), {**to_model_input(SPEC, features), "flag": 0.0, "amount": -0.0})
    assert READER([features]) is None
    assert READER({**features, "count": 2.5}) is None
    assert READER({k: v for k, v in features.items() if k != "flag"}) is None


VALID = {"amount": 1.5, "count": 3, "flag": False, "kind": "b", "free": "x"}


@settings(max_examples=1000, deadline=None)
@given(names, values)
def test_reader_agrees_on_valid_events_with_one_value_changed(name: str, value: Any) -> None:
    features = {**VALID, name: value}
    read = READER(features)
    if feature_errors(SPEC, features):
        assert read is None
    else:
        assert_same_input(read, to_model_input(SPEC, features))
