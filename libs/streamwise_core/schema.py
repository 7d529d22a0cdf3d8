"""Validate features and labels against the application spec (pure, no I/O)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .appspec import AppSpec, FeatureSpec, FeatureType, Task

FeatureValue = float | int | str | bool
Features = dict[str, FeatureValue]
Label = bool | str | float


def _finite(value: int | float) -> bool:
    """Finite as a float: JSON integers may be too large to convert at all."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _feature_error(name: str, spec: FeatureSpec, value: Any) -> str | None:
    """Why ``value`` is not a valid ``spec`` value, or ``None`` when it is."""
    match spec.type:
        case FeatureType.FLOAT:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return f"expected a number, got {type(value).__name__}"
            if not _finite(value):
                return "expected a finite number"
        case FeatureType.INT:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer() and math.isfinite(value):
                    return None
                return f"expected an integer, got {type(value).__name__}"
            if not _finite(value):
                return "integer too large"
        case FeatureType.BOOL:
            if not isinstance(value, bool):
                return f"expected true or false, got {type(value).__name__}"
        case FeatureType.CATEGORY:
            if not isinstance(value, str):
                return f"expected a string, got {type(value).__name__}"
            if spec.values is not None and value not in spec.values:
                return f"unknown value {value[:64]!r}; allowed: {', '.join(spec.values)}"
    return None


def feature_errors(spec: AppSpec, features: Any) -> list[dict[str, Any]]:
    """All problems with ``features``, each with a ``loc`` naming the field."""
    if not isinstance(features, dict):
        return [{"loc": ["features"], "msg": "features must be an object"}]
    errors: list[dict[str, Any]] = []
    for name in features.keys() - spec.features.keys():
        errors.append({"loc": ["features", name[:128]], "msg": "unknown feature"})
    for name, fspec in spec.features.items():
        value = features.get(name)
        if value is None:
            if fspec.required:
                errors.append({"loc": ["features", name], "msg": "missing required feature"})
            continue
        problem = _feature_error(name, fspec, value)
        if problem:
            errors.append({"loc": ["features", name], "msg": problem})
    return sorted(errors, key=lambda e: e["loc"])


def label_error(spec: AppSpec, label: Any) -> str | None:
    """Why ``label`` is not a valid label for this task, or ``None``."""
    match spec.task:
        case Task.BINARY:
            if not isinstance(label, bool):
                return "expected true or false"
        case Task.MULTICLASS:
            assert spec.label.classes is not None
            if not isinstance(label, str) or label not in spec.label.classes:
                return f"expected one of: {', '.join(spec.label.classes)}"
        case Task.REGRESSION:
            if isinstance(label, bool) or not isinstance(label, int | float) or not _finite(label):
                return "expected a finite number"
    return None


def to_model_input(spec: AppSpec, features: Features) -> dict[str, float | str]:
    """Features as the model sees them: numbers as floats, categories as strings."""
    out: dict[str, float | str] = {}
    for name, value in features.items():
        fspec = spec.features.get(name)
        if fspec is None or value is None:
            continue
        out[name] = value if fspec.type is FeatureType.CATEGORY else float(value)
    return out


class _Invalid:
    """Marker: a value a feature converter refuses."""


_INVALID = _Invalid()
_Converter = Callable[[Any], "float | str | _Invalid"]


def _to_float(value: Any) -> float | _Invalid:
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else _INVALID
    if kind is int:
        try:
            return float(value)
        except OverflowError:
            return _INVALID
    return _INVALID


def _to_int(value: Any) -> float | _Invalid:
    if type(value) is float and not value.is_integer():
        return _INVALID
    return _to_float(value)


def _to_bool(value: Any) -> float | _Invalid:
    return float(value) if type(value) is bool else _INVALID


def _category(allowed: frozenset[str] | None) -> _Converter:
    def convert(value: Any) -> str | _Invalid:
        if type(value) is not str or (allowed is not None and value not in allowed):
            return _INVALID
        return value

    return convert


def _converter(spec: FeatureSpec) -> _Converter:
    match spec.type:
        case FeatureType.FLOAT:
            return _to_float
        case FeatureType.INT:
            return _to_int
        case FeatureType.BOOL:
            return _to_bool
        case FeatureType.CATEGORY:
            return _category(frozenset(spec.values) if spec.values is not None else None)
    raise ValueError(spec.type)


