"""Turn requests into predictions with the served model (pure, no I/O).

``read_request`` reads a body with orjson and checks each instance in one pass (its shape, its
features with the app spec's validator, ``streamwise_core.contracts.schema.validator``). The first
problem sends the body to be read again exactly (strict JSON, with its depth limit and where it
is broken), and every problem is named. Answers are plain dicts encoded once
(``encode_predictions``, ``PredictionMade.records``).
"""

from __future__ import annotations

import math
import uuid
from functools import partial
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from streamwise_core.adapters.http import NOT_JSON, decode_utf8, loads_quick, loads_strict
from streamwise_core.contracts.appspec import AppSpec
from streamwise_core.contracts.errors import ValidationFailed
from streamwise_core.contracts.events import ID, ID_PATTERN
from streamwise_core.contracts.schema import FeatureValidator, features_json_schema, shape_problems, validator
from streamwise_core.domain.inference import label_key, predict

from .holder import ServedModel


class Instance(BaseModel):
    """An instance as clients send it (documentation and tests: ``read_request`` reads requests)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=ID_PATTERN)
    """The event id, so the prediction can be joined with its label later."""
    features: dict[str, Any]


class Batch(BaseModel):
    """A batch as clients send it (documentation and tests: ``read_request`` reads requests)."""

    model_config = ConfigDict(extra="forbid")

    instances: list[Instance] = Field(min_length=1)


class Prediction(BaseModel):
    id: str = Field(description="The event id sent, or a generated one: use it to send the outcome as a label.")
    prediction: bool | str | float | None
    probabilities: dict[str, float] | None = None


class PredictionResponse(Prediction):
    model: str
    version: int


class BatchResponse(BaseModel):
    model: str
    version: int
    predictions: list[Prediction]


def instance_schema(spec: AppSpec) -> dict[str, Any]:
    """JSON Schema of an instance of ``spec``, for the API document."""
    return {
        "type": "object",
        "title": "Instance",
        "properties": {
            "id": {
                "anyOf": [{"type": "string", "pattern": ID_PATTERN}, {"type": "null"}],
                "description": "The event id, so the prediction can be joined with its label later.",
            },
            "features": features_json_schema(spec),
        },
        "required": ["features"],
        "additionalProperties": False,
    }


def batch_schema(spec: AppSpec, max_batch: int) -> dict[str, Any]:
    return {
        "type": "object",
        "title": "Batch",
        "properties": {
            "instances": {"type": "array", "items": instance_schema(spec), "minItems": 1, "maxItems": max_batch},
        },
        "required": ["instances"],
        "additionalProperties": False,
    }


class Checked(NamedTuple):
    """A valid instance: its id (``None``: generate one) and the features as the model reads them."""

    id: str | None
    x: dict[str, float | str]


_checked = partial(tuple.__new__, Checked)
"""``Checked(id, x)`` from a pair without NamedTuple's Python-level ``__new__``."""


def read_request(spec: AppSpec, body: bytes, max_batch: int | None) -> list[Checked]:
    """The instances of a ``/v1/predict`` body (``max_batch`` ``None``) or of a
    ``/v1/predict/batch`` body, checked; ``ValidationFailed`` naming each problem otherwise."""
    check = validator(spec)
    data = loads_quick(body)
    if data is not NOT_JSON and (checked := _read(check, data, max_batch)) is not None:
        return checked
    # Read again exactly (strict JSON, no deep nesting, integers as they are), for the problems.
    data = loads_strict(decode_utf8(body), ["body"])
    checked = _read(check, data, max_batch)
    if checked is None:
        raise ValidationFailed(_problems(check, data, max_batch))
    return checked


_INSTANCE_FIELDS = ("id", "features")
_INSTANCE_KEYS = frozenset(_INSTANCE_FIELDS)
_INSTANCE_REQUIRED = frozenset({"features"})


def _read(check: FeatureValidator, data: Any, max_batch: int | None) -> list[Checked] | None:
    """The checked instances of ``data``, or ``None`` at the first problem (``_problems`` names them)."""
    items: list[Any]
    if max_batch is None:
        items = [data]
    elif type(data) is dict and len(data) == 1 and type(found := data.get("instances")) is list and 0 < len(found) <= max_batch:
        items = found
    else:
        return None
    read, id_ok, keys = check.check, ID.fullmatch, _INSTANCE_KEYS
    out = []
    ids = []
    for item in items:
        # A missing ``features`` reads as None, which the validator refuses like anything not a dict.
        if type(item) is not dict or not item.keys() <= keys or type(x := read(item.get("features"))) is not dict:
            return None
        item_id = item.get("id")
        if item_id is not None:
            if type(item_id) is not str or id_ok(item_id) is None:
                return None
            ids.append(item_id)
        out.append(_checked((item_id, x)))
    if len(set(ids)) != len(ids):
        return None
    return out


