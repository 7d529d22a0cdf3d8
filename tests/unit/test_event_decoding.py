"""The trainer's fast event decoding gives exactly what the event models give.

``event_fields`` / ``label_fields`` read the plain case (what ingest writes) with orjson and
hand anything else to ``EventReceived.from_bytes`` / ``LabelReceived.from_bytes``. These tests
hold the two ways equal: the same values of the same types for what is accepted, the same
``ValidationError`` (hence the same dead-letter reason) for what is not, and the plain case
really taking the fast way.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from streamwise_core.adapters.settings import Topics
from streamwise_core.contracts import events
from streamwise_core.contracts.appspec import load_app_spec
from streamwise_core.contracts.events import EventReceived, LabelReceived, event_fields, label_fields
from streamwise_devstack.fraud import FraudStream
from streamwise_ingest.validation import event_records
from streamwise_trainer.learning import Record, Trainer

from .test_ingest_validation import features

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_app_spec(ROOT / "examples" / "fraud" / "streamwise.toml")
NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
TS = "2026-03-01T12:00:00.123456Z"


def event(**update: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema_version": 1, "kind": "event_received", "id": "e-1", "features": features(), "label": True,
        "timestamp": TS, "received_at": TS,
    }
    base.update(update)
    return base


def label(**update: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema_version": 1, "kind": "label_received", "id": "e-1", "label": True,
        "timestamp": TS, "received_at": TS, "source": "api",
    }
    base.update(update)
    return base


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def deep(levels: int) -> Any:
    value: Any = []
    for _ in range(levels):
        value = [value]
    return value


def with_extra(record: dict[str, Any], levels: int) -> bytes:
    """``record`` with an extra field nested ``levels`` deep (past the model's JSON depth limit)."""
    return orjson.dumps(record)[:-1] + b',"extra":' + b"[" * levels + b"]" * levels + b"}"


def model_event(data: bytes) -> tuple[Any, ...]:
    e = EventReceived.from_bytes(data)
    return e.id, e.features, e.label


def model_label(data: bytes) -> tuple[Any, ...]:
    e = LabelReceived.from_bytes(data)
    return e.id, e.label


def outcome(decode: Any, data: bytes) -> str:
    """What ``decode`` gives, with the types of every value (``1``, ``1.0`` and ``True`` differ)."""
    try:
        return repr(("ok", decode(data)))
    except ValidationError as exc:
        return repr(("refused", exc.errors(include_url=False)))


def same_event(data: bytes) -> None:
    assert outcome(event_fields, data) == outcome(model_event, data)


def same_label(data: bytes) -> None:
    assert outcome(label_fields, data) == outcome(model_label, data)


class _NoModel:
    @staticmethod
    def from_bytes(data: bytes) -> Any:
        raise AssertionError(f"the model was asked to read a plain record: {data!r}")


@pytest.fixture
def fast_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoders may not fall back to the models."""
    monkeypatch.setattr(events, "EventReceived", _NoModel)
    monkeypatch.setattr(events, "LabelReceived", _NoModel)


def test_what_ingest_and_the_models_write_takes_the_fast_way() -> None:
    stream = FraudStream(seed=5, drift_at=100).take(300)
    written = [EventReceived(id=g.id, features=g.features, label=g.label, timestamp=NOW).to_bytes() for g in stream]
    written += [EventReceived(id="x", features=features(), timestamp=NOW.astimezone(timezone(timedelta(hours=-5, minutes=-30))),
                              received_at=datetime(2026, 3, 1, tzinfo=UTC)).to_bytes()]
    items = [{"id": g.id, "features": g.features, "label": g.label} for g in stream]
    items += [{"id": "t-1", "features": features(), "timestamp": "2026-02-28T08:30:00.5+02:00", "label": None}]
    ingested = event_records(SPEC, json.dumps(items).encode(), "application/json", max_items=1000, now=NOW)
    labels = [LabelReceived(id=g.id, label=bool(g.label), timestamp=NOW, source=s).to_bytes() for g, s in zip(stream, ("api", "feedback"), strict=False)]
    expected = ([model_event(b) for b in written + [v for _, v in ingested[1]]], [model_label(b) for b in labels])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(events, "EventReceived", _NoModel)
        patch.setattr(events, "LabelReceived", _NoModel)
        fast = ([event_fields(b) for b in written + [v for _, v in ingested[1]]], [label_fields(b) for b in labels])
    assert repr(fast) == repr(expected)


@pytest.mark.parametrize("update", [
    {}, {"label": None}, {"label": False}, {"label": "yes"}, {"label": 0.25}, {"label": -1e18},
    {"timestamp": "2026-03-01T12:00:00Z"}, {"timestamp": "2026-03-01T12:00:00.5-23:59"},
    {"received_at": "0001-01-01T00:00:00+00:00"}, {"timestamp": "9999-12-31T23:59:59.999999Z"},
    {"features": features(amount=7, hour=3.0, merchant="zé\u2028\x00")}, {"features": {}},
    {"features": features(amount=18446744073709551615, hour=-9223372036854775808)},
    {"features": features(amount=9.2e18)}, {"id": ""}, {"id": "has space\n"},
])
def test_plain_events_are_read_without_the_model(update: dict[str, Any], fast_only: None) -> None:
    data = dumps(event(**update))
    assert outcome(event_fields, data) == outcome(model_event, data)  # model_event: the real model


ODD_EVENTS: list[bytes] = [
    *(dumps(event(**u)) for u in [
        # labels the model converts or refuses
        {"label": 1}, {"label": 0}, {"label": 10**20}, {"label": 1e19}, {"label": [True]}, {"label": {"v": 1}},
        # timestamps in other forms, or invalid
        {"timestamp": "2026-03-01T12:00:00"}, {"timestamp": "2026-03-01"}, {"timestamp": "2026-03-01 12:00:00Z"},
        {"timestamp": "2026-03-01t12:00:00z"}, {"timestamp": "2026-03-01T12:00:00.1234567Z"},
        {"timestamp": "2026-03-01T24:00:00Z"}, {"timestamp": "2026-03-01T23:59:60Z"}, {"timestamp": "2024-02-30T00:00:00Z"},
        {"timestamp": "0000-01-01T00:00:00Z"}, {"timestamp": "2026-01-01T00:00:00+24:00"}, {"timestamp": "2026-01-01T00:00:00+05:60"},
        {"timestamp": "٢٠٢٦-03-01T12:00:00Z"}, {"timestamp": "20260301T120000Z"}, {"timestamp": 1700000000},
        {"timestamp": 1.7e9}, {"timestamp": None}, {"timestamp": ["2026-03-01T12:00:00Z"]}, {"received_at": {"a": 1}},
        {"received_at": None}, {"timestamp": ""},
        # features the model converts or refuses
        {"features": features(amount=None)}, {"features": features(amount=[1])}, {"features": features(amount={"a": 1})},
        {"features": [1, 2]}, {"features": None}, {"features": "x"}, {"features": {"a": deep(20)}},
        # the envelope
        {"id": 5}, {"id": None}, {"kind": "label_received"}, {"kind": None}, {"schema_version": 2},
        {"schema_version": True}, {"schema_version": 1.0}, {"schema_version": "1"}, {"schema_version": 10**30},
        {"extra": 1},
    ]),
    *(dumps({k: v for k, v in event().items() if k != missing})
      for missing in ("schema_version", "kind", "id", "features", "label", "timestamp", "received_at")),
    json.dumps(event(features=features(amount=10**20))).encode(),  # orjson reads a float, the model an int
    json.dumps(event(features=features(amount=-(2**63) - 1))).encode(),
    json.dumps(event(features=features(amount=float("nan")))).encode(),
    json.dumps(event(features=features(amount=float("inf")))).encode(),
    b'{"schema_version":1,"kind":"event_received","id":"a","features":{"amount":1e400},"timestamp":"'
    + TS.encode() + b'","received_at":"' + TS.encode() + b'"}',
    b'{"schema_version":1,"kind":"event_received","id":"a","id":"b","features":{"x":1,"x":2.5},"timestamp":"'
    + TS.encode() + b'","received_at":"' + TS.encode() + b'"}',
    b'{"schema_version":1,"kind":"event_received","id":"\\ud800","features":{},"timestamp":"' + TS.encode() + b'","received_at":"' + TS.encode() + b'"}',
    b'{"schema_version":1,"kind":"event_received","id":"\xff","features":{},"timestamp":"' + TS.encode() + b'","received_at":"' + TS.encode() + b'"}',
    b"\xef\xbb\xbf" + dumps(event()), b" " + dumps(event()) + b"\n", dumps(event()) + b"x",
    with_extra(event(), 250), with_extra(event(), 900),
    b"", b"null", b"[]", b"5", b'"event"', b"{", b"\x00", dumps([event()]),
    dumps(label()),
]


@pytest.mark.parametrize("data", ODD_EVENTS)
def test_odd_events_get_the_models_verdict(data: bytes) -> None:
    same_event(data)


@pytest.mark.parametrize("data", [
    *(dumps(label(**u)) for u in [
        {}, {"label": False}, {"label": "b"}, {"label": 2.5}, {"source": "feedback"}, {"timestamp": "2026-03-01T12:00:00+01:00"},
        {"label": None}, {"label": 1}, {"label": 10**20}, {"label": [1]}, {"source": None}, {"source": 5}, {"id": 3},
        {"kind": "event_received"}, {"schema_version": 2}, {"timestamp": "2026-03-01T12:00:00"}, {"timestamp": "2026-02-30T12:00:00Z"},
        {"received_at": 0}, {"features": features()},
    ]),
    *(dumps({k: v for k, v in label().items() if k != missing})
      for missing in ("schema_version", "kind", "id", "label", "timestamp", "received_at", "source")),
    with_extra(label(), 250), b"", b"{}", b"[]", dumps(event()), b"\xef\xbb\xbf" + dumps(label()),
])
def test_labels_get_the_models_verdict(data: bytes) -> None:
    same_label(data)


# --------------------------------------------------------------------------- properties

JSON_NUMBER = st.from_regex(r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?", fullmatch=True)
TIMESTAMP = st.one_of(
    st.from_regex(events._TIMESTAMP, fullmatch=True),  # the plain form, with any digits (invalid dates too)
    st.datetimes(timezones=st.timezones() | st.just(UTC)).map(lambda d: d.isoformat()),
    st.datetimes(timezones=st.just(UTC)).map(lambda d: EventReceived(id="", features={}, timestamp=d).model_dump(mode="json")["timestamp"]),
    st.text(max_size=30),
)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=6)


def to_json(value: Any, numbers: list[str]) -> str:
    """JSON text of ``value``; each float is written as the next of ``numbers`` when given, so
    that numbers orjson and the model may read differently come up."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v, numbers)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v, numbers) for v in value) + "]"
    if isinstance(value, float) and numbers:
        return numbers.pop()
    return json.dumps(value, ensure_ascii=False)