_NUMBER, _WHOLE, _FLAG, _ANY_TEXT = "number", "whole", "flag", "text"
"""How the reader's fast path sees a feature; a category with values is seen as its set."""
_FLOAT_RANGE = 2.0**1000
"""Integers inside it convert to a float without overflow; beyond it the converter decides."""


_FAST_KINDS = {FeatureType.FLOAT: _NUMBER, FeatureType.INT: _WHOLE, FeatureType.BOOL: _FLAG}


def _fast_kind(spec: FeatureSpec) -> str | frozenset[str]:
    if spec.type is FeatureType.CATEGORY:
        return frozenset(spec.values) if spec.values is not None else _ANY_TEXT
    return _FAST_KINDS[spec.type]


class ModelInputReader:
    """``to_model_input`` of valid features in one pass, ``None`` for invalid ones.

    The same verdicts as ``feature_errors`` at a fraction of its cost, for hot loops that
    only need the reasons when something is wrong (then they ask ``feature_errors``). The
    usual values (a finite float, an integer, a boolean, a known string) are read inline;
    anything else goes to the feature's converter, which has the last word.
    """

    def __init__(self, spec: AppSpec) -> None:
        self._converters = {name: _converter(f) for name, f in spec.features.items()}
        self._kinds = {name: _fast_kind(f) for name, f in spec.features.items()}
        self._required = frozenset(name for name, f in spec.features.items() if f.required)

    def __call__(self, features: Any) -> dict[str, float | str] | None:
        if type(features) is not dict:
            return None
        kinds = self._kinds
        out: dict[str, float | str] = {}
        for name, value in features.items():
            kind = kinds.get(name)
            if kind is None:
                return None
            if value is None:
                continue
            of = type(value)
            # finite: inf - inf is nan
            if of is float and kind is _NUMBER and value - value == 0.0 or of is str and (kind is _ANY_TEXT or (type(kind) is frozenset and value in kind)):
                out[name] = value
            elif of is int and (kind is _NUMBER or kind is _WHOLE) and -_FLOAT_RANGE < value < _FLOAT_RANGE:
                out[name] = float(value)
            elif of is bool and kind is _FLAG:
                out[name] = 1.0 if value else 0.0
            else:
                converted = self._converters[name](value)
                if converted is _INVALID:
                    return None
                out[name] = converted  # type: ignore[assignment]
        if not self._required <= out.keys():
            return None
        return out


_READERS: dict[int, tuple[AppSpec, ModelInputReader]] = {}


def model_input_reader(spec: AppSpec) -> ModelInputReader:
    """The reader of ``spec``, built once (a service has one spec; tests have a few)."""
    cached = _READERS.get(id(spec))
    if cached is None or cached[0] is not spec:
        cached = _READERS[id(spec)] = (spec, ModelInputReader(spec))
    return cached[1]


# --------------------------------------------------------------------------- JSON Schema (OpenAPI)

_JSON_TYPES = {
    FeatureType.FLOAT: "number",
    FeatureType.INT: "integer",
    FeatureType.BOOL: "boolean",
    FeatureType.CATEGORY: "string",
}


def features_json_schema(spec: AppSpec) -> dict[str, Any]:
    """JSON Schema of the ``features`` object of ``spec``, for API documents and fuzzers.

    It says what it can: types, allowed category values, required and unknown features.
    The rest (finite numbers, integers that fit a float) only validation checks.
    """
    properties: dict[str, Any] = {}
    for name, fspec in spec.features.items():
        prop: dict[str, Any] = {"type": _JSON_TYPES[fspec.type]}
        if fspec.type is FeatureType.CATEGORY and fspec.values is not None:
            prop["enum"] = list(fspec.values)
        if not fspec.required:
            prop = {"anyOf": [prop, {"type": "null"}]}
        properties[name] = prop
    return {
        "type": "object",
        "properties": properties,
        "required": [n for n, f in spec.features.items() if f.required],
        "additionalProperties": False,
    }


def label_json_schema(spec: AppSpec) -> dict[str, Any]:
    """JSON Schema of a label of ``spec``'s task."""
    match spec.task:
        case Task.BINARY:
            return {"type": "boolean"}
        case Task.MULTICLASS:
            assert spec.label.classes is not None
            return {"type": "string", "enum": list(spec.label.classes)}
        case Task.REGRESSION:
            return {"type": "number"}
    raise AssertionError(spec.task)  # pragma: no cover
