"""Ingest's quick path (``quick_event_records``) against the detailed one, on many random bodies.

``tests/unit/test_fast_paths.py`` holds hand-picked cases; here a seeded generator mixes valid and
invalid ids, feature values at the edges of each type, labels of every task, timestamps and extra
keys, sent as one object, a JSON list and NDJSON. For every body, ``event_records`` must give what
the detailed path (``parse_items`` + ``validate_events``, pydantic) gives: the same refusal, or the
same records byte for byte. Ids the quick path generates are given to the detailed path, which
then has to produce the very same records.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamwise_core.appspec import AppSpec, load_app_spec, parse_app_spec
from streamwise_core.errors import ValidationFailed
from streamwise_ingest.parsing import parse_items
from streamwise_ingest.validation import event_records, new_ids, quick_event_records, validate_events

ROOT = Path(__file__).resolve().parents[2]
FRAUD = load_app_spec(ROOT / "examples" / "fraud" / "streamwise.toml")
NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
JSON, NDJSON = "application/json", "application/x-ndjson"


def other_spec(task: str) -> AppSpec:
    raw: dict[str, Any] = {
        "name": "t", "task": task,
        "features": {"x": "float", "n": "int", "b": {"type": "bool", "required": False}, "k": "category",
                     "c": {"type": "category", "values": ["p", "q"], "required": False}},
        "model": {"name": "m", "steps": [{"use": "linear_model.LinearRegression"}]},
    }
    if task == "multiclass":
        raw["label"] = {"classes": ["a", "b"]}
    return parse_app_spec(raw)


SPECS = {"fraud": FRAUD, "binary": other_spec("binary"), "multiclass": other_spec("multiclass"), "regression": other_spec("regression")}
EDGE_VALUES: list[Any] = [
    0, 1, -7, 3, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 10**30,
    0.0, -0.0, 1.5, 3.0, -2.0, 1e15, 9.2e18, 9.3e18, -9.3e18, 1e300, 1e-300,
    True, False, "grocery", "casino", "p", "r", "", "zé\u2028", None, [], {}, [1], {"a": 1},
]
LABELS: list[Any] = [True, False, None, 1, 0, 1.0, 2.5, -3.0, 9.3e18, 1e300, "a", "b", "c", "yes", [], {}]
TIMESTAMPS: list[Any] = [
    None, "2026-02-28T08:30:00Z", "2026-02-28T08:30:00.5+02:00", "2026-02-28T08:30:00-05:30", "2026-02-28 08:30:00.000001+00:00",
    "2026-02-28T08:30:00", "1999-12-31T23:59:59Z", "2000-01-01T00:00:00Z", "2026-03-02T12:00:00Z", "2026-03-02T12:00:01Z",
    "2026-02-30T00:00:00Z", "nope", 1700000000, 1.5, True,
]
IDS: list[Any] = ["e-1", "e-2", "x:y.z_W-9", "a" * 128, "a" * 129, "has space", "nl\n", "", "-lead", "é", 5, True, None]


def valid_features(spec: AppSpec, rng: random.Random) -> dict[str, Any]:
    if spec is FRAUD:
        return {"amount": rng.choice([12.5, 7, 1e6]), "hour": rng.choice([14, 3.0, 0]), "distance_km": rng.choice([3.2, 0, 840.0]),
                "is_foreign": rng.random() < 0.5, "card_present": rng.random() < 0.5,
                "merchant": rng.choice(["grocery", "crypto", "travel"]), "txn_last_hour": rng.choice([0, 4])}
    out: dict[str, Any] = {"x": rng.choice([1.0, 2, -0.5]), "n": rng.choice([1, 2.0, -3]), "k": rng.choice(["any", "zé", ""])}
    if rng.random() < 0.5:
        out["b"] = rng.choice([True, False, None])
    if rng.random() < 0.5:
        out["c"] = rng.choice(["p", "q", None])
    return out


def random_event(spec: AppSpec, rng: random.Random, k: int) -> dict[str, Any]:
    event: dict[str, Any] = {"features": valid_features(spec, rng)}
    roll = rng.random()
    if roll < 0.6:
        event["id"] = f"ev-{k}"
    elif roll < 0.68:
        event["id"] = rng.choice(IDS)
    elif roll < 0.85:
        event["id"] = None
    features = event["features"]
    for _ in range(rng.choice([0] * 12 + [1, 1, 2])):  # a few broken values per event, most events valid
        action = rng.random()
        if action < 0.7:
            features[rng.choice(list(features))] = rng.choice(EDGE_VALUES)
        elif action < 0.85:
            features.pop(rng.choice(list(features)))
        else:
            features[rng.choice(["unknown", "Amount", "x "])] = 1.0
    if rng.random() < 0.6:
        event["label"] = (rng.choice([True, False]) if spec.task == "binary" else
                          rng.choice(["a", "b"]) if spec.task == "multiclass" else rng.choice([1.5, -2.0]))
        if rng.random() < 0.1:
            event["label"] = rng.choice(LABELS)
    if rng.random() < 0.15:
        event["timestamp"] = rng.choice(TIMESTAMPS)
    if rng.random() < 0.03:
        event["extra"] = 1
    if rng.random() < 0.02:
        return rng.choice([{"id": "no-features"}, {"features": None}, {"features": [1]}, [event], "event", 5])  # type: ignore[return-value]
    return event


def body_of(items: list[Any], shape: str) -> tuple[bytes, str]:
    if shape == "object":
        return json.dumps(items[0]).encode(), JSON
    if shape == "list":
        return json.dumps(items).encode(), JSON
    return b"\n".join(json.dumps(item).encode() for item in items), NDJSON


def detailed(spec: AppSpec, body: bytes, content_type: str) -> Any:
    try:
        events = validate_events(spec, parse_items(body, content_type, max_items=100), NOW)
    except ValidationFailed as exc:
        return ("refused", exc.errors)
    return ("ok", ([e.id for e in events], [(e.id.encode(), e.to_bytes()) for e in events]))


def with_ids(items: list[Any], ids: list[str]) -> list[Any]:
    """The items with the ids ``event_records`` gave them (its own for those without one)."""
    return [{**item, "id": item_id} for item, item_id in zip(items, ids, strict=True)]


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_random_bodies_get_the_detailed_paths_verdicts(spec_name: str) -> None:
    spec = SPECS[spec_name]
    rng = random.Random(f"ingest-quick-{spec_name}")
    quick_accepted = refused = 0
    for case in range(1500):
        n = rng.choice([1, 1, 1, 2, 3, 5])
        items = [random_event(spec, rng, k) for k in range(n)]
        if rng.random() < 0.05 and n > 1 and all(isinstance(i, dict) and "id" in i for i in items):
            items[-1]["id"] = items[0]["id"]  # a duplicate id
        shape = "object" if n == 1 and rng.random() < 0.5 else rng.choice(["list", "ndjson"])
        if shape == "object" and isinstance(items[0], list):
            items = items[0]  # one object that is a list: a JSON list of items
        body, content_type = body_of(items, shape)
        try:
            ids, records = event_records(spec, body, content_type, max_items=100, now=NOW)
        except ValidationFailed as exc:
            refused += 1
            assert ("refused", exc.errors) == detailed(spec, body, content_type), (case, body)
            continue
        parsed = orjson.loads(body) if content_type == JSON else [orjson.loads(line) for line in body.split(b"\n")]
        quick_accepted += quick_event_records(spec, parsed if isinstance(parsed, list) else [parsed], NOW) is not None
        same_ids, _ = body_of(with_ids(items, ids), shape)
        assert ("ok", (ids, records)) == detailed(spec, same_ids, content_type), (case, body)
        given = [i.get("id") for i in items]
        assert [x for x, g in zip(ids, given, strict=True) if g is not None] == [g for g in given if g is not None]
    assert quick_accepted > 300 and refused > 300, (quick_accepted, refused)  # both halves were exercised


def test_quick_path_takes_python_values_the_detailed_path_would_encode_differently() -> None:
    """Values orjson never produces (huge ints, NaN, infinities) are left to the detailed path."""
    base = {"amount": 1.0, "hour": 1, "distance_km": 1.0, "is_foreign": True, "card_present": True, "merchant": "fuel", "txn_last_hour": 0}
    for name, value in [("amount", 10**400), ("hour", 2**64), ("amount", float("nan")), ("amount", float("inf")), ("hour", float("-inf"))]:
        assert quick_event_records(FRAUD, [{"id": "p-1", "features": {**base, name: value}}], NOW) is None
    assert quick_event_records(FRAUD, [{"id": "p-1", "features": base}], NOW) is not None


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


def test_generated_ids_are_distinct_across_one_request() -> None:
    base = {"amount": 1.0, "hour": 1, "distance_km": 1.0, "is_foreign": True, "card_present": True, "merchant": "fuel", "txn_last_hour": 0}
    items = [{"id": "given-1", "features": base}, {"features": base}, {"id": None, "features": base}, {"features": base}]
    ids, records = quick_event_records(FRAUD, items, NOW) or ([], [])
    assert ids[0] == "given-1" and len(set(ids)) == 4
    assert all(uuid.UUID(hex=i).version == 4 for i in ids[1:])
    assert [orjson.loads(v)["id"] for _, v in records] == ids
    assert [k for k, _ in records] == [i.encode() for i in ids]
