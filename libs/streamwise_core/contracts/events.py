"""Events are the contract between services: frozen, versioned, past-tense.

They are also the format of the topics' records for any Kafka client: ``record_schemas.py``
generates docs/schemas/*.schema.json from these models, with the docstrings of the fields as
their descriptions (docs/record-formats.md).

The records written on the hot paths are encoded and decoded here too, beside their models and
byte for byte as the models write and read them: ``EventReceived.records`` (ingest),
``PredictionMade.records`` (the predictor), ``event_fields`` and ``label_fields`` (the trainer).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator


def utcnow() -> datetime:
    return datetime.now(UTC)


ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
"""An event's id, as ingest, the predictor and the web app accept it (their OpenAPI documents say so)."""
ID = re.compile(ID_PATTERN[1:-1])
"""``ID_PATTERN`` for ``fullmatch``: Python's ``$`` would also match before a final newline."""


class _Event(BaseModel):
    # Consumers ignore fields they do not know, so producers may add fields freely.
    # The docstrings of the fields are their descriptions in the JSON Schemas (docs/schemas).
    model_config = ConfigDict(frozen=True, extra="ignore")

    schema_version: Literal[1] = 1
    """The version of the record's format. Fields may be added within a version (readers ignore
    fields they do not know); a change that a reader of this version would misread gets a new one,
    and a reader refuses a version it does not know (the trainer dead-letters the record)."""

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Any:
        return cls.model_validate_json(data)


class EventReceived(_Event):
    """An application event accepted by ingest, with its label when it came along."""

    kind: Literal["event_received"] = "event_received"
    """What the record is: every topic's records say it."""
    id: str
    """The event's id, which its label and its prediction carry too (ingest's ids match
    ``^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$``)."""
    features: dict[str, float | int | str | bool]
    """Feature values by name, as the app spec declares them: numbers, booleans, a category's string."""
    label: bool | str | float | None = None
    """The outcome when it came with the event (a boolean, a class or a number, as the app's task
    says), else null: the label then comes later on the labels topic."""
    timestamp: datetime
    """When the event happened."""
    received_at: datetime = Field(default_factory=utcnow)
    """When ingest accepted it (a reader takes the time it reads it at when it is missing)."""

    @classmethod
    def records(
        cls, events: Sequence[tuple[str, Features, Label | None, datetime | None]], received_at: datetime,
    ) -> list[tuple[bytes, bytes]]:
        """``(key, value)`` Kafka records of ``(id, features, label, timestamp)`` events: the key
        is the id as UTF-8, the value is ``EventReceived(id=id, features=features, label=label,
        timestamp=timestamp or received_at, received_at=received_at).to_bytes()``, assembled from
        parts encoded by orjson without building the model. What orjson cannot encode as the
        model does (integers past 64 bits, values of other types) the model encodes, or refuses.

        Give features without ``None`` values (as the validator accepted them): the model refuses
        ``None``, orjson would write ``null``.

        >>> at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
        >>> [(key, value)] = EventReceived.records([("e-1", {"amount": 12.5, "hour": 3}, True, None)], at)
        >>> key, value
        (b'e-1', b'{"schema_version":1,"kind":"event_received","id":"e-1","features":{"amount":12.5,"hour":3},\
"label":true,"timestamp":"2026-03-01T12:00:00Z","received_at":"2026-03-01T12:00:00Z"}')
        >>> value == EventReceived(id="e-1", features={"amount": 12.5, "hour": 3}, label=True,
        ...                        timestamp=at, received_at=at).to_bytes()
        True
        """
        dumps = orjson.dumps
        stamp = _datetime_json(received_at)
        received_tail = b',"received_at":' + stamp + b"}"
        now_tail = b',"timestamp":' + stamp + received_tail
        out = []
        for event_id, features, label, timestamp in events:
            if label is None:
                label_json = b"null"
            elif label is True:
                label_json = b"true"
            elif label is False:
                label_json = b"false"
            elif type(label) is str or type(label) is float:
                label_json = dumps(label)
            else:  # an integer is a float in the model (``int`` is not one of the label's types)
                label_json = b""
            try:
                if not label_json:
                    label_json = dumps(float(label))  # type: ignore[arg-type]  # else the model says why
                value = b"".join((
                    _EVENT_HEAD, dumps(event_id), b',"features":', dumps(features), b',"label":', label_json,
                    now_tail if timestamp is None else b',"timestamp":' + _datetime_json(timestamp) + received_tail,
                ))
            except (TypeError, ValueError, OverflowError):  # orjson.JSONEncodeError is a TypeError
                value = cls(
                    id=event_id, features=features, label=label, timestamp=timestamp or received_at, received_at=received_at,
                ).to_bytes()
            out.append((event_id.encode(), value))
        return out


