"""Validate request items into event and label records for the application's schema (pure).

One pass over a request's items checks each one (its keys and id, its features and label with
the app spec's validator, ``streamwise_core.contracts.schema.validator``, its timestamp) and either
encodes the records (``EventReceived.records``) or names every problem, all or nothing.

Event bodies are read by orjson first (``quick_items``). Whatever it reads differently from the
``json`` module does not pass that first pass: bodies nested too deeply, integers past 64 bits
(which orjson reads as floats, hence the validator's ``narrow_floats``). So the first problem
sends the body to be read again exactly (``parse_items``: strict JSON, with where it is broken),
and the same pass over those items accepts them, or every problem is named.

The problems of an item's shape (not an object, unknown keys, a missing or invalid id or
features, a timestamp that is no ISO 8601 string) are named in pydantic's words, which clients
of a FastAPI service expect (``schema.shape_problems``); an item with such a problem is not
checked further.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from streamwise_core.contracts.appspec import AppSpec
from streamwise_core.contracts.errors import ValidationFailed
from streamwise_core.contracts.events import ID, ID_PATTERN, EventReceived, Features, Label, LabelReceived, utcnow
from streamwise_core.contracts.schema import FeatureValidator, read_timestamp, shape_problems, validator

from .parsing import parse_items, quick_items

__all__ = ["EARLIEST", "FUTURE_SKEW", "ID_PATTERN", "Records", "event_records", "new_ids", "validate_labels"]

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_SKEW = timedelta(days=1)


def _timestamp_error(ts: datetime, now: datetime) -> str | None:
    if ts.tzinfo is None:
        return "timestamp needs a time zone (e.g. 2026-01-31T12:00:00Z)"
    if not EARLIEST <= ts <= now + FUTURE_SKEW:
        return f"timestamp outside {EARLIEST.date()} .. now + 1 day"
    return None


def _duplicates(ids: list[tuple[int, str]]) -> list[dict[str, Any]]:
    """A problem for each ``(index, id)`` whose id came earlier in the request."""
    seen: set[str] = set()
    errors = []
    for index, item_id in ids:
        if item_id in seen:
            errors.append({"index": index, "id": item_id, "loc": ["id"], "msg": "duplicate id in this request"})
        seen.add(item_id)
    return errors


# --------------------------------------------------------------------------- events

Records = tuple[list[str], list[tuple[bytes, bytes]]]
"""The ids accepted, and the ``(key, value)`` Kafka records to write."""

_EVENT_FIELDS = ("id", "features", "label", "timestamp")
_EVENT_KEYS = frozenset(_EVENT_FIELDS)
_EVENT_REQUIRED = frozenset({"features"})


def event_records(spec: AppSpec, body: bytes, content_type: str, *, max_items: int, now: datetime | None = None) -> Records:
    """The ``EventReceived`` records of a request body, all or nothing: ``ValidationFailed``
    naming each problem when anything is wrong."""
    now = now or utcnow()
    items = quick_items(body, content_type, max_items=max_items)
    if items is not None and (records := _records(validator(spec, narrow_floats=True), items, now)) is not None:
        return records
    items = parse_items(body, content_type, max_items=max_items)  # the body's own problems are raised here
    check = validator(spec)
    records = _records(check, items, now)
    if records is None:
        raise ValidationFailed(_problems(check, items, now))
    return records


def _records(check: FeatureValidator, items: list[Any], now: datetime) -> Records | None:
    """The records of ``items``, or ``None`` at the first problem (``_problems`` names them)."""
    read, label_error = check.check, check.label_error
    latest = now + FUTURE_SKEW
    events: list[tuple[str, Features, Label | None, datetime | None]] = []
    given: list[str] = []
    fresh: list[str] = []
    for index, item in enumerate(items):
        if type(item) is not dict or not item.keys() <= _EVENT_KEYS or type(features := item.get("features")) is not dict:
            return None
        x = read(features)
        if type(x) is not dict:
            return None
        label = item.get("label")
        if label is not None and label_error(label) is not None:
            return None
        timestamp = item.get("timestamp")
        moment = None
        if timestamp is not None:
            stamp = read_timestamp(timestamp)
            if not isinstance(stamp, datetime) or stamp.tzinfo is None or not EARLIEST <= stamp <= latest:
                return None
            moment = stamp
        event_id = item.get("id")
        if event_id is None:
            if not fresh:
                fresh = new_ids(len(items) - index)
            event_id = fresh.pop()
        elif type(event_id) is not str or ID.fullmatch(event_id) is None:
            return None
        else:
            given.append(event_id)
        if len(x) != len(features):  # null optional features are left out
            features = {k: v for k, v in features.items() if v is not None}
        events.append((event_id, features, label, moment))
    if len(set(given)) != len(given):
        return None
    return [e[0] for e in events], EventReceived.records(events, now)


def _problems(check: FeatureValidator, items: list[Any], now: datetime) -> list[dict[str, Any]]:
    """Every problem of ``items`` by ``index`` and ``id``: an item's shape (then nothing else of
    it), else its features, label and timestamp; then the ids given twice."""
    errors: list[dict[str, Any]] = []
    ids: list[tuple[int, str]] = []
    for index, item in enumerate(items):
        item_id = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else None
        shape = shape_problems(item, "EventIn", _EVENT_FIELDS, _EVENT_REQUIRED)
        if shape:
            errors += [{"index": index, "id": item_id, "loc": loc, "msg": msg} for loc, msg in shape]
            continue
        checked = check.check(item["features"])
        if type(checked) is list:
            errors += [{"index": index, "id": item_id, **e} for e in checked]
        label = item.get("label")
        if label is not None and (msg := check.label_error(label)):
            errors.append({"index": index, "id": item_id, "loc": ["label"], "msg": msg})
        moment = read_timestamp(item.get("timestamp"))
        if isinstance(moment, datetime) and (msg := _timestamp_error(moment, now)):
            errors.append({"index": index, "id": item_id, "loc": ["timestamp"], "msg": msg})
        if item_id is not None:
            ids.append((index, item_id))
    return errors + _duplicates(ids)


def new_ids(n: int) -> list[str]:
    """``n`` random ids, each what ``uuid.uuid4().hex`` gives (version 4, RFC 4122 variant), from
    one ``os.urandom`` call instead of a ``UUID`` object each."""
    raw = bytearray(os.urandom(16 * n))
    raw[6::16] = bytes(b & 0x0F | 0x40 for b in raw[6::16])
    raw[8::16] = bytes(b & 0x3F | 0x80 for b in raw[8::16])
    text = raw.hex()
    return [text[k:k + 32] for k in range(0, 32 * n, 32)]


# --------------------------------------------------------------------------- labels

_LABEL_FIELDS = ("id", "label", "timestamp")
_LABEL_REQUIRED = frozenset({"id", "label"})


def validate_labels(spec: AppSpec, items: list[Any], now: datetime | None = None) -> list[LabelReceived]:
    """All labels, or ``ValidationFailed`` listing every problem."""
    now = now or utcnow()
    label_error: Callable[[Any], str | None] = validator(spec).label_error
    errors: list[dict[str, Any]] = []
    labels: list[LabelReceived] = []
    ids: list[tuple[int, str]] = []
    for index, item in enumerate(items):
        item_id = item.get("id") if isinstance(item, dict) and isinstance(item.get("id"), str) else None
        shape = shape_problems(item, "LabelIn", _LABEL_FIELDS, _LABEL_REQUIRED)
        if shape:
            errors += [{"index": index, "id": item_id, "loc": loc, "msg": msg} for loc, msg in shape]
            continue
        assert item_id is not None
        label = item["label"]
        if msg := label_error(label):
            errors.append({"index": index, "id": item_id, "loc": ["label"], "msg": msg})
        moment = read_timestamp(item.get("timestamp"))
        assert not isinstance(moment, str)
        if moment is not None and (msg := _timestamp_error(moment, now)):
            errors.append({"index": index, "id": item_id, "loc": ["timestamp"], "msg": msg})
        ids.append((index, item_id))
        if not errors:
            labels.append(LabelReceived(id=item_id, label=label, timestamp=moment or now, received_at=now))
    errors += _duplicates(ids)
    if errors:
        raise ValidationFailed(errors)
    return labels
