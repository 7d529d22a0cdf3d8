"""Validate features and labels against the application spec, and the shape of the items of
requests that carry them (pure, no I/O).

Every service checks features and labels with one object per app spec, ``validator(spec)``
(a ``FeatureValidator``): in one pass it gives either the model's input or every problem,
named as the HTTP APIs' 422 bodies name them. Ingest, the predictor, the trainer and the web
app all use it; there is no other check of the same rules.

>>> from streamwise_core.contracts.appspec import parse_app_spec
>>> spec = parse_app_spec({
...     "name": "shop", "task": "binary",
...     "features": {"amount": "float", "items": "int", "member": "bool",
...                  "channel": {"type": "category", "values": ["web", "store"]},
...                  "coupon": {"type": "float", "required": False}},
...     "model": {"name": "m", "steps": [{"use": "linear_model.LogisticRegression"}]},
... })
>>> check = validator(spec)
>>> check({"amount": 12.5, "items": 3, "member": True, "channel": "web", "coupon": None})
{'amount': 12.5, 'items': 3.0, 'member': 1.0, 'channel': 'web'}
>>> check({"amount": "12.5", "items": 3.5, "member": 1, "colour": "red"})  # doctest: +NORMALIZE_WHITESPACE
[{'loc': ['features', 'amount'], 'msg': 'expected a number, got str'},
 {'loc': ['features', 'channel'], 'msg': 'missing required feature'},
 {'loc': ['features', 'colour'], 'msg': 'unknown feature'},
 {'loc': ['features', 'items'], 'msg': 'expected an integer, got float'},
 {'loc': ['features', 'member'], 'msg': 'expected true or false, got int'}]
>>> check.label_error(True), check.label_error("yes")
(None, 'expected true or false')
>>> validator(spec) is check
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from streamwise_core.contracts.appspec import AppSpec, FeatureSpec, FeatureType, Task
from streamwise_core.contracts.events import ID, ID_PATTERN

FeatureValue = float | int | str | bool
Features = dict[str, FeatureValue]
Label = bool | str | float
ModelInput = dict[str, float | str]
"""Features as the model sees them: numbers (booleans too) as floats, categories as strings."""
Problem = dict[str, Any]
"""One problem with features: ``{"loc": ["features", name], "msg": why}`` (``["features"]`` when
the features are not an object), as the APIs list it in a 422 body (with the item's ``index``
and ``id`` added)."""


class _Refused:
    """Why a value is not valid for its feature."""

    __slots__ = ("msg",)

    def __init__(self, msg: str) -> None:
        self.msg = msg


Convert = Callable[[Any], "float | str | _Refused"]
"""A feature's check: its value as the model reads it, or why it is refused."""

_WIDE = 2.0**63
"""Floats past it, either way, may have been integer literals past 64 bits that orjson read as
floats (see ``FeatureValidator``'s ``narrow_floats``)."""
_INT_RANGE = 2.0**1000
"""Integers inside it convert to a float without overflow; beyond it their check decides."""
NARROW_REFUSAL = "a number this large may have been an integer past 64 bits: read the JSON again exactly"
"""Why a validator with ``narrow_floats`` refuses a float of magnitude 2**63 or more."""


def _kind_name(value: Any) -> str:
    return type(value).__name__


def _number(integer: bool, narrow: bool) -> Convert:
    """The check of a ``float`` feature (``integer`` False) or of an ``int`` one."""

    def convert(value: Any) -> float | _Refused:
        if isinstance(value, bool) or not isinstance(value, int | float):
            expected = "an integer" if integer else "a number"
            return _Refused(f"expected {expected}, got {_kind_name(value)}")
        if isinstance(value, float):
            if integer and not value.is_integer():  # nor for NaN and infinities
                return _Refused(f"expected an integer, got {_kind_name(value)}")
            if not math.isfinite(value):
                return _Refused("expected a finite number")
            if narrow and not -_WIDE < value < _WIDE:
                return _Refused(NARROW_REFUSAL)
            return float(value)
        try:
            return float(value)
        except OverflowError:
            return _Refused("integer too large" if integer else "expected a finite number")

    return convert


def _flag(value: Any) -> float | _Refused:
    if not isinstance(value, bool):
        return _Refused(f"expected true or false, got {_kind_name(value)}")
    return 1.0 if value else 0.0


def _category(values: tuple[str, ...] | None) -> Convert:
    allowed = frozenset(values) if values is not None else None
    shown = ", ".join(values or ())

    def convert(value: Any) -> str | _Refused:
        if not isinstance(value, str):
            return _Refused(f"expected a string, got {_kind_name(value)}")
        if allowed is not None and value not in allowed:
            return _Refused(f"unknown value {value[:64]!r}; allowed: {shown}")
        return value

    return convert


def _converter(spec: FeatureSpec, narrow: bool) -> Convert:
    match spec.type:
        case FeatureType.FLOAT:
            return _number(False, narrow)
        case FeatureType.INT:
            return _number(True, narrow)
        case FeatureType.BOOL:
            return _flag
        case FeatureType.CATEGORY:
            return _category(spec.values)
    raise ValueError(spec.type)  # pragma: no cover