def _problems(check: FeatureValidator, data: Any, max_batch: int | None) -> list[dict[str, Any]]:
    """Every problem of a body ``_read`` refused: around the instances (a batch's), else their
    shapes (then nothing else), else their features and the ids given twice. Problems of an
    instance are named by its ``index`` and ``id``."""
    items: list[Any]
    errors: list[dict[str, Any]] = []
    if max_batch is None:
        items = [data]
    else:
        if not isinstance(data, dict):
            return [{"loc": ["body"], "msg": "expected an object with 'instances'"}]
        errors = [{"loc": ["body", str(k)], "msg": "unknown field"} for k in data if k != "instances"]
        found = data.get("instances")
        if not isinstance(found, list) or not found:
            return [*errors, {"loc": ["body", "instances"], "msg": "expected a non-empty list of instances"}]
        if len(found) > max_batch:
            return [*errors, {"loc": ["body", "instances"], "msg": f"at most {max_batch} instances per batch"}]
        items = found
    for index, item in enumerate(items):
        item_id = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else None
        errors += [
            {"index": index, "id": item_id, "loc": loc, "msg": msg}
            for loc, msg in shape_problems(item, "Instance", _INSTANCE_FIELDS, _INSTANCE_REQUIRED)
        ]
    if errors:
        return errors
    seen: set[str] = set()
    for index, item in enumerate(items):
        item_id = item.get("id")
        checked = check.check(item["features"])
        if type(checked) is list:
            errors += [{"index": index, "id": item_id, **e} for e in checked]
        if item_id is not None:
            if item_id in seen:
                errors.append({"index": index, "id": item_id, "loc": ["id"], "msg": "duplicate id in this request"})
            seen.add(item_id)
    return errors


Answer = dict[str, Any]
"""A prediction as its JSON object: ``id``, ``prediction``, ``probabilities`` (``Prediction``'s fields)."""
_PREDICTION_VALUE: TypeAdapter[bool | str | float | None] = TypeAdapter(bool | str | float | None)
_PLAIN_VALUES = frozenset({bool, str, float, type(None)})


def predict_checked(spec: AppSpec, served: ServedModel, items: list[Checked]) -> list[Answer]:
    """Predictions of one model version for all ``items``, as plain JSON-ready dicts; an
    instance the model gives no finite answer for fails the request (``ValidationFailed``).
    Each dict's keys are ``id``, ``prediction``, ``probabilities``, in that order
    (``PredictionMade.records`` relies on it)."""
    out = []
    unscorable: list[dict[str, object]] = []
    model, task = served.model, spec.task
    for index, (item_id, x) in enumerate(items):
        y, proba = predict(model, task, x)
        if not _finite_answer(y, proba):
            unscorable.append({
                "index": index, "id": item_id, "loc": ["features"],
                "msg": "the model gives no finite answer for these values (too large for it?)",
            })
            continue
        if type(y) not in _PLAIN_VALUES:  # e.g. a numpy float: convert as ``Prediction`` does
            y = _PREDICTION_VALUE.validate_python(y)
        out.append({
            "id": item_id or uuid.uuid4().hex,
            "prediction": y,
            "probabilities": {label_key(k): float(v) for k, v in proba.items()} if proba else None,
        })
    if unscorable:
        raise ValidationFailed(unscorable)
    return out


def encode_prediction(answer: Answer, model: str, version: int) -> bytes:
    """The body of ``/v1/predict``: ``PredictionResponse`` as JSON."""
    return orjson.dumps({**answer, "model": model, "version": version})


def encode_answers(answers: list[Answer]) -> bytes:
    """The JSON array of ``answers``, encoded once per request: both the body of
    ``/v1/predict/batch`` (``encode_predictions``) and the records (``PredictionMade.records``)
    are cut from it."""
    return orjson.dumps(answers)


def encode_predictions(answers: list[Answer], model: str, version: int, *, encoded: bytes | None = None) -> bytes:
    """The body of ``/v1/predict/batch``: ``BatchResponse`` as JSON, around ``encoded``
    (``encode_answers(answers)``) when given. orjson writes no whitespace, so this is exactly
    ``orjson.dumps({"model": model, "version": version, "predictions": answers})``."""
    if encoded is None:
        encoded = orjson.dumps(answers)
    return b"".join((b'{"model":', orjson.dumps(model), b',"version":', orjson.dumps(version), b',"predictions":', encoded, b"}"))


"""``(key, value)`` Kafka records of ``predict_checked``'s answers: the ``PredictionMade``
records' encoder (``streamwise_core.contracts.events``), with its signature ``(answers, model, version,
made_at, *, shadow=False, encoded=None)``; ``encoded`` is ``encode_answers(answers)`` when the
request has it already (a batch's response is cut from it too)."""


def _finite_answer(y: Any, proba: dict[Any, float] | None) -> bool:
    """JSON has no NaN or Infinity: an answer holding one cannot be sent (nor is it one).

    ``math.fsum`` converts each value as ``float()`` does, and its result is finite only if
    every value is (a NaN or an infinity makes it NaN, infinite or an error): one C call for
    the usual answer, ``_finite_values`` for whatever it cannot sum."""
    try:
        if proba and not math.isfinite(math.fsum(proba.values())):
            return False
        return not isinstance(y, float) or math.isfinite(y)
    except (TypeError, ValueError, OverflowError):  # not numbers, -inf + inf, a sum past the float range
        return _finite_values(y, proba)


def _finite_values(y: Any, proba: dict[Any, float] | None) -> bool:
    numbers = [y] if isinstance(y, float) else []
    numbers += list((proba or {}).values())
    try:
        return all(math.isfinite(float(v)) for v in numbers)
    except (TypeError, ValueError, OverflowError):
        return False
