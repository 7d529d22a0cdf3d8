"""Events are the contract between services: frozen, versioned, past-tense."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Event(BaseModel):
    # Consumers ignore fields they do not know, so producers may add fields freely.
    model_config = ConfigDict(frozen=True, extra="ignore")

    schema_version: int = 1

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Any:
        return cls.model_validate_json(data)


class EventReceived(_Event):
    """An application event accepted by ingest, with its label when it came along."""

    kind: Literal["event_received"] = "event_received"
    id: str
    features: dict[str, float | int | str | bool]
    label: bool | str | float | None = None
    timestamp: datetime
    received_at: datetime = Field(default_factory=utcnow)


class LabelReceived(_Event):
    """The outcome of an earlier event, which may arrive long after it."""

    kind: Literal["label_received"] = "label_received"
    id: str
    label: bool | str | float
    timestamp: datetime
    received_at: datetime = Field(default_factory=utcnow)
    source: str = "api"


class PredictionMade(_Event):
    """What the predictor answered, so outcomes can be joined with labels later."""

    kind: Literal["prediction_made"] = "prediction_made"
    id: str
    model: str
    version: int
    prediction: bool | str | float | None
    probabilities: dict[str, float] | None = None
    made_at: datetime = Field(default_factory=utcnow)
    shadow: bool = False
    """Made by a challenger in the background on a sampled request; the client got the champion's."""


class ModelPublished(_Event):
    """A new model version exists in the model store and the registry."""

    kind: Literal["model_published"] = "model_published"
    app: str
    model: str
    version: int
    examples_seen: int
    metrics: dict[str, float]
    published_at: datetime = Field(default_factory=utcnow)


class DeadLettered(_Event):
    """A message a consumer could not process, kept with the reason."""

    kind: Literal["dead_lettered"] = "dead_lettered"
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str
    """The original bytes, decoded as UTF-8 with replacement."""
    reason: str
    consumer: str
    at: datetime = Field(default_factory=utcnow)


# --------------------------------------------------------------------------- fast decoding
# The trainer reads every event and label record. The plain case (what ingest writes) is read
# by orjson; anything else is read by the model, whose ``ValidationError`` names the problem.
# ``tests/unit/test_event_decoding.py`` holds both ways equal.

Features = dict[str, float | int | str | bool]
Label = bool | str | float

_EVENT_KEYS = frozenset({"schema_version", "kind", "id", "features", "label", "timestamp", "received_at"})
_LABEL_KEYS = frozenset({"schema_version", "kind", "id", "label", "timestamp", "received_at", "source"})
_FEATURE_TYPES = frozenset({float, int, str, bool})
_EXACT_INT = 2.0**63
"""orjson reads integers past 64 bits as floats, where the model keeps them as integers: such a
float may have been either, so the model reads it."""
_TIMESTAMP = re.compile(
    r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
"""What the events' ``to_bytes`` writes for a datetime; any other form is left to the model.
``datetime.fromisoformat`` then refuses dates that do not exist (Feb 30, year 0)."""


_known_datetimes: dict[str, None] = {}
"""Strings already found plain: the records of one ingest request share their timestamps."""


def _plain_datetime(value: Any) -> bool:
    """Whether ``value`` is a datetime string in the form ``to_bytes`` writes, which the model
    reads; anything else (other forms, invalid dates) is left to the model."""
    if type(value) is not str:
        return False
    if value in _known_datetimes:
        return True
    if _TIMESTAMP.fullmatch(value) is None:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    if len(_known_datetimes) >= 1024:
        _known_datetimes.clear()
    _known_datetimes[value] = None
    return True


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _plain_features(features: Any) -> bool:
    if type(features) is not dict:
        return False
    for value in features.values():
        kind = type(value)
        if kind is float:
            if not -_EXACT_INT < value < _EXACT_INT:
                return False
        elif kind not in _FEATURE_TYPES:
            return False
    return True


def _plain_label(label: Any) -> bool:
    kind = type(label)
    return kind is bool or kind is str or (kind is float and -_EXACT_INT < label < _EXACT_INT)


def _plain_envelope(raw: Any, keys: frozenset[str], kind: str) -> str | None:
    """The id of a record whose envelope (keys, kind, schema version, id, timestamps) is
    exactly what ``to_bytes`` writes; ``None`` for anything else."""
    if (
        type(raw) is dict and raw.keys() <= keys and raw.get("kind") == kind
        and type(raw.get("schema_version")) is int and raw["schema_version"] == 1
        and type(record_id := raw.get("id")) is str
        and _plain_datetime(raw.get("timestamp")) and _plain_datetime(raw.get("received_at"))
    ):
        return record_id
    return None


def event_fields(data: bytes) -> tuple[str, Features, Label | None]:
    """``(id, features, label)`` of the ``EventReceived`` in ``data``: exactly what
    ``EventReceived.from_bytes(data)`` holds, or its ``ValidationError``."""
    raw = _loads(data)
    if (
        (event_id := _plain_envelope(raw, _EVENT_KEYS, "event_received")) is not None
        and _plain_features(features := raw.get("features"))
        and ((label := raw.get("label")) is None or _plain_label(label))
    ):
        return event_id, features, label
    event = EventReceived.from_bytes(data)
    return event.id, event.features, event.label


def label_fields(data: bytes) -> tuple[str, Label]:
    """``(id, label)`` of the ``LabelReceived`` in ``data``: exactly what
    ``LabelReceived.from_bytes(data)`` holds, or its ``ValidationError``."""
    raw = _loads(data)
    if (
        (event_id := _plain_envelope(raw, _LABEL_KEYS, "label_received")) is not None
        and _plain_label(label := raw.get("label")) and type(raw.get("source", "")) is str
    ):
        return event_id, label
    event = LabelReceived.from_bytes(data)
    return event.id, event.label