def _finite(value: int | float) -> bool:
    """Finite as a float: JSON integers may be too large to convert at all."""
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _label_check(spec: AppSpec) -> Callable[[Any], str | None]:
    match spec.task:
        case Task.BINARY:
            def binary(label: Any) -> str | None:
                return None if isinstance(label, bool) else "expected true or false"

            return binary
        case Task.MULTICLASS:
            assert spec.label.classes is not None
            classes = frozenset(spec.label.classes)
            refusal = f"expected one of: {', '.join(spec.label.classes)}"

            def multiclass(label: Any) -> str | None:
                return None if isinstance(label, str) and label in classes else refusal

            return multiclass
        case Task.REGRESSION:
            def regression(label: Any) -> str | None:
                if isinstance(label, bool) or not isinstance(label, int | float) or not _finite(label):
                    return "expected a finite number"
                return None

            return regression
    raise ValueError(spec.task)  # pragma: no cover


class FeatureValidator:
    """The check of features and labels against one app spec (``validator(spec)``).

    Called with a request's (or a record's) features (``check``, or the validator itself), it
    gives the model's input (numbers and booleans as floats, categories as strings, in the
    order given; ``null`` optional features left out) when they are valid, and otherwise the
    list of every problem, sorted by location: unknown features, missing required ones
    (``null`` counts as missing), values of the wrong type (a boolean is no number, a whole
    float is an integer), non-finite numbers, integers too large for a float, category values
    not allowed. ``label_error`` checks a label for the task.

    The usual values (a float, an integer, a boolean, a known string) are taken inline; any
    other value goes to its feature's check, which has the last word; the first refusal
    makes it go over the features again to name every problem (the error path only).

    ``narrow_floats``: refuse floats of magnitude 2**63 or more (``NARROW_REFUSAL``). orjson
    reads integer literals past 64 bits as such floats, where the ``json`` module keeps their
    exact value: a reader of orjson's output that must keep what the client wrote reads the
    body again with ``json`` when refused, and checks that with the usual validator.
    """

    def __init__(self, spec: AppSpec, *, narrow_floats: bool = False) -> None:
        self.spec = spec
        features = spec.features
        of_type = {kind: frozenset(name for name, f in features.items() if f.type is kind) for kind in FeatureType}
        categories = {name: frozenset(f.values) for name, f in features.items() if f.values is not None}
        self._inline = (
            of_type[FeatureType.FLOAT],  # floats by float features (an int feature's whole floats go to its check)
            of_type[FeatureType.FLOAT] | of_type[FeatureType.INT],  # integers by both
            of_type[FeatureType.BOOL],
            of_type[FeatureType.CATEGORY] - categories.keys(),  # any string
            categories,  # one of their values
            {name: _converter(f, narrow_floats) for name, f in features.items()},
            frozenset(name for name, f in features.items() if f.required),
        )
        self.label_error: Callable[[Any], str | None] = _label_check(spec)
        """Why a label is not one of the task's (``None`` when it is): a boolean (binary), one of
        the classes (multiclass), a finite number (regression)."""

    def check(self, features: Any) -> ModelInput | list[Problem]:
        """The model's input, or every problem (a ``list``: test ``type(result) is dict``)."""
        if type(features) is not dict:
            return self._problems(features)
        floats, numbers, flags, texts, categories, converters, required = self._inline
        out = dict(features)  # the floats and strings as they are; the rest is replaced
        for name, value in features.items():
            of = type(value)
            if of is float:
                if name in floats and -_WIDE < value < _WIDE:  # NaN compares false
                    continue
            elif of is int:
                if name in numbers and -_INT_RANGE < value < _INT_RANGE:
                    out[name] = float(value)
                    continue
            elif of is str:
                if name in texts or value in categories.get(name, ()):
                    continue
            elif of is bool:
                if name in flags:
                    out[name] = 1.0 if value else 0.0
                    continue
            elif value is None and name in converters:
                del out[name]
                continue
            convert = converters.get(name)
            if convert is None:
                return self._problems(features)
            converted = convert(value)
            if type(converted) is _Refused:
                return self._problems(features)
            out[name] = converted
        if required <= out.keys():
            return out
        return self._problems(features)

    __call__ = check

    def model_input(self, features: Any) -> ModelInput | None:
        """The model's input, or ``None`` when the features are not valid."""
        checked = self.check(features)
        return checked if type(checked) is dict else None

    def _problems(self, features: Any) -> ModelInput | list[Problem]:
        """Every problem of ``features`` (the model's input if there is none)."""
        if not isinstance(features, dict):
            return [{"loc": ["features"], "msg": "features must be an object"}]
        converters, required = self._inline[5], self._inline[6]
        errors: list[Problem] = [
            {"loc": ["features", name[:128]], "msg": "unknown feature"} for name in features if name not in converters
        ]
        out: ModelInput = {}
        for name, convert in converters.items():
            value = features.get(name)
            if value is None:
                if name in required:
                    errors.append({"loc": ["features", name], "msg": "missing required feature"})
                continue
            converted = convert(value)
            if isinstance(converted, _Refused):
                errors.append({"loc": ["features", name], "msg": converted.msg})
            else:
                out[name] = converted
        if not errors:
            return {name: out[name] for name in features if name in out}  # in the order given
        return sorted(errors, key=lambda e: e["loc"])


