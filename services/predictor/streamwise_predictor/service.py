"""Turn requests into predictions with the served model (pure, no I/O).

Requests take one of two paths to the same verdicts. The fast path (``read_request``) reads
the body with orjson and checks each instance in one pass (``ModelInputReader``); whenever it
finds anything it does not accept, the request is read again the detailed way (strict JSON,
the pydantic models below, ``check_instances``), which names every problem exactly as it always
has. Answers are plain dicts encoded once (``encode_predictions``, ``prediction_records``).
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from streamwise_core.appspec import AppSpec
from streamwise_core.errors import ValidationFailed
from streamwise_core.http import NOT_JSON, decode_utf8, loads_quick, loads_strict
from streamwise_core.inference import label_key, predict
from streamwise_core.schema import feature_errors, features_json_schema, model_input_reader, to_model_input

from .holder import ServedModel

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_ID = re.compile(ID_PATTERN[1:-1])
"""``ID_PATTERN`` for ``fullmatch``: Python's ``$`` would also match before a final newline."""


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=ID_PATTERN)
    """The event id, so the prediction can be joined with its label later."""
    features: dict[str, Any]


class Batch(BaseModel):
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


def _id_of(item: Any) -> str | None:
    value = item.get("id") if isinstance(item, dict) else None
    return value if isinstance(value, str) else None


