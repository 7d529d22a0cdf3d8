"""Ingest: request bodies into items, items into validated event records and labels (all or nothing)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streamwise_core.contracts.appspec import AppSpec, load_app_spec, parse_app_spec
from streamwise_core.contracts.errors import ValidationFailed
from streamwise_core.contracts.events import EventReceived, LabelReceived
from streamwise_devstack.fraud import FraudStream
from streamwise_ingest.parsing import MAX_DEPTH, parse_items
from streamwise_ingest.validation import event_records, new_ids, validate_labels

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
JSON = "application/json"
NDJSON = "application/x-ndjson"


@pytest.fixture(scope="module")
def spec() -> AppSpec:
    return load_app_spec(ROOT / "examples" / "fraud" / "streamwise.toml")


def features(**update: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "amount": 12.5, "hour": 14, "distance_km": 3.2, "is_foreign": False,
        "card_present": True, "merchant": "grocery", "txn_last_hour": 0,
    }
    base.update(update)
    return base


def failure(call: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    with pytest.raises(ValidationFailed) as info:
        call(*args, **kwargs)
    return info.value.errors


def ingested(spec: AppSpec, items: list[Any], now: datetime = NOW) -> list[EventReceived]:
    """The events ingest writes for ``items`` sent as a JSON list, as their model reads them back."""
    ids, records = event_records(spec, json.dumps(items).encode(), JSON, max_items=1000, now=now)
    assert [key.decode() for key, _ in records] == ids
    return [EventReceived.from_bytes(value) for _, value in records]


# --- parse_items ---------------------------------------------------------------------------


def test_one_object_is_one_item() -> None:
    assert parse_items(b'{"a": 1}', JSON, max_items=10) == [{"a": 1}]


def test_a_list_is_its_items() -> None:
    assert parse_items(b'[{"a": 1}, {"a": 2}, 3]', JSON, max_items=10) == [{"a": 1}, {"a": 2}, 3]


@pytest.mark.parametrize(
    "content_type",
    [NDJSON, "application/x-ndjson; charset=utf-8", "APPLICATION/NDJSON", "application/jsonl", "application/json-lines"],
)
def test_ndjson_is_one_item_per_line(content_type: str) -> None:
    body = b'{"a": 1}\n\n  \r\n{"a": 2}\r\n[3]\n'
    assert parse_items(body, content_type, max_items=10) == [{"a": 1}, {"a": 2}, [3]]


def test_ndjson_body_sent_as_json_is_invalid() -> None:
    (error,) = failure(parse_items, b'{"a": 1}\n{"a": 2}\n', JSON, max_items=10)
    assert error["loc"] == ["body"]
    assert error["msg"].startswith("invalid JSON")


def test_broken_ndjson_line_is_named_by_its_line_number() -> None:
    body = b'{"a": 1}\n\n{"a": \n{"a": 3}\n'
    errors = failure(parse_items, body, NDJSON, max_items=10)
    assert errors == [{"loc": ["body", 2], "msg": errors[0]["msg"]}]
    assert errors[0]["msg"].startswith("invalid JSON")


@pytest.mark.parametrize("body", [b'{"a": ', b"{'a': 1}", b'{"a": 1,}', b"[1, 2", b"nope", b'{"a": 1} x'])
def test_broken_json_is_refused(body: bytes) -> None:
    (error,) = failure(parse_items, body, JSON, max_items=10)
    assert error["loc"] == ["body"] and error["msg"].startswith("invalid JSON")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("content_type", [JSON, NDJSON])
def test_non_standard_constants_are_refused(constant: str, content_type: str) -> None:
    body = f'{{"features": {{"amount": {constant}}}}}'.encode()
    (error,) = failure(parse_items, body, content_type, max_items=10)
    assert constant in error["msg"]
    assert error["loc"][0] == "body"


def test_invalid_utf8_is_refused_with_the_byte_offset() -> None:
    errors = failure(parse_items, b'{"a": "\xff"}', JSON, max_items=10)
    assert errors == [{"loc": ["body"], "msg": "body is not UTF-8 (byte 7)"}]


@pytest.mark.parametrize(("body", "content_type"), [(b"", JSON), (b"   ", JSON)])
def test_empty_json_body_is_refused(body: bytes, content_type: str) -> None:
    (error,) = failure(parse_items, body, content_type, max_items=10)
    assert error["loc"] == ["body"]


@pytest.mark.parametrize(("body", "content_type"), [(b"", NDJSON), (b"\n\n \n", NDJSON), (b"[]", JSON)])
def test_no_items_is_refused(body: bytes, content_type: str) -> None:
    assert failure(parse_items, body, content_type, max_items=10) == [{"loc": ["body"], "msg": "no items in the body"}]


def test_too_many_items_is_refused() -> None:
    three = json.dumps([{"n": i} for i in range(3)]).encode()
    four = json.dumps([{"n": i} for i in range(4)]).encode()
    assert len(parse_items(three, JSON, max_items=3)) == 3
    assert failure(parse_items, four, JSON, max_items=3) == [{"loc": ["body"], "msg": "at most 3 items per request"}]
    ndjson = b"\n".join(json.dumps({"n": i}).encode() for i in range(4))
    assert failure(parse_items, ndjson, NDJSON, max_items=3)[0]["msg"] == "at most 3 items per request"


def nested(levels: int) -> bytes:
    return ("[" * levels + "1" + "]" * levels).encode()


def test_nesting_up_to_the_limit_is_accepted() -> None:
    items = parse_items(nested(MAX_DEPTH), JSON, max_items=10)
    assert len(items) == 1


def test_too_deep_nesting_is_refused() -> None:
    assert MAX_DEPTH == 32
    errors = failure(parse_items, nested(MAX_DEPTH + 1), JSON, max_items=10)
    assert errors == [{"loc": ["body"], "msg": "JSON nested deeper than 32 levels"}]
    deep_object = ('{"a":' * 40 + "1" + "}" * 40).encode()
    assert failure(parse_items, deep_object, NDJSON, max_items=10)[0]["loc"] == ["body", 0]


def test_pathologically_deep_nesting_is_refused_without_crashing() -> None:
    errors = failure(parse_items, nested(200_000), JSON, max_items=10)
    assert errors[0]["loc"] == ["body"]
    assert errors[0]["msg"] == "JSON nested too deeply"


def test_ndjson_line_separator_inside_a_string_is_not_a_line_break() -> None:
    body = '{"merchant": "a\u2028b"}\n{"merchant": "c\u0085d"}\n'.encode()
    assert parse_items(body, NDJSON, max_items=10) == [{"merchant": "a\u2028b"}, {"merchant": "c\u0085d"}]


# --- event_records -------------------------------------------------------------------------


def test_valid_events_become_event_received(spec: AppSpec) -> None:
    ts = "2026-02-28T08:30:00Z"
    events = ingested(
        spec,
        [{"id": "tx-1", "features": features(), "label": True, "timestamp": ts}, {"id": "tx-2", "features": features(hour=3.0)}],
        now=NOW,
    )
    assert [type(e) for e in events] == [EventReceived, EventReceived]
    first, second = events
    assert first.id == "tx-1" and first.label is True
    assert first.features == features()
    assert first.timestamp == datetime(2026, 2, 28, 8, 30, tzinfo=UTC)
    assert first.received_at == NOW
    assert second.label is None
    assert second.timestamp == NOW
    # The event survives its own wire format.
    assert EventReceived.from_bytes(first.to_bytes()) == first


def test_fraud_stream_events_all_validate(spec: AppSpec) -> None:
    generated = FraudStream(seed=11, drift_at=100).take(200)
    items = [{"id": g.id, "features": g.features, "label": g.label} for g in generated]
    events = ingested(spec, items, now=NOW)
    assert [(e.id, e.label) for e in events] == [(g.id, g.label) for g in generated]


def test_missing_ids_are_generated_and_unique(spec: AppSpec) -> None:
    events = ingested(spec, [{"features": features()} for _ in range(100)], now=NOW)
    ids = [e.id for e in events]
    assert len(set(ids)) == 100
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    again = ingested(spec, [{"features": features()}], now=NOW)
    assert again[0].id not in ids


def test_error_entries_name_index_id_and_field(spec: AppSpec) -> None:
    items = [
        {"id": "ok-0", "features": features()},
        {"id": "bad-1", "features": features(amount="12")},
        {"features": features(merchant="casino")},
        {"id": "bad-3", "features": features(), "label": "yes"},
    ]
    errors = failure(ingested, spec, items, now=NOW)
    assert errors == [
        {"index": 1, "id": "bad-1", "loc": ["features", "amount"], "msg": "expected a number, got str"},
        {"index": 2, "id": None, "loc": ["features", "merchant"], "msg": errors[1]["msg"]},
        {"index": 3, "id": "bad-3", "loc": ["label"], "msg": "expected true or false"},
    ]
    assert "unknown value 'casino'" in errors[1]["msg"]


def test_missing_and_unknown_features_are_named(spec: AppSpec) -> None:
    f = features(colour="red")
    del f["hour"]
    errors = failure(ingested, spec, [{"id": "e", "features": f}], now=NOW)
    assert [(e["loc"], e["msg"]) for e in errors] == [
        (["features", "colour"], "unknown feature"),
        (["features", "hour"], "missing required feature"),
    ]


def test_all_or_nothing(spec: AppSpec) -> None:
    items = [{"id": f"e{i}", "features": features()} for i in range(10)]
    assert len(ingested(spec, items, now=NOW)) == 10
    items[6]["features"]["txn_last_hour"] = 1.5
    result = None
    with pytest.raises(ValidationFailed) as info:
        result = ingested(spec, items, now=NOW)
    assert result is None
    assert info.value.errors == [
        {"index": 6, "id": "e6", "loc": ["features", "txn_last_hour"], "msg": "expected an integer, got float"}
    ]
    assert str(info.value) == "1 validation error(s)"
    assert info.value.retriable is False


def test_duplicate_ids_in_one_request(spec: AppSpec) -> None:
    items = [{"id": i, "features": features()} for i in ["a", "b", "a", "c", "a"]]
    errors = failure(ingested, spec, items, now=NOW)
    assert errors == [
        {"index": 2, "id": "a", "loc": ["id"], "msg": "duplicate id in this request"},
        {"index": 4, "id": "a", "loc": ["id"], "msg": "duplicate id in this request"},
    ]


@pytest.mark.parametrize(
    ("timestamp", "msg"),
    [
        ("2026-02-28T12:00:00", "needs a time zone"),
        ("1999-12-31T23:59:59Z", "outside 2000-01-01"),
        ("1970-01-01T00:00:00+00:00", "outside 2000-01-01"),
        ((NOW + timedelta(days=1, seconds=1)).isoformat(), "outside 2000-01-01"),
        ("2200-01-01T00:00:00Z", "outside 2000-01-01"),
    ],
)
def test_bad_timestamps_are_refused(spec: AppSpec, timestamp: str, msg: str) -> None:
    (error,) = failure(ingested, spec, [{"id": "t", "features": features(), "timestamp": timestamp}], now=NOW)
    assert (error["index"], error["id"], error["loc"]) == (0, "t", ["timestamp"])
    assert msg in error["msg"]


@pytest.mark.parametrize(
    "timestamp",
    ["2000-01-01T00:00:00Z", (NOW + timedelta(days=1)).isoformat(), "2026-03-01T14:00:00+02:00"],
)
def test_timestamps_at_the_bounds_and_with_offsets_are_accepted(spec: AppSpec, timestamp: str) -> None:
    (event,) = ingested(spec, [{"features": features(), "timestamp": timestamp}], now=NOW)
    assert event.timestamp == datetime.fromisoformat(timestamp.replace("Z", "+00:00"))


def test_offset_timestamp_keeps_the_instant(spec: AppSpec) -> None:
    (event,) = ingested(spec, [{"features": features(), "timestamp": "2026-03-01T14:00:00+02:00"}], now=NOW)
    assert event.timestamp.utcoffset() == timedelta(hours=2)
    assert event.timestamp == NOW
    assert event.timestamp.tzinfo is not None and event.timestamp.astimezone(UTC) == NOW


def test_unknown_top_level_key_is_refused(spec: AppSpec) -> None:
    (error,) = failure(ingested, spec, [{"id": "x1", "features": features(), "colour": "red"}], now=NOW)
    assert (error["index"], error["id"], error["loc"]) == (0, "x1", ["colour"])
    assert "Extra inputs are not permitted" in error["msg"]


@pytest.mark.parametrize("bad_id", ["", "has space", "-leading", "a" * 129, "é", "a/b"])
def test_bad_event_ids_are_refused(spec: AppSpec, bad_id: str) -> None:
    (error,) = failure(ingested, spec, [{"id": bad_id, "features": features()}], now=NOW)
    assert (error["index"], error["loc"]) == (0, ["id"])


@pytest.mark.parametrize(
    ("item", "loc"),
    [(5, []), ("text", []), ([1], []), ({"id": "x"}, ["features"]), ({"features": [1]}, ["features"])],
)
def test_items_that_are_not_events(spec: AppSpec, item: Any, loc: list[Any]) -> None:
    errors = failure(ingested, spec, [{"features": features()}, item], now=NOW)
    assert all(e["index"] == 1 for e in errors)
    assert errors[0]["loc"] == loc


def test_regression_and_multiclass_labels_on_events() -> None:
    common = {"features": {"x": "float"}}
    reg = parse_app_spec({"name": "r", "task": "regression", **common,
                          "model": {"name": "m", "steps": [{"use": "linear_model.LinearRegression"}]}})
    (event,) = ingested(reg, [{"features": {"x": 1}, "label": 2.5}], now=NOW)
    assert event.label == 2.5
    assert failure(ingested, reg, [{"features": {"x": 1}, "label": True}], now=NOW)[0]["loc"] == ["label"]
    multi = parse_app_spec({"name": "m", "task": "multiclass", **common, "label": {"classes": ["a", "b"]},
                            "model": {"name": "m", "steps": [{"use": "linear_model.SoftmaxRegression"}]}})
    assert ingested(multi, [{"features": {"x": 1}, "label": "b"}], now=NOW)[0].label == "b"
    (error,) = failure(ingested, multi, [{"features": {"x": 1}, "label": "c"}], now=NOW)
    assert error["msg"] == "expected one of: a, b"


def test_optional_feature_sent_as_null_is_treated_as_absent() -> None:
    spec = parse_app_spec({"name": "o", "task": "binary",
                           "features": {"x": "float", "y": {"type": "float", "required": False}},
                           "model": {"name": "m", "steps": [{"use": "linear_model.LogisticRegression"}]}})
    (event,) = ingested(spec, [{"id": "n", "features": {"x": 1.0, "y": None}}], now=NOW)
    assert event.id == "n"
    assert event.features["x"] == 1.0 and event.features.get("y") is None


def test_huge_integer_feature_is_a_validation_error(spec: AppSpec) -> None:
    errors = failure(event_records, spec, b'{"features": {"amount": 1' + b"0" * 400 + b"}}", JSON, max_items=10, now=NOW)
    assert errors[0] == {"index": 0, "id": None, "loc": ["features", "amount"], "msg": "expected a finite number"}


def test_integers_past_64_bits_are_written_as_sent(spec: AppSpec) -> None:
    """orjson reads them as floats: such a float sends the body to be read again exactly."""
    big = b"1" + b"0" * 20
    body = b'{"id": "b-1", "features": {"amount": ' + big + b', "hour": 18446744073709551615, "distance_km": -9223372036854775809,' \
        b' "is_foreign": true, "card_present": true, "merchant": "fuel", "txn_last_hour": 0}}'
    _, [(_, value)] = event_records(spec, body, JSON, max_items=10, now=NOW)
    assert b'"amount":' + big + b"," in value and b'"hour":18446744073709551615,' in value and b'"distance_km":-9223372036854775809,' in value
    assert EventReceived.from_bytes(value).features["amount"] == 10**20
    _, [(_, value)] = event_records(spec, body.replace(big, b"1e20"), JSON, max_items=10, now=NOW)  # a float it was
    assert b'"amount":1e+20,' in value


@pytest.mark.parametrize("content_type", [JSON, NDJSON])
def test_one_object_a_list_and_ndjson_give_the_same_records(spec: AppSpec, content_type: str) -> None:
    items = [{"id": f"s-{k}", "features": features(amount=k + 0.5, hour=k), "label": k % 2 == 0} for k in range(5)]
    body = json.dumps(items).encode() if content_type == JSON else b"\n".join(json.dumps(i).encode() for i in items)
    ids, records = event_records(spec, body, content_type, max_items=10, now=NOW)
    assert ids == [f"s-{k}" for k in range(5)]
    for item in items:
        assert event_records(spec, json.dumps(item).encode(), JSON, max_items=10, now=NOW) == ([item["id"]], [records[ids.index(item["id"])]])
    assert [value for _, value in records] == [
        EventReceived(id=i["id"], features=i["features"], label=i["label"], timestamp=NOW, received_at=NOW).to_bytes() for i in items
    ]


def test_a_body_too_deep_is_refused_as_such_whatever_its_items(spec: AppSpec) -> None:
    deep = {"features": features(), "label": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}
    assert failure(event_records, spec, json.dumps(deep).encode(), JSON, max_items=10, now=NOW) == [
        {"loc": ["body"], "msg": "JSON nested deeper than 32 levels"}
    ]
    assert failure(event_records, spec, b'{"features": {"amount": NaN}}', JSON, max_items=10, now=NOW)[0]["loc"] == ["body"]


def test_new_ids_are_uuid4_hex() -> None:
    ids = new_ids(2000)
    assert len(set(ids)) == 2000
    for text in ids:
        parsed = uuid.UUID(hex=text)
        assert text == parsed.hex and len(text) == 32
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # every other bit varies, as uuid4's do: no position is stuck
    for position in range(32):
        if position not in (12, 16):
            assert len({text[position] for text in ids}) > 8, position
    assert {text[16] for text in ids} == set("89ab")
    assert new_ids(0) == []


def test_generated_ids_are_distinct_across_one_request(spec: AppSpec) -> None:
    items = [{"id": "given-1", "features": features()}, {"features": features()}, {"id": None, "features": features()}, {"features": features()}]
    ids, records = event_records(spec, json.dumps(items).encode(), JSON, max_items=10, now=NOW)
    assert ids[0] == "given-1" and len(set(ids)) == 4
    assert all(uuid.UUID(hex=i).version == 4 for i in ids[1:])
    assert [json.loads(v)["id"] for _, v in records] == ids
    assert [k for k, _ in records] == [i.encode() for i in ids]


def test_duplicates_are_named_by_their_own_index(spec: AppSpec) -> None:
    items = [{"id": "a", "features": features()}, {"id": 5, "features": features()}, {"id": "a", "features": features()}]
    errors = failure(ingested, spec, items)
    assert errors == [
        {"index": 1, "id": None, "loc": ["id"], "msg": "Input should be a valid string"},
        {"index": 2, "id": "a", "loc": ["id"], "msg": "duplicate id in this request"},
    ]
    labels = [{"id": "a", "label": True}, {"label": True}, {"id": "a", "label": False}]
    assert failure(validate_labels, spec, labels, now=NOW)[1] == {"index": 2, "id": "a", "loc": ["id"], "msg": "duplicate id in this request"}


# --- validate_labels -----------------------------------------------------------------------


def test_valid_labels_become_label_received(spec: AppSpec) -> None:
    labels = validate_labels(
        spec, [{"id": "tx-1", "label": True}, {"id": "tx-2", "label": False, "timestamp": "2026-02-01T00:00:00Z"}], now=NOW
    )
    assert [type(x) for x in labels] == [LabelReceived, LabelReceived]
    assert [(x.id, x.label) for x in labels] == [("tx-1", True), ("tx-2", False)]
    assert labels[0].timestamp == NOW and labels[0].received_at == NOW
    assert labels[1].timestamp == datetime(2026, 2, 1, tzinfo=UTC)
    assert labels[0].source == "api"
    assert LabelReceived.from_bytes(labels[1].to_bytes()) == labels[1]


def test_label_errors_name_index_id_and_field(spec: AppSpec) -> None:
    items = [
        {"id": "a", "label": True},
        {"id": "b", "label": 1},
        {"label": True},
        {"id": "d", "label": False, "timestamp": "2026-01-01T00:00:00"},
        {"id": "e", "label": True, "source": "me"},
        {"id": "f"},
    ]
    errors = failure(validate_labels, spec, items, now=NOW)
    got = [(e["index"], e["id"], e["loc"]) for e in errors]
    assert got == [(1, "b", ["label"]), (2, None, ["id"]), (3, "d", ["timestamp"]), (4, "e", ["source"]), (5, "f", ["label"])]
    assert errors[0]["msg"] == "expected true or false"


def test_labels_all_or_nothing_and_duplicates(spec: AppSpec) -> None:
    items = [{"id": f"l{i}", "label": i % 2 == 0} for i in range(10)]
    assert len(validate_labels(spec, items, now=NOW)) == 10
    items[9]["id"] = "l3"
    errors = failure(validate_labels, spec, items, now=NOW)
    assert errors == [{"index": 9, "id": "l3", "loc": ["id"], "msg": "duplicate id in this request"}]


@pytest.mark.parametrize("timestamp", ["1999-06-01T00:00:00Z", "2030-01-01T00:00:00Z", "2026-01-01T00:00:00"])
def test_label_timestamps_are_checked(spec: AppSpec, timestamp: str) -> None:
    (error,) = failure(validate_labels, spec, [{"id": "x", "label": True, "timestamp": timestamp}], now=NOW)
    assert error["loc"] == ["timestamp"]


def test_null_label_is_refused(spec: AppSpec) -> None:
    (error,) = failure(validate_labels, spec, [{"id": "x", "label": None}], now=NOW)
    assert (error["id"], error["loc"], error["msg"]) == ("x", ["label"], "expected true or false")
