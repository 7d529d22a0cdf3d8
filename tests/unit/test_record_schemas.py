"""The topics' record formats (docs/schemas) for any Kafka client.

The schema files are generated from the event models (``streamwise_core.contracts.record_schemas``) and
may not drift from them; what the services really write validates against them; and what the
trainer's readers (``event_fields``, ``label_fields``) refuse, the schemas refuse too: a record
that validates is a record the trainer can read. The schemas promise less than the readers
take (timestamps in other forms, a missing ``schema_version``): those cases are listed here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, ValidationError

from streamwise_core.adapters.settings import Topics
from streamwise_core.contracts import record_schemas
from streamwise_core.contracts.appspec import load_app_spec
from streamwise_core.contracts.codec import ModelMeta
from streamwise_core.contracts.events import (
    DeadLettered,
    EventReceived,
    LabelReceived,
    ModelPublished,
    PredictionMade,
    event_fields,
    label_fields,
)
from streamwise_core.contracts.record_schemas import KINDS_BY_NAME, RECORD_KINDS, check_record, load_schema
from streamwise_core.contracts.schema import to_model_input
from streamwise_core.contracts.topic_config import DAY_MS, TopicRetention, topic_configs
from streamwise_core.domain.pipeline import build_model
from streamwise_devstack.fraud import FraudStream
from streamwise_ingest.validation import event_records, validate_labels
from streamwise_predictor.holder import ServedModel
from streamwise_predictor.predictions import predict_checked, read_request

from .test_event_decoding import ODD_EVENTS, dumps, event, label, with_extra
from .test_ingest_validation import features

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "docs" / "schemas"
DOC = ROOT / "docs" / "record-formats.md"
SPEC = load_app_spec(ROOT / "examples" / "fraud" / "streamwise.toml")
NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def committed(name: str) -> dict[str, Any]:
    return load_schema(SCHEMAS, name)


def valid(data: bytes, name: str) -> bool:
    """Whether the committed schema of ``name`` accepts ``data`` (JSON as the contract says)."""
    try:
        check_record(data, committed(name))
    except (ValueError, ValidationError):
        return False
    return True


def reads(read: Any, data: bytes) -> bool:
    """Whether the trainer's reader ``read`` takes ``data`` (it raises pydantic's ValidationError otherwise)."""
    try:
        read(data)
    except ValueError:  # pydantic's ValidationError is one
        return False
    return True


# --------------------------------------------------------------------------- the files are the models'


def test_the_committed_files_are_what_the_generator_writes() -> None:
    assert record_schemas.differences(SCHEMAS) == [], "run: python -m streamwise_core.contracts.record_schemas --write docs/schemas"
    current = {kind.name: kind.version for kind in RECORD_KINDS}
    for path in SCHEMAS.iterdir():
        match = re.fullmatch(r"([a-z_]+)\.v([0-9]+)\.schema\.json", path.name)
        assert match is not None and match[1] in current, f"{path.name} is no record kind's schema file"
        assert int(match[2]) <= current[match[1]], f"{path.name}: newer than its model's schema_version"


def test_the_generator_command_writes_and_checks(tmp_path: Path) -> None:
    assert record_schemas.main(["--write", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kind.file_name for kind in RECORD_KINDS)
    assert record_schemas.main(["--check", str(tmp_path)]) == 0
    path = tmp_path / KINDS_BY_NAME["event"].file_name
    path.write_text(path.read_text().replace('"const": 1', '"const": 2'))
    assert record_schemas.main(["--check", str(tmp_path)]) == 1
    (tmp_path / KINDS_BY_NAME["label"].file_name).unlink()
    assert len(record_schemas.differences(tmp_path)) == 2
    # the command as the docs give it, on the committed files
    done = subprocess.run(
        [sys.executable, "-m", "streamwise_core.contracts.record_schemas", "--check", "docs/schemas"], cwd=ROOT,
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("kind", RECORD_KINDS, ids=lambda k: k.name)
def test_each_schema_is_2020_12_and_describes_every_field(kind: record_schemas.RecordKind) -> None:
    schema = committed(kind.name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:streamwise:record:{kind.name}:v{kind.version}"
    assert schema["x-kafka-topic"] == getattr(Topics.for_app("<prefix>", "<app>"), kind.topic)
    props = schema["properties"]
    assert props.keys() == kind.model.model_fields.keys()
    assert all(p.get("description") for p in props.values()), "a field without a docstring in events.py"
    assert props["schema_version"]["const"] == kind.version == 1
    assert props["kind"]["const"] == kind.kind
    assert schema["required"][:2] == ["schema_version", "kind"]
    assert schema.get("additionalProperties", True) is True, "readers ignore unknown fields: producers may add some"


# --------------------------------------------------------------------------- what the services write validates


def _events() -> list[bytes]:
    stream = FraudStream(seed=3, drift_at=10**9).take(50)
    body = json.dumps([{"id": g.id, "features": g.features, "label": g.label} for g in stream]).encode()
    _, fast = event_records(SPEC, body, "application/json", max_items=100, now=NOW)  # ingest's one pass
    odd = json.dumps([{"features": features(), "timestamp": "2026-02-28T08:30:00.5+02:00"}]).encode()  # ingest makes the id
    _, no_id = event_records(SPEC, odd, "application/json", max_items=100, now=NOW)
    items = [{"id": "e.2", "features": features(hour=3.0, amount=10**20), "label": False}, {"id": "e:3", "features": features()}]
    _, exact = event_records(SPEC, json.dumps(items).encode(), "application/json", max_items=100, now=NOW)  # read again exactly
    stamps = [None, datetime(2026, 2, 28, 8, 30, tzinfo=timezone(timedelta(hours=2, seconds=30)))]  # an offset orjson would round
    encoded = EventReceived.records([(f"r-{k}", features(), True, t) for k, t in enumerate(stamps)], NOW)  # the encoder alone
    tz = timezone(timedelta(hours=-5, minutes=-30))
    made = [
        EventReceived(id="m-1", features=features(), label=None, timestamp=NOW.astimezone(tz)).to_bytes(),
        EventReceived(id="m-2", features={}, label="class-a", timestamp=NOW.replace(microsecond=0)).to_bytes(),
    ]
    return [v for _, v in fast + no_id + exact + encoded] + made


def _labels() -> list[bytes]:
    items = [{"id": "e-1", "label": True}, {"id": "e-2", "label": False, "timestamp": "2026-02-28T08:30:00Z"}]
    return [x.to_bytes() for x in validate_labels(SPEC, items, NOW)] + [
        LabelReceived(id="e-3", label=True, timestamp=NOW, received_at=NOW, source="webapp:alice").to_bytes(),  # feedback
    ]


def _predictions() -> list[bytes]:
    model = build_model(SPEC)
    for g in FraudStream(seed=9, drift_at=10**9).take(100):
        model.learn_one(to_model_input(SPEC, g.features), g.label)
    served = ServedModel(ModelMeta(app="fraud", model="fraud-lr", version=7, task="binary", examples_seen=100), model)
    body = {"instances": [{"id": "p-1", "features": features()}, {"features": features(merchant="crypto")}]}
    answers = predict_checked(SPEC, served, read_request(SPEC, json.dumps(body).encode(), 10))
    records = PredictionMade.records(answers, "fraud-lr", 7, NOW)  # cut from one encoding
    records += PredictionMade.records(answers[:1], "fraud-lr", 7, NOW)  # one answer, encoded alone
    records += PredictionMade.records(answers, "fraud-tree", 2, NOW, shadow=True)  # a challenger's, in the background
    records += PredictionMade.records([{"id": "r", "prediction": 2.5, "probabilities": None}], "reg", 1, NOW)
    return [v for _, v in records]


def _models() -> list[bytes]:
    return [
        ModelPublished(app="fraud", model="fraud-lr", version=3, examples_seen=3000,
                       metrics={"accuracy": 0.93, "log_loss": 0.2, "roc_auc": 0.97}).to_bytes(),
        ModelPublished(app="fraud", model="fraud-batch", version=1, examples_seen=0, metrics={}, published_at=NOW).to_bytes(),
    ]


def _dead_letters() -> list[bytes]:
    # As the trainer's runtime writes them: key and value decoded with replacement, the reason cut.
    return [
        DeadLettered(topic="streamwise.fraud.events", partition=0, offset=41, key=b"k\xff".decode("utf-8", "replace"),
                     value=b"\x00\xffnot JSON {".decode("utf-8", "replace"), reason="undecodable: [...]", consumer="trainer").to_bytes(),
        DeadLettered(topic="streamwise.fraud.labels", partition=2, offset=0, key=None, value="", reason="empty message",
                     consumer="trainer:fraud-lr", at=NOW).to_bytes(),
    ]


WRITTEN = {"event": _events, "label": _labels, "prediction": _predictions, "model_published": _models, "dead_letter": _dead_letters}


@pytest.mark.parametrize("name", WRITTEN)
def test_what_the_services_write_validates(name: str) -> None:
    records = WRITTEN[name]()
    assert len(records) >= 2
    validator = record_schemas.validator(committed(name))
    for data in records:
        value = record_schemas.read_json(data)
        assert list(validator.iter_errors(value)) == [], data
        assert value["kind"] == KINDS_BY_NAME[name].kind


def test_a_record_of_one_kind_is_no_record_of_another() -> None:
    for name, make in WRITTEN.items():
        for other in WRITTEN:
            if other != name:
                assert not valid(make()[0], other), (name, other)


# --------------------------------------------------------------------------- what the readers refuse, the schemas refuse

LABELS_SEEN: list[bytes] = [
    *(dumps(label(**u)) for u in [
        {}, {"label": False}, {"label": "b"}, {"label": 2.5}, {"label": 1}, {"source": "feedback"},
        {"timestamp": "2026-03-01T12:00:00+01:00"}, {"label": None}, {"label": 10**20}, {"label": [1]}, {"label": {"a": True}},
        {"source": None}, {"source": 5}, {"id": 3}, {"id": None}, {"kind": "event_received"}, {"kind": None},
        {"schema_version": 2}, {"schema_version": "1"}, {"schema_version": None}, {"timestamp": "2026-03-01T12:00:00"},
        {"timestamp": "2026-02-30T12:00:00Z"}, {"timestamp": "2026-03-01T12:00:00.123456789Z"}, {"timestamp": None},
        {"timestamp": 1700000000}, {"received_at": 0}, {"received_at": "yesterday"}, {"features": features()}, {"extra": [1, {}]},
    ]),
    *(dumps({k: v for k, v in label().items() if k != missing})
      for missing in ("schema_version", "kind", "id", "label", "timestamp", "received_at", "source")),
    with_extra(label(), 199), with_extra(label(), 200), with_extra(label(), 201), with_extra(label(), 250),
    json.dumps(label(label=float("nan"))).encode(),
    b"", b"{}", b"[]", b"null", b"\xff", dumps(event()), b"\xef\xbb\xbf" + dumps(label()), dumps(label()) + b"x",
]
EVENTS_SEEN: list[bytes] = [
    *ODD_EVENTS, with_extra(event(), 199), with_extra(event(), 200), with_extra(event(), 201),
    dumps(event(features={"a": {"b": 1}})), dumps(event(label=None)), dumps(event(features={}, id="")),
]


@pytest.mark.parametrize("data", EVENTS_SEEN)
def test_an_event_the_schema_accepts_is_one_the_trainer_reads(data: bytes) -> None:
    """(So what the trainer's reader refuses, the schema refuses.)"""
    if valid(data, "event"):
        assert reads(event_fields, data)
    else:
        assert not reads(event_fields, data) or data in PROMISED_LESS


@pytest.mark.parametrize("data", LABELS_SEEN)
def test_a_label_the_schema_accepts_is_one_the_trainer_reads(data: bytes) -> None:
    if valid(data, "label"):
        assert reads(label_fields, data)
    else:
        assert not reads(label_fields, data) or data in PROMISED_LESS


PROMISED_LESS: set[bytes] = {
    *(dumps(event(**u)) for u in [
        # Timestamps in other forms than RFC 3339 with an offset and an upper-case T.
        {"timestamp": "2026-03-01T12:00:00"}, {"timestamp": "2026-03-01"}, {"timestamp": "2026-03-01 12:00:00Z"},
        {"timestamp": "2026-03-01t12:00:00z"}, {"timestamp": 1700000000},
        {"timestamp": 1.7e9},
        # The envelope: a version the reader takes as 1 (lax, as pydantic reads a Literal[1]), or none.
        {"schema_version": True},
    ]),
    *(dumps({k: v for k, v in event().items() if k != missing}) for missing in ("schema_version", "kind")),
    *(dumps({k: v for k, v in label().items() if k != missing}) for missing in ("schema_version", "kind")),
    *(dumps(label(**u)) for u in [
        {"timestamp": "2026-03-01T12:00:00"}, {"timestamp": 1700000000},
        {"received_at": 0},
    ]),
    # NaN and Infinity are not JSON, though Python's reader takes them.
    json.dumps(event(features=features(amount=float("nan")))).encode(),
    json.dumps(event(features=features(amount=float("inf")))).encode(),
    json.dumps(label(label=float("nan"))).encode(),
}
"""Records the trainer reads that the schemas refuse: the contract promises less than the
readers take. Each is listed so that a schema that got stricter by mistake is noticed."""


def test_what_the_schemas_promise_less_than_the_readers_is_listed() -> None:
    for data in PROMISED_LESS:
        read, name = (label_fields, "label") if b'"label_received"' in data or b'"source"' in data else (event_fields, "event")
        assert reads(read, data), data
        assert not valid(data, name), data


# --------------------------------------------------------------------------- any valid record is read

_JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
_JSON = st.recursive(_JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)
_TIMESTAMPS = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones()).map(
        lambda d: d.isoformat().replace("+00:00", "Z") if d.utcoffset() == timedelta(0) else d.isoformat()),
    st.from_regex(record_schemas.TIMESTAMP_PATTERN, fullmatch=True),
)
_LABELS = st.one_of(st.booleans(), st.text(max_size=8), st.integers(), st.floats(allow_nan=False, allow_infinity=False))
_FEATURES = st.dictionaries(st.text(max_size=8), st.one_of(st.booleans(), st.integers(), st.text(max_size=8),
                                                           st.floats(allow_nan=False, allow_infinity=False)), max_size=6)