@st.composite
def event_like(draw: st.DrawFn, kind: str) -> bytes:
    base = event() if kind == "event_received" else label()
    raw: dict[str, Any] = {}
    for key, value in base.items():
        choice = draw(st.sampled_from(["keep"] * 10 + ["drop", "other"]))
        if choice == "keep":
            raw[key] = value
        elif choice == "other":
            raw[key] = draw(TIMESTAMP if key in ("timestamp", "received_at") else VALUE)
    if "features" in raw and draw(st.booleans()):
        raw["features"] = draw(st.dictionaries(st.text(max_size=4), SCALAR, max_size=6) | st.dictionaries(st.text(max_size=4), VALUE, max_size=6))
    if draw(st.integers(0, 4)) == 0:
        raw[draw(st.text(max_size=4))] = draw(VALUE)
    numbers = draw(st.lists(JSON_NUMBER, max_size=4))
    text = to_json(raw, numbers)
    return text.encode("utf-8", errors=draw(st.sampled_from(["surrogatepass", "replace"])))


@settings(max_examples=400, deadline=None)
@given(event_like("event_received"))
def test_any_event_gets_the_models_verdict(data: bytes) -> None:
    same_event(data)


@settings(max_examples=300, deadline=None)
@given(event_like("label_received"))
def test_any_label_gets_the_models_verdict(data: bytes) -> None:
    same_label(data)


