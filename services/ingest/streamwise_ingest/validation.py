"""Validate parsed items into events and labels for the application's schema (pure).

Events take one of two paths to the same verdicts: ``quick_event_records`` accepts the common,
valid request in one pass over orjson's reading of the body and encodes the ``EventReceived``
records directly; anything it does not accept goes the detailed way (``parse_items``,
``validate_events``: strict JSON, pydantic, ``feature_errors``), which names every problem.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from streamwise_core.appspec import AppSpec, FeatureType, Task
from streamwise_core.errors import ValidationFailed
from streamwise_core.events import ID as _ID
from streamwise_core.events import ID_PATTERN, EventReceived, LabelReceived, utcnow
from streamwise_core.schema import feature_errors, label_error, model_input_reader

from .parsing import parse_items, quick_items

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_SKEW = timedelta(days=1)


def _iso_timestamp(value: Any) -> Any:
    """Timestamps are ISO 8601 / RFC 3339 strings only: no Unix numbers, whose unit is a guess."""
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise PydanticCustomError(
            "timestamp_type", "timestamp must be an ISO 8601 string with a time zone, e.g. 2026-01-31T12:00:00Z"
        )
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError("timestamp_parsing", "not an ISO 8601 timestamp: {shown}", {"shown": repr(value[:40])}) from None


class EventIn(BaseModel):
    """An event as clients send it."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=ID_PATTERN)
    features: dict[str, Any]
    label: Any = None
    timestamp: datetime | None = None

    _timestamp = field_validator("timestamp", mode="before")(_iso_timestamp)


