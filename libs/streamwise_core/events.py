"""Events are the contract between services: frozen, versioned, past-tense."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

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
