"""Validate parsed items into events and labels for the application's schema (pure)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from streamwise_core.appspec import AppSpec
from streamwise_core.errors import ValidationFailed
from streamwise_core.events import EventReceived, LabelReceived, utcnow
from streamwise_core.schema import feature_errors, label_error, model_input_reader

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
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