class LabelIn(BaseModel):
    """A label for an earlier event, by its id."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    label: Any
    timestamp: datetime | None = None

    _timestamp = field_validator("timestamp", mode="before")(_iso_timestamp)


def _timestamp_error(ts: datetime | None, now: datetime) -> str | None:
    if ts is None:
        return None
    if ts.tzinfo is None:
        return "timestamp needs a time zone (e.g. 2026-01-31T12:00:00Z)"
    if not EARLIEST <= ts <= now + FUTURE_SKEW:
        return f"timestamp outside {EARLIEST.date()} .. now + 1 day"
    return None


def _item_errors(index: int, item: Any, model: type[BaseModel]) -> tuple[BaseModel | None, list[dict[str, Any]]]:
    item_id = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else None
    try:
        return model.model_validate(item), []
    except ValidationError as exc:
        return None, [
            {"index": index, "id": item_id, "loc": list(e["loc"]), "msg": e["msg"]}
            for e in exc.errors(include_url=False)
        ]


def _check_duplicates(ids: list[str | None]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    errors = []
    for index, item_id in enumerate(ids):
        if item_id is None:
            continue
        if item_id in seen:
            errors.append({"index": index, "id": item_id, "loc": ["id"], "msg": "duplicate id in this request"})
        seen.add(item_id)
    return errors


def validate_events(spec: AppSpec, items: list[Any], now: datetime | None = None) -> list[EventReceived]:
    """All events, or ``ValidationFailed`` listing every problem; never a part of them."""
    now = now or utcnow()
    read_input = model_input_reader(spec)
    errors: list[dict[str, Any]] = []
    parsed: list[EventIn] = []
    for index, item in enumerate(items):
        event, problems = _item_errors(index, item, EventIn)
        errors += problems
        if event is None:
            continue
        assert isinstance(event, EventIn)
        if read_input(event.features) is None:
            for e in feature_errors(spec, event.features):
                errors.append({"index": index, "id": event.id, **e})
        if event.label is not None and (msg := label_error(spec, event.label)):
            errors.append({"index": index, "id": event.id, "loc": ["label"], "msg": msg})
        if msg := _timestamp_error(event.timestamp, now):
            errors.append({"index": index, "id": event.id, "loc": ["timestamp"], "msg": msg})
        parsed.append(event)
    errors += _check_duplicates([e.id for e in parsed])
    if errors:
        raise ValidationFailed(errors)
    return [
        EventReceived(
            id=e.id or uuid.uuid4().hex,
            features={k: v for k, v in e.features.items() if v is not None},
            label=e.label,
            timestamp=e.timestamp or now,
            received_at=now,
        )
        for e in parsed
    ]


def validate_labels(spec: AppSpec, items: list[Any], now: datetime | None = None) -> list[LabelReceived]:
    """All labels, or ``ValidationFailed`` listing every problem."""
    now = now or utcnow()
    errors: list[dict[str, Any]] = []
    parsed: list[LabelIn] = []
    for index, item in enumerate(items):
        label, problems = _item_errors(index, item, LabelIn)
        errors += problems
        if label is None:
            continue
        assert isinstance(label, LabelIn)
        if msg := label_error(spec, label.label):
            errors.append({"index": index, "id": label.id, "loc": ["label"], "msg": msg})
        if msg := _timestamp_error(label.timestamp, now):
            errors.append({"index": index, "id": label.id, "loc": ["timestamp"], "msg": msg})
        parsed.append(label)
    errors += _check_duplicates([label.id for label in parsed])
    if errors:
        raise ValidationFailed(errors)
    return [
        LabelReceived(id=label.id, label=label.label, timestamp=label.timestamp or now, received_at=now)
        for label in parsed
    ]


Records = tuple[list[str], list[tuple[bytes, bytes]]]
"""The ids accepted, and the ``(key, value)`` Kafka records to write."""


def event_records(spec: AppSpec, body: bytes, content_type: str, *, max_items: int, now: datetime | None = None) -> Records:
    """The ``EventReceived`` records of a request body, all or nothing: ``ValidationFailed``
    naming each problem when anything is wrong."""
    now = now or utcnow()
    items = quick_items(body, content_type, max_items=max_items)
    if items is not None and (quick := quick_event_records(spec, items, now)) is not None:
        return quick
    events = validate_events(spec, parse_items(body, content_type, max_items=max_items), now)
    return [e.id for e in events], [(e.id.encode(), e.to_bytes()) for e in events]


_EVENT_KEYS = frozenset({"id", "features", "label", "timestamp"})
_EXACT_INT = 2.0**63
"""orjson reads integers past 64 bits as floats, where ``json`` keeps them as integers: such a
float may have been either, so it takes the detailed path."""
_INT_RANGE = 2**63
"""Integers the quick path takes (orjson reads no larger ones); anything else takes the detailed path."""
_FLOAT, _INT, _BOOL, _CATEGORY = "float", "int", "bool", "category"
_KINDS = {FeatureType.FLOAT: _FLOAT, FeatureType.INT: _INT, FeatureType.BOOL: _BOOL, FeatureType.CATEGORY: _CATEGORY}
_RECORD_HEAD = b'{"schema_version":1,"kind":"event_received","id":"'


class _EventShape:
    """What ``quick_event_records`` needs of a spec, computed once per spec."""

    def __init__(self, spec: AppSpec) -> None:
        self.spec = spec
        self.kinds = {name: _KINDS[f.type] for name, f in spec.features.items()}
        self.allowed = {name: frozenset(f.values) if f.values is not None else None for name, f in spec.features.items()}
        self.required = frozenset(name for name, f in spec.features.items() if f.required)
        self.task = spec.task
        self.classes = frozenset(spec.label.classes or ())


_SHAPES: dict[int, _EventShape] = {}


def _shape(spec: AppSpec) -> _EventShape:
    shape = _SHAPES.get(id(spec))
    if shape is None or shape.spec is not spec:
        shape = _SHAPES[id(spec)] = _EventShape(spec)
    return shape


def new_ids(n: int) -> list[str]:
    """``n`` random ids, each what ``uuid.uuid4().hex`` gives (version 4, RFC 4122 variant), from
    one ``os.urandom`` call instead of a ``UUID`` object each."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = bytes(b & 0x0F | 0x40 for b in raw[6::16])
    raw[8::16] = bytes(b & 0x3F | 0x80 for b in raw[8::16])
    text = raw.hex()
    return [text[k:k + 32] for k in range(0, 32 * n, 32)]