_VALIDATORS: dict[int, FeatureValidator] = {}
_NARROW_VALIDATORS: dict[int, FeatureValidator] = {}


def validator(spec: AppSpec, *, narrow_floats: bool = False) -> FeatureValidator:
    """The validator of ``spec``, built once (a service has one spec; tests have a few)."""
    built = _NARROW_VALIDATORS if narrow_floats else _VALIDATORS
    found = built.get(id(spec))
    if found is None or found.spec is not spec:
        found = built[id(spec)] = FeatureValidator(spec, narrow_floats=narrow_floats)
    return found


def to_model_input(spec: AppSpec, features: Features) -> ModelInput:
    """Features known to be valid as the model sees them: numbers as floats, categories as
    strings (unknown and ``null`` features left out). It checks nothing: ``validator(spec)`` does."""
    out: ModelInput = {}
    for name, value in features.items():
        fspec = spec.features.get(name)
        if fspec is None or value is None:
            continue
        out[name] = value if fspec.type is FeatureType.CATEGORY else float(value)
    return out


# --------------------------------------------------------------------------- requests' items
# The items of ingest's and the predictor's requests (an event, a label, an instance) carry the
# features and labels with an id and maybe a timestamp. Their shape is checked here, its
# problems named in pydantic's words (as when pydantic models checked them, so 422 bodies stay).

_TIMESTAMP_TYPE = "timestamp must be an ISO 8601 string with a time zone, e.g. 2026-01-31T12:00:00Z"
_BAD_ID = f"String should match pattern '{ID_PATTERN}'"
_NOT_UNICODE = "Input should be a valid string, unable to parse raw data as a unicode string"


def read_timestamp(value: Any) -> datetime | str | None:
    """A client's timestamp: ``None``, the datetime it names, or why it is no ISO 8601 string
    (Unix numbers are refused: their unit is a guess).

    >>> read_timestamp("2026-01-31T12:00:00Z")
    datetime.datetime(2026, 1, 31, 12, 0, tzinfo=datetime.timezone.utc)
    >>> read_timestamp(1769860800)
    'timestamp must be an ISO 8601 string with a time zone, e.g. 2026-01-31T12:00:00Z'
    """
    if value is None:
        return None
    if type(value) is not str:
        return _TIMESTAMP_TYPE
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return f"not an ISO 8601 timestamp: {value[:40]!r}"


def shape_problems(item: Any, model: str, fields: tuple[str, ...], required: frozenset[str]) -> list[tuple[list[Any], str]]:
    """``(loc, msg)`` of each problem with the shape of a request's ``item``, in pydantic's words
    and order for a model named ``model`` with ``fields`` (in order; ``required`` among them,
    extra keys forbidden): ``id`` is an id (``events.ID_PATTERN``; ``null`` when not required),
    ``features`` an object, ``timestamp`` an ISO 8601 string or ``null``, ``label`` anything.

    >>> shape_problems({"id": "a b", "features": [], "colour": "red"}, "Instance", ("id", "features"), frozenset({"features"}))
    [(['id'], "String should match pattern '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'"), \
(['features'], 'Input should be a valid dictionary'), (['colour'], 'Extra inputs are not permitted')]
    """
    if not isinstance(item, dict):
        return [([], f"Input should be a valid dictionary or instance of {model}")]
    if not all(_unicode(key) for key in item):  # pydantic names this alone
        return [([], _NOT_UNICODE)]
    problems: list[tuple[list[Any], str]] = []
    for name in fields:
        if name not in item:
            if name in required:
                problems.append(([name], "Field required"))
            continue
        value = item[name]
        if name == "id":
            if value is None and "id" not in required:
                continue
            if not isinstance(value, str):
                problems.append((["id"], "Input should be a valid string"))
            elif not _unicode(value):
                problems.append((["id"], _NOT_UNICODE))
            elif ID.fullmatch(value) is None:
                problems.append((["id"], _BAD_ID))
        elif name == "features":
            if not isinstance(value, dict):
                problems.append((["features"], "Input should be a valid dictionary"))
        elif name == "timestamp" and isinstance(why := read_timestamp(value), str):
            problems.append((["timestamp"], why))
    problems += [([key], "Extra inputs are not permitted") for key in item if key not in fields]
    return problems


def _unicode(text: str) -> bool:
    """Whether ``text`` holds no lone surrogate (which ``json`` reads from ``"\\ud800"``)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


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