class LabelReceived(_Event):
    """The outcome of an earlier event, which may arrive long after it."""

    kind: Literal["label_received"] = "label_received"
    """What the record is: every topic's records say it."""
    id: str
    """The id of the event this is the outcome of."""
    label: bool | str | float
    """The outcome: a boolean, a class or a number, as the app's task says."""
    timestamp: datetime
    """When the outcome was known."""
    received_at: datetime = Field(default_factory=utcnow)
    """When it was accepted (a reader takes the time it reads it at when it is missing)."""
    source: str = "api"
    """Who gave it: ``api`` (ingest), ``webapp:<user>`` (feedback in the web app), or a name of the producer's choice."""


class PredictionMade(_Event):
    """What the predictor answered, so outcomes can be joined with labels later."""

    kind: Literal["prediction_made"] = "prediction_made"
    """What the record is: every topic's records say it."""
    id: str
    """The id of the instance predicted: the request's ``id``, or one the predictor made up."""
    model: str
    """The model that answered."""
    version: int
    """Its version."""
    prediction: bool | str | float | None
    """The answer: a boolean, a class or a number, as the app's task says."""
    probabilities: dict[str, float] | None = None
    """The probability of each class (classification), else null."""
    made_at: datetime = Field(default_factory=utcnow)
    """When the answer was made."""
    shadow: bool = False
    """Made by a challenger in the background on a sampled request; the client got the champion's."""

    @classmethod
    def records(
        cls, answers: Sequence[Mapping[str, Any]], model: str, version: int, made_at: datetime, *, shadow: bool = False,
        encoded: bytes | None = None,
    ) -> list[tuple[bytes, bytes]]:
        """``(key, value)`` Kafka records of ``answers``, dicts of ``id``, ``prediction`` and
        ``probabilities`` in that order (the predictor's ``predict_checked`` gives them so):
        each key is the id as UTF-8, each value is exactly ``PredictionMade(**answer, model=model,
        version=version, made_at=made_at, shadow=shadow).to_bytes()``, without building the model.

        >>> at = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
        >>> answers = [{"id": "p-1", "prediction": True, "probabilities": {"false": 0.25, "true": 0.75}},
        ...            {"id": "p-2", "prediction": False, "probabilities": {"false": 0.5, "true": 0.5}}]
        >>> [(key, value), _] = PredictionMade.records(answers, "fraud-lr", 7, at)
        >>> key, value
        (b'p-1', b'{"schema_version":1,"kind":"prediction_made","id":"p-1","model":"fraud-lr","version":7,\
"prediction":true,"probabilities":{"false":0.25,"true":0.75},"made_at":"2026-03-01T12:00:00Z","shadow":false}')
        >>> value == PredictionMade(**answers[0], model="fraud-lr", version=7, made_at=at).to_bytes()
        True

        All records of a request are cut from one encoding of the answers (``encoded``,
        ``orjson.dumps(answers)``, or made here): ``[{"id":…,"prediction":…,"probabilities":…},…]``.
        What differs from answer to record is constant per request: a head before the id,
        ``"model"`` and ``"version"`` between the id and the prediction, and ``"made_at"`` and
        ``"shadow"`` at the end. A raw ``"`` is always a string's delimiter in JSON, so
        ``},{"id":`` only appears between two answers, and ``","prediction":`` only where a
        string is followed by the key ``prediction``: the id and the prediction of an answer,
        and nowhere else (a label ``prediction`` in a probabilities object follows a number).
        If it is not found exactly once per answer (keys in another order), each record is
        encoded alone; so is a single answer (``/v1/predict``), cheaper alone than cut.
        """
        n = len(answers)
        if n == 0:
            return []
        stamp = _datetime_json(made_at)
        if n == 1:
            return _predictions_one_by_one(answers, model, version, stamp, shadow)
        if encoded is None:
            encoded = orjson.dumps(answers)
        between = b"".join((b'","model":', orjson.dumps(model), b',"version":', orjson.dumps(version), b',"prediction":'))
        inner = encoded[len(_ANSWERS_HEAD):-2]
        moved = inner.replace(_PREDICTION_KEY, between)
        # Exactly one ``","prediction":`` per answer (counted by the growth, without another pass):
        if not encoded.startswith(_ANSWERS_HEAD) or len(moved) - len(inner) != n * (len(between) - len(_PREDICTION_KEY)):
            return _predictions_one_by_one(answers, model, version, stamp, shadow)
        pieces = moved.split(_ANSWER_SEP)
        if len(pieces) != n:  # pragma: no cover - not for answers in that key order (see above)
            return _predictions_one_by_one(answers, model, version, stamp, shadow)
        tail = b"".join((b',"made_at":', stamp, b',"shadow":true}' if shadow else b',"shadow":false}'))
        return list(zip([a["id"].encode() for a in answers], [_PREDICTION_HEAD + piece + tail for piece in pieces], strict=True))