def _record(required: dict[str, Any], optional: dict[str, Any], extra: dict[str, Any]) -> bytes:
    return json.dumps({**extra, **optional, **required}).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    record_id=st.text(max_size=12), feature_values=_FEATURES, label_value=st.one_of(st.none(), _LABELS),
    timestamp=_TIMESTAMPS, received=st.one_of(st.none(), _TIMESTAMPS), extra=st.dictionaries(st.text(max_size=6), _JSON, max_size=2),
)
def test_every_event_the_schema_accepts_is_read(
    record_id: str, feature_values: dict[str, Any], label_value: Any, timestamp: str, received: str | None, extra: dict[str, Any],
) -> None:
    optional = {"label": label_value, **({"received_at": received} if received else {})}
    data = _record({"schema_version": 1, "kind": "event_received", "id": record_id, "features": feature_values, "timestamp": timestamp},
                   optional, extra)
    if valid(data, "event"):
        assert reads(event_fields, data), data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    record_id=st.text(max_size=12), label_value=_LABELS, timestamp=_TIMESTAMPS, source=st.one_of(st.none(), st.text(max_size=8)),
    extra=st.dictionaries(st.text(max_size=6), _JSON, max_size=2),
)
def test_every_label_the_schema_accepts_is_read(
    record_id: str, label_value: Any, timestamp: str, source: str | None, extra: dict[str, Any],
) -> None:
    data = _record({"schema_version": 1, "kind": "label_received", "id": record_id, "label": label_value, "timestamp": timestamp},
                   {"source": source} if source is not None else {}, extra)
    if valid(data, "label"):
        assert reads(label_fields, data), data