@settings(max_examples=200, deadline=None)
@given(TIMESTAMP, TIMESTAMP)
def test_timestamps_are_read_fast_only_when_the_model_reads_them(timestamp: str, received_at: str) -> None:
    same_event(dumps(event(timestamp=timestamp, received_at=received_at)))
    same_label(dumps(label(timestamp=timestamp, received_at=received_at)))


@settings(max_examples=200, deadline=None)
@given(st.lists(JSON_NUMBER, min_size=2, max_size=2))
def test_numbers_are_read_as_the_model_reads_them(numbers: list[str]) -> None:
    body = event(features=features(amount=0.5), label=0.5)
    same_event(to_json(body, list(numbers)).encode())
    same_label(to_json(label(label=0.5), list(numbers)).encode())


# --------------------------------------------------------------------------- the trainer


def test_the_trainer_dead_letters_poison_with_the_models_reasons() -> None:
    topics = Topics.for_app("t", "fraud")
    trainer = Trainer(SPEC, topics)
    poison = [
        dumps(event(timestamp="2026-02-30T00:00:00Z")), dumps(event(label=[1])), b"{",
        dumps(event(features=features(amount=None))), dumps(event(features=features(merchant="casino"))),
        dumps(event(label="maybe")), dumps(event(id=7)),
    ]
    for offset, data in enumerate(poison):
        rejected = trainer.handle(Record(topics.events, 0, offset, None, data))
        assert rejected is not None
        try:
            e = EventReceived.from_bytes(data)
        except ValidationError as exc:
            assert rejected.reason == f"undecodable: {exc.errors(include_url=False)[:3]}"
        else:
            assert rejected.reason.startswith(("features do not match the schema: ", "label: ")), (e, rejected.reason)
    rejected = trainer.handle(Record(topics.labels, 0, 0, None, dumps(label(label=None))))
    assert rejected is not None and rejected.reason.startswith("undecodable: ")
    assert trainer.handle(Record(topics.events, 0, 100, None, dumps(event(label=None)))) is None
    assert trainer.handle(Record(topics.labels, 0, 1, None, dumps(label(label=False)))) is None
    assert trainer.examples_seen == 1
