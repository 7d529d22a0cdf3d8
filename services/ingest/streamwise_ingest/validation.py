"""Validate parsed items into events and labels for the application's schema (pure).

Events take one of two paths to the same verdicts: ``quick_event_records`` accepts the common,
valid request in one pass over orjson's reading of the body and encodes the ``EventReceived``
records directly; anything it does not accept goes the detailed way (``parse_items``,
``validate_events``: strict JSON, pydantic, ``feature_errors``), which names every problem.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from streamwise_core.appspec import AppSpec
from streamwise_core.errors import ValidationFailed
from streamwise_core.events import EventReceived, LabelReceived, utcnow
from streamwise_core.schema import feature_errors, label_error, model_input_reader

from .parsing import parse_items, quick_items

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_ID = re.compile(ID_PATTERN[1:-1])
"""``ID_PATTERN`` for ``fullmatch``: Python's ``$`` would also match before a final newline."""
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
_LABEL_TYPES = frozenset({bool, str, float})
_EXACT_INT = 2.0**63
"""orjson reads integers past 64 bits as floats, where ``json`` keeps them as integers: such a
float may have been either, so it takes the detailed path."""


def quick_event_records(spec: AppSpec, items: list[Any], now: datetime) -> Records | None:
    """What ``validate_events`` would accept, as records, without a model per event; ``None``
    as soon as anything differs from the plain valid case (the detailed path then decides).

    Each value is the bytes of ``EventReceived(...).to_bytes()`` for the same event (a unit
    test holds them equal).
    """
    read_input = model_input_reader(spec)
    ids: list[str] = []
    records: list[tuple[bytes, bytes]] = []
    seen: set[str] = set()
    latest = now + FUTURE_SKEW
    for item in items:
        if type(item) is not dict or "features" not in item or not item.keys() <= _EVENT_KEYS:
            return None
        features = item["features"]
        if read_input(features) is None:
            return None
        for value in features.values():
            if type(value) is float and abs(value) >= _EXACT_INT:
                return None
        label = item.get("label")
        if label is not None and (type(label) not in _LABEL_TYPES or label_error(spec, label) is not None
                                  or (type(label) is float and abs(label) >= _EXACT_INT)):
            return None
        timestamp = item.get("timestamp")
        if timestamp is not None:
            if type(timestamp) is not str:
                return None
            try:
                timestamp = datetime.fromisoformat(timestamp)
            except ValueError:
                return None
            if timestamp.tzinfo is None or not EARLIEST <= timestamp <= latest:
                return None
        event_id = item.get("id")
        if event_id is None:
            event_id = uuid.uuid4().hex
        elif type(event_id) is not str or _ID.fullmatch(event_id) is None or event_id in seen:
            return None
        else:
            seen.add(event_id)
        ids.append(event_id)
        records.append((event_id.encode(), orjson.dumps({
            "schema_version": 1, "kind": "event_received", "id": event_id,
            "features": {k: v for k, v in features.items() if v is not None}, "label": label,
            "timestamp": timestamp or now, "received_at": now,
        }, option=orjson.OPT_UTC_Z)))
    return ids, records