# --------------------------------------------------------------------------- the documentation


def test_the_documented_examples_validate_and_name_every_file_and_topic() -> None:
    text = DOC.read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `<prefix>.<app>.")}
    retention = TopicRetention()
    for kind in RECORD_KINDS:
        row = rows[f"`{kind.topic_pattern}`"]
        assert f"(schemas/{kind.file_name})" in row, row
        if kind.topic == "models":
            assert topic_configs(Topics.for_app("p", "a"), retention)["p.a.models"]["cleanup.policy"] == "compact"
            assert "compacted" in row, row
        else:
            assert f"| {getattr(retention, f'{kind.topic}_ms') / DAY_MS:g} days |" in row, row
    examples = re.findall(r"```json\n(.*?)```", text, flags=re.S)
    seen = set()
    for example in examples:
        value = json.loads(example)
        [name] = [k.name for k in RECORD_KINDS if k.kind == value["kind"]]
        assert valid(example.encode(), name), example
        seen.add(name)
    assert seen == set(KINDS_BY_NAME), "an example record of each kind"


def test_a_metric_not_defined_yet_is_null_on_the_models_topic_and_reads_back() -> None:
    record = ModelPublished(app="fraud", model="reg", version=1, examples_seen=1, metrics={"r2": float("nan"), "mae": 0.5})
    data = record.to_bytes()
    assert b'"r2":null' in data
    check_record(data, committed("model_published"))
    assert ModelPublished.from_bytes(data).metrics == {"r2": None, "mae": 0.5}
