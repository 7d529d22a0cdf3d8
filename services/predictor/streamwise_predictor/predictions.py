"""Turn requests into predictions with the served model (pure, no I/O).

Requests take one of two paths to the same verdicts. The fast path (``read_request``) reads
the body with orjson and checks each instance in one pass (``ModelInputReader``); whenever it
finds anything it does not accept, the request is read again the detailed way (strict JSON,
the pydantic models below, ``check_instances``), which names every problem exactly as it always
has. Answers are plain dicts encoded once (``encode_predictions``, ``prediction_records``).
"""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from streamwise_core.appspec import AppSpec
from streamwise_core.errors import ValidationFailed
from streamwise_core.events import ID as _ID
from streamwise_core.events import ID_PATTERN
from streamwise_core.http import NOT_JSON, decode_utf8, loads_quick, loads_strict
from streamwise_core.inference import label_key, predict
from streamwise_core.schema import feature_errors, features_json_schema, model_input_reader, to_model_input

from .holder import ServedModel


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
    """``_read_one`` of each instance, with the per-instance lookups hoisted out of the loop
    (the reader, the id pattern) and duplicate ids counted once at the end."""
    if type(data) is not dict or len(data) != 1 or type(items := data.get("instances")) is not list:
        return None
    if not 0 < len(items) <= max_batch:
        return None
    read_input = model_input_reader(spec)
    id_ok = _ID.fullmatch
    keys = _INSTANCE_KEYS
    out = []
    ids = []
    for item in items:
        # A missing ``features`` reads as None, which the reader refuses like anything not a dict.
        if type(item) is not dict or not item.keys() <= keys or (x := read_input(item.get("features"))) is None:
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


_checked = partial(tuple.__new__, Checked)
"""``Checked(id, x)`` from a pair without NamedTuple's Python-level ``__new__``."""


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


Answer = dict[str, Any]
"""A prediction as its JSON object: ``id``, ``prediction``, ``probabilities`` (``Prediction``'s fields)."""
_PREDICTION_VALUE: TypeAdapter[bool | str | float | None] = TypeAdapter(bool | str | float | None)
_PLAIN_VALUES = frozenset({bool, str, float, type(None)})


def predict_checked(spec: AppSpec, served: ServedModel, items: list[Checked]) -> list[Answer]:
    """Predictions of one model version for all ``items``, as plain JSON-ready dicts; an
    instance the model gives no finite answer for fails the request (``ValidationFailed``).
    Each dict's keys are ``id``, ``prediction``, ``probabilities``, in that order
    (``prediction_records`` relies on it)."""
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
    ``/v1/predict/batch`` (``encode_predictions``) and the records (``prediction_records``)
    are cut from it."""
    return orjson.dumps(answers)


def encode_predictions(answers: list[Answer], model: str, version: int, *, encoded: bytes | None = None) -> bytes:
    """The body of ``/v1/predict/batch``: ``BatchResponse`` as JSON, around ``encoded``
    (``encode_answers(answers)``) when given. orjson writes no whitespace, so this is exactly
    ``orjson.dumps({"model": model, "version": version, "predictions": answers})``."""
    if encoded is None:
        encoded = orjson.dumps(answers)
    return b"".join((b'{"model":', orjson.dumps(model), b',"version":', orjson.dumps(version), b',"predictions":', encoded, b"}"))


_RECORD_HEAD = b'{"schema_version":1,"kind":"prediction_made","id":'
_ANSWERS_HEAD = b'[{"id":'
_ANSWER_SEP = b'},{"id":'
_PREDICTION_KEY = b'","prediction":'
"""The end of an answer's id and its second key."""


def prediction_records(
    answers: list[Answer], model: str, version: int, made_at: datetime, *, shadow: bool = False,
    encoded: bytes | None = None,
) -> list[tuple[bytes, bytes]]:
    """``(key, value)`` Kafka records of ``answers`` (``predict_checked``'s dicts): each value
    is the bytes of ``PredictionMade(**answer, model=model, version=version, made_at=made_at,
    shadow=shadow).to_bytes()`` without building the model (``tests/unit/test_fast_paths.py``
    holds them equal: a field added to ``PredictionMade`` must be added here too).

    All records of a request are cut from one encoding of the answers (``encoded``, the
    request's ``encode_answers``, or made here): ``[{"id":…,"prediction":…,"probabilities":…},…]``.
    What differs from answer to record is constant per request: a head before the id,
    ``"model"`` and ``"version"`` between the id and the prediction, and ``"made_at"`` and
    ``"shadow"`` at the end. A raw ``"`` is always a string's delimiter in JSON, so
    ``},{"id":`` only appears between two answers, and ``","prediction":`` only where a
    string is followed by the key ``prediction``: the id and the prediction of an answer in
    ``predict_checked``'s order, and nowhere else (a label ``prediction`` in a probabilities
    object follows a number). If it is not found exactly once per answer (keys in another
    order), each record is encoded alone (``_records_one_by_one``), as before; so is a single answer.
    """
    n = len(answers)
    if n == 0:
        return []
    if n == 1:  # a single answer (``/v1/predict``) is cheaper encoded alone than cut: ~2.7 against ~6 µs
        return _records_one_by_one(answers, model, version, made_at, shadow)
    if encoded is None:
        encoded = orjson.dumps(answers)
    between = b"".join((b'","model":', orjson.dumps(model), b',"version":', orjson.dumps(version), b',"prediction":'))
    inner = encoded[len(_ANSWERS_HEAD):-2]
    moved = inner.replace(_PREDICTION_KEY, between)
    # Exactly one ``","prediction":`` per answer (counted by the growth, without another pass):
    if not encoded.startswith(_ANSWERS_HEAD) or len(moved) - len(inner) != n * (len(between) - len(_PREDICTION_KEY)):
        return _records_one_by_one(answers, model, version, made_at, shadow)
    pieces = moved.split(_ANSWER_SEP)
    if len(pieces) != n:  # pragma: no cover - not for predict_checked's dicts (see above)
        return _records_one_by_one(answers, model, version, made_at, shadow)
    head = _RECORD_HEAD
    tail = b"".join((b',"made_at":', orjson.dumps(made_at, option=orjson.OPT_UTC_Z), b',"shadow":true}' if shadow else b',"shadow":false}'))
    return list(zip([a["id"].encode() for a in answers], [head + piece + tail for piece in pieces], strict=True))


def _records_one_by_one(
    answers: list[Answer], model: str, version: int, made_at: datetime, shadow: bool,
) -> list[tuple[bytes, bytes]]:
    return [
        (a["id"].encode(), orjson.dumps({
            "schema_version": 1, "kind": "prediction_made", "id": a["id"], "model": model, "version": version,
            "prediction": a["prediction"], "probabilities": a["probabilities"], "made_at": made_at, "shadow": shadow,
        }, option=orjson.OPT_UTC_Z))
        for a in answers
    ]


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