def quick_event_records(spec: AppSpec, items: list[Any], now: datetime) -> Records | None:
    """What ``validate_events`` would accept, as records, without a model per event; ``None``
    as soon as anything differs from the plain valid case (the detailed path then decides).

    One pass per event: the features are checked in place against the spec (the verdicts of
    ``ModelInputReader``, without building the model's input), and each value is assembled
    from its parts: the id (plain ASCII once it matched ``ID_PATTERN``), the features and label
    encoded by orjson, and the timestamps encoded once per request. The bytes are those of
    ``EventReceived(...).to_bytes()`` for the same event (unit tests hold them equal).
    """
    shape = _shape(spec)
    kinds, allowed, required, task, classes = shape.kinds, shape.allowed, shape.required, shape.task, shape.classes
    stamp = orjson.dumps(now, option=orjson.OPT_UTC_Z)
    received_tail = b',"received_at":' + stamp + b"}"
    now_tail = b',"timestamp":' + stamp + received_tail
    ids: list[str] = []
    given: list[str] = []
    records: list[tuple[bytes, bytes]] = []
    fresh: list[str] = []
    latest = now + FUTURE_SKEW
    dumps = orjson.dumps
    for index, item in enumerate(items):
        if type(item) is not dict or not item.keys() <= _EVENT_KEYS:
            return None
        features = item.get("features")
        if type(features) is not dict:
            return None
        has_none = False
        for name, value in features.items():
            kind = kinds.get(name)
            if kind is None:
                return None
            t = type(value)
            if t is float:
                if kind is _FLOAT:
                    if not -_EXACT_INT < value < _EXACT_INT:
                        return None
                elif kind is not _INT or not (-_EXACT_INT < value < _EXACT_INT and value.is_integer()):
                    return None
            elif t is int:
                if (kind is not _FLOAT and kind is not _INT) or not -_INT_RANGE <= value < _INT_RANGE:
                    return None
            elif t is bool:
                if kind is not _BOOL:
                    return None
            elif t is str:
                if kind is not _CATEGORY or ((values := allowed[name]) is not None and value not in values):
                    return None
            elif value is None:
                has_none = True
            else:
                return None
        if has_none:
            features = {k: v for k, v in features.items() if v is not None}
        if not required <= features.keys():
            return None
        label = item.get("label")
        if label is None:
            label_json = b"null"
        elif task is Task.BINARY:
            if type(label) is not bool:
                return None
            label_json = b"true" if label else b"false"
        elif task is Task.MULTICLASS:
            if type(label) is not str or label not in classes:
                return None
            label_json = dumps(label)
        elif task is Task.REGRESSION and type(label) is float and -_EXACT_INT < label < _EXACT_INT:
            label_json = dumps(label)  # an integer label becomes a float in the model: the detailed path
        else:
            return None
        timestamp = item.get("timestamp")
        if timestamp is None:
            tail = now_tail
        else:
            if type(timestamp) is not str:
                return None
            try:
                moment = datetime.fromisoformat(timestamp)
            except ValueError:
                return None
            if moment.tzinfo is None or not EARLIEST <= moment <= latest:
                return None
            tail = b',"timestamp":' + dumps(moment, option=orjson.OPT_UTC_Z) + received_tail
        event_id = item.get("id")
        if event_id is None:
            if not fresh:
                fresh = new_ids(len(items) - index)
            event_id = fresh.pop()
        elif type(event_id) is not str or _ID.fullmatch(event_id) is None:
            return None
        else:
            given.append(event_id)
        key = event_id.encode()
        ids.append(event_id)
        records.append((key, b"".join((_RECORD_HEAD, key, b'","features":', dumps(features), b',"label":', label_json, tail))))
    if len(set(given)) != len(given):
        return None
    return ids, records
