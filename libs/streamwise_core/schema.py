"""Validate features and labels against the application spec (pure, no I/O)."""

from __future__ import annotations

import math
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