def _pydantic_errors(exc: ValidationError, **where: Any) -> list[dict[str, Any]]:
    # An empty ``loc`` names the item itself (e.g. it is not an object), as in ingest.
    return [{**where, "loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors(include_url=False)]


def parse_instance(data: Any) -> Instance:
    """One instance from a parsed JSON body, or ``ValidationFailed`` naming each problem."""
    try:
        return Instance.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(_pydantic_errors(exc, index=0, id=_id_of(data))) from None


def parse_batch(data: Any, max_batch: int) -> Batch:
    """A batch from a parsed JSON body; problems are named by instance ``index`` and ``id``."""
    if not isinstance(data, dict):
        raise ValidationFailed([{"loc": ["body"], "msg": "expected an object with 'instances'"}])
    errors: list[dict[str, Any]] = [{"loc": ["body", str(k)], "msg": "unknown field"} for k in data if k != "instances"]
    items = data.get("instances")
    if not isinstance(items, list) or not items:
        errors.append({"loc": ["body", "instances"], "msg": "expected a non-empty list of instances"})
        raise ValidationFailed(errors)
    if len(items) > max_batch:
        errors.append({"loc": ["body", "instances"], "msg": f"at most {max_batch} instances per batch"})
        raise ValidationFailed(errors)
    instances: list[Instance] = []
    for index, item in enumerate(items):
        try:
            instances.append(Instance.model_validate(item))
        except ValidationError as exc:
            errors += _pydantic_errors(exc, index=index, id=_id_of(item))
    if errors:
        raise ValidationFailed(errors)
    return Batch(instances=instances)


class Checked(NamedTuple):
    """A valid instance: its id (``None``: generate one) and the features as the model reads them."""

    id: str | None
    x: dict[str, float | str]


def read_request(spec: AppSpec, body: bytes, max_batch: int | None) -> list[Checked]:
    """The instances of a ``/v1/predict`` body (``max_batch`` ``None``) or of a
    ``/v1/predict/batch`` body, checked; ``ValidationFailed`` naming each problem otherwise."""
    data = loads_quick(body)
    if data is not NOT_JSON:
        fast = _read_single(spec, data) if max_batch is None else _read_batch(spec, data, max_batch)
        if fast is not None:
            return fast
    # The detailed path: the same verdicts, with the reasons.
    data = loads_strict(decode_utf8(body), ["body"])
    instances = [parse_instance(data)] if max_batch is None else parse_batch(data, max_batch).instances
    check_instances(spec, instances)
    read_input = model_input_reader(spec)
    return [Checked(i.id, read_input(i.features) or to_model_input(spec, i.features)) for i in instances]


_INSTANCE_KEYS = frozenset({"id", "features"})


def _read_one(spec: AppSpec, item: Any) -> Checked | None:
    """``item`` as ``Instance`` + ``check_instances`` would accept it, or ``None`` (ask them)."""
    if type(item) is not dict or "features" not in item or not item.keys() <= _INSTANCE_KEYS:
        return None
    item_id = item.get("id")
    if item_id is not None and (type(item_id) is not str or _ID.fullmatch(item_id) is None):
        return None
    x = model_input_reader(spec)(item["features"])
    return None if x is None else Checked(item_id, x)


def _read_single(spec: AppSpec, data: Any) -> list[Checked] | None:
    one = _read_one(spec, data)
    return None if one is None else [one]


def _read_batch(spec: AppSpec, data: Any, max_batch: int) -> list[Checked] | None:
    if type(data) is not dict or len(data) != 1 or type(items := data.get("instances")) is not list:
        return None
    if not 0 < len(items) <= max_batch:
        return None
    out = []
    ids: set[str] = set()
    for item in items:
        one = _read_one(spec, item)
        if one is None:
            return None
        if one.id is not None:
            if one.id in ids:
                return None
            ids.add(one.id)
        out.append(one)
    return out


def check_instances(spec: AppSpec, instances: list[Instance]) -> None:
    """Every instance matches the schema and no id is given twice, or ``ValidationFailed``."""
    errors = []
    seen: set[str] = set()
    read_input = model_input_reader(spec)
    for index, inst in enumerate(instances):
        if read_input(inst.features) is None:
            errors += [{"index": index, "id": inst.id, **e} for e in feature_errors(spec, inst.features)]
        if inst.id is not None:
            if inst.id in seen:
                errors.append({"index": index, "id": inst.id, "loc": ["id"], "msg": "duplicate id in this request"})
            seen.add(inst.id)
    if errors:
        raise ValidationFailed(errors)


def predict_instances(spec: AppSpec, served: ServedModel, instances: list[Instance]) -> list[Prediction]:
    """Predictions of one model version for all ``instances``."""
    read_input = model_input_reader(spec)
    checked = [Checked(i.id, read_input(i.features) or to_model_input(spec, i.features)) for i in instances]
    return [Prediction(**answer) for answer in predict_checked(spec, served, checked)]


Answer = dict[str, Any]
"""A prediction as its JSON object: ``id``, ``prediction``, ``probabilities`` (``Prediction``'s fields)."""
_PREDICTION_VALUE: TypeAdapter[bool | str | float | None] = TypeAdapter(bool | str | float | None)
_PLAIN_VALUES = frozenset({bool, str, float, type(None)})


def predict_checked(spec: AppSpec, served: ServedModel, items: list[Checked]) -> list[Answer]:
    """Predictions of one model version for all ``items``, as plain JSON-ready dicts; an
    instance the model gives no finite answer for fails the request (``ValidationFailed``)."""
    out = []
    unscorable = []
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


def encode_predictions(answers: list[Answer], model: str, version: int) -> bytes:
    """The body of ``/v1/predict/batch``: ``BatchResponse`` as JSON."""
    return orjson.dumps({"model": model, "version": version, "predictions": answers})


def prediction_records(
    answers: list[Answer], model: str, version: int, made_at: datetime, *, shadow: bool = False,
) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` Kafka records of ``answers``: each value is the bytes of
    ``PredictionMade(**answer, model=model, version=version, made_at=made_at, shadow=shadow).to_bytes()``
    without building the model (``tests/unit/test_fast_paths.py`` holds them equal: a field
    added to ``PredictionMade`` must be added here too)."""
    return [
        (a["id"].encode(), orjson.dumps({
            "schema_version": 1, "kind": "prediction_made", "id": a["id"], "model": model, "version": version,
            "prediction": a["prediction"], "probabilities": a["probabilities"], "made_at": made_at, "shadow": shadow,
        }, option=orjson.OPT_UTC_Z))
        for a in answers
    ]


def _finite_answer(y: Any, proba: dict[Any, float] | None) -> bool:
    """JSON has no NaN or Infinity: an answer holding one cannot be sent (nor is it one)."""
    numbers = [y] if isinstance(y, float) else []
    numbers += list((proba or {}).values())
    try:
        return all(math.isfinite(float(v)) for v in numbers)
    except (TypeError, ValueError, OverflowError):
        return False