class ModelPublished(_Event):
    """A new model version exists in the model store and the registry."""

    kind: Literal["model_published"] = "model_published"
    """What the record is: every topic's records say it."""
    app: str
    """The application (the app spec's ``name``)."""
    model: str
    """The model's name."""
    version: int
    """The version published, counting from 1 per model."""
    examples_seen: int
    """Examples the model had learned from by then."""
    metrics: dict[str, float | None]
    """Its online metrics by name at that point (such as ``accuracy``); ``null`` for one not
    defined yet (a metric of a few examples that is NaN, such as R² of one)."""
    published_at: datetime = Field(default_factory=utcnow)
    """When it was published."""

    @field_validator("metrics", mode="after")
    @classmethod
    def _undefined_is_null(cls, metrics: dict[str, float | None]) -> dict[str, float | None]:
        """JSON has no NaN: a metric not defined yet is ``None``, written ``null``.

        >>> ModelPublished(app="a", model="m", version=1, examples_seen=1, metrics={"r2": float("nan")}).metrics
        {'r2': None}
        """
        return {k: v if v is None or math.isfinite(v) else None for k, v in metrics.items()}


class DeadLettered(_Event):
    """A message a consumer could not process, kept with the reason."""

    kind: Literal["dead_lettered"] = "dead_lettered"
    """What the record is: every topic's records say it."""
    topic: str
    """The topic of the original record."""
    partition: int
    """Its partition."""
    offset: int
    """Its offset in that partition."""
    key: str | None
    """Its key, decoded as UTF-8 with replacement; null when it had none."""
    value: str
    """The original bytes, decoded as UTF-8 with replacement."""
    reason: str
    """Why it was not processed (at most 2,000 characters)."""
    consumer: str
    """Who refused it: ``trainer`` for a record no model can read, ``trainer:<model>`` when one model could not learn it."""
    at: datetime = Field(default_factory=utcnow)
    """When it was dead-lettered."""


# --------------------------------------------------------------------------- fast encoding
# Ingest writes an ``EventReceived`` per event and the predictor a ``PredictionMade`` per
# answer. ``EventReceived.records`` and ``PredictionMade.records`` assemble those records from
# parts encoded by orjson, which writes what the models write (no whitespace, the same numbers,
# strings and datetimes); ``tests/unit/test_event_encoding.py`` holds them equal to the models'
# bytes and to the JSON schemas. A field added to either model must be added there too.

_EVENT_HEAD = b'{"schema_version":1,"kind":"event_received","id":'
_PREDICTION_HEAD = b'{"schema_version":1,"kind":"prediction_made","id":'
_ANSWERS_HEAD = b'[{"id":'
_ANSWER_SEP = b'},{"id":'
_PREDICTION_KEY = b'","prediction":'
"""The end of an answer's id and its second key."""
_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


def _datetime_json(moment: datetime) -> bytes:
    """``moment`` as the models write it: orjson's form, but for what orjson writes otherwise
    (no time zone, or an offset with seconds, which orjson rounds and pydantic truncates)."""
    if moment.tzinfo is not UTC:
        offset = moment.utcoffset()
        if offset is None or offset.seconds % 60 or offset.microseconds:
            return _DATETIME.dump_json(moment)
    return orjson.dumps(moment, option=orjson.OPT_UTC_Z)


def _predictions_one_by_one(
    answers: Sequence[Mapping[str, Any]], model: str, version: int, stamp: bytes, shadow: bool,
) -> list[tuple[bytes, bytes]]:
    made_at = orjson.Fragment(stamp)
    return [
        (a["id"].encode(), orjson.dumps({
            "schema_version": 1, "kind": "prediction_made", "id": a["id"], "model": model, "version": version,
            "prediction": a["prediction"], "probabilities": a["probabilities"], "made_at": made_at, "shadow": shadow,
        }))
        for a in answers
    ]


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
