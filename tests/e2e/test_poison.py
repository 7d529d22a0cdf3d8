"""Poison messages written straight onto the topics go to dead letters; learning goes on.

The whole suite runs on Apache Kafka. Messages ingest would never write (not JSON, JSON of
the wrong shape, features or labels of the wrong type, empty, null, huge) are produced with
aiokafka between valid events; each must appear on ``<prefix>.fraud.dead-letters`` with its
topic, partition, offset and a reason, while the trainer learns every valid example and
the served version advances.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from streamwise_core.adapters.settings import Topics
from streamwise_core.contracts.events import DeadLettered, EventReceived, LabelReceived
from streamwise_devstack.fraud import FraudStream, GeneratedEvent
from streamwise_devstack.suite import Suite

from .loop_client import LoopClient, wait_for

pytestmark = pytest.mark.e2e

HUGE = 900 * 1024
"""Bytes of the huge poison value: under Kafka's default 1 MiB message limit, far over any event."""


def _status(suite: Suite) -> dict[str, Any]:
    return httpx.get(f"{suite.url('trainer')}/v1/status", timeout=5, headers={"X-API-Key": "dev-api-key"}).json()


def _event_bytes(g: GeneratedEvent, *, with_label: bool = True, **feature_changes: Any) -> bytes:
    now = datetime.now(UTC)
    features = {**g.features, **feature_changes}
    return EventReceived(
        id=g.id, features=features, label=g.label if with_label else None, timestamp=now, received_at=now
    ).to_bytes()


def _poison(topics: Topics, stream: FraudStream) -> list[tuple[str, str, bytes | None, tuple[str, ...]]]:
    """``(name, topic, value, fragments)``: every poison message and the words one of which its reason says."""
    [a, b, c, d, e] = stream.take(5)
    now = datetime.now(UTC).isoformat()
    well_formed = json.loads(_event_bytes(a))
    huge_event = {**well_formed, "id": f"huge-{a.id}", "features": {**a.features, "merchant": "m" * HUGE}}
    nan_event = _event_bytes(d).replace(b'"amount":', b'"amount":NaN,"_":', 1)
    maybe = {**well_formed, "label": "maybe"}
    undecodable, features, label = ("undecodable",), ("features do not match",), ("label:",)
    return [
        ("not-json", topics.events, b"\x00\xffthis is not JSON at all {", undecodable),
        ("json-wrong-shape", topics.events, json.dumps({"hello": "world", "n": [1, 2, 3]}).encode(), undecodable),
        ("json-array", topics.events, b"[1, 2, 3]", undecodable),
        ("features-wrong-type", topics.events, _event_bytes(b, amount="lots", is_foreign="no"), features),
        ("unknown-feature", topics.events, _event_bytes(c, colour="red"), ("unknown feature",)),
        ("nan-feature", topics.events, nan_event, (*features, *undecodable)),
        ("label-wrong-type-on-event", topics.events, json.dumps(maybe).encode(), label),
        ("unknown-schema-version", topics.events, json.dumps({**json.loads(_event_bytes(e)), "schema_version": 2}).encode(),
         ("schema_version",)),
        ("empty-value", topics.events, b"", ("empty", *undecodable)),
        ("null-value", topics.events, None, ("empty", *undecodable)),
        ("huge-value", topics.events, json.dumps(huge_event).encode(), ("unknown value",)),
        ("huge-garbage", topics.labels, b"#" * HUGE, undecodable),
        ("label-wrong-type", topics.labels, json.dumps({"kind": "label_received", "id": a.id, "label": "yes", "timestamp": now}).encode(), label),
        ("label-number", topics.labels, LabelReceived(id=b.id, label=1.5, timestamp=datetime.now(UTC)).to_bytes(), label),
        ("label-not-json", topics.labels, b"label: true", undecodable),
        ("label-empty", topics.labels, b"", ("empty", *undecodable)),
        ("label-missing-id", topics.labels, json.dumps({"label": True, "timestamp": now}).encode(), undecodable),
    ]


async def _produce(bootstrap: str, messages: list[tuple[str, str, bytes | None, bytes | None]]) -> list[tuple[str, int, int]]:
    """Send ``(name, topic, key, value)`` in order; their ``(topic, partition, offset)``."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        positions = []
        for _, topic, key, value in messages:
            meta = await producer.send_and_wait(topic, value, key=key)
            positions.append((meta.topic, meta.partition, meta.offset))
        return positions
    finally:
        await producer.stop()


async def _dead_letters(
    bootstrap: str, topic: str, wanted: set[tuple[str, int, int]], timeout_s: float = 120,
) -> dict[tuple[str, int, int], DeadLettered]:
    """Dead letters from the start of ``topic`` until every position in ``wanted`` has one."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    found: dict[tuple[str, int, int], DeadLettered] = {}
    try:
        partitions = consumer.partitions_for_topic(topic) or {0}
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_s
        while not wanted <= found.keys():
            if time.monotonic() >= deadline:
                raise AssertionError(f"dead letters missing for {sorted(wanted - found.keys())}")
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    letter = DeadLettered.from_bytes(r.value)
                    found[(letter.topic, letter.partition, letter.offset)] = letter
    finally:
        await consumer.stop()
    return found


def test_poison_messages_are_dead_lettered_and_learning_goes_on(kafka_suite: Suite) -> None:
    suite = kafka_suite
    topics = Topics.for_app(suite.env["STREAMWISE_TOPIC_PREFIX"], "fraud")
    bootstrap = suite.env["STREAMWISE_KAFKA__BOOTSTRAP"]
    client = LoopClient(suite.url("ingest"), suite.url("predictor"))
    stream = FraudStream(seed=23, drift_at=10**9, run_id=f"p{uuid.uuid4().hex[:6]}")

    # A first version, learned from events sent through ingest.
    client.send(stream.take(300))
    before = client.wait_examples(300)
    status = _status(suite)
    assert status["dead_letters"] == 0, status
    examples_before, version_before = status["examples_seen"], before["meta"]["version"]

    # Poison interleaved with valid events (and one late label), straight onto the topics.
    poison = _poison(topics, stream)
    valid = stream.take(len(poison) * 3)
    late = stream.take(1)[0]
    messages: list[tuple[str, str, bytes | None, bytes | None]] = []
    for i, (name, topic, value, _) in enumerate(poison):
        for g in valid[3 * i : 3 * i + 3]:
            messages.append((f"valid-{g.id}", topics.events, g.id.encode(), _event_bytes(g)))
        messages.append((name, topic, f"poison-{name}".encode(), value))
        if i == len(poison) // 2:
            messages.append(("late-event", topics.events, late.id.encode(), _event_bytes(late, with_label=False)))
    label = LabelReceived(id=late.id, label=late.label, timestamp=datetime.now(UTC))
    messages.append(("late-label", topics.labels, late.id.encode(), label.to_bytes()))
    positions = asyncio.run(_produce(bootstrap, messages))
    poison_names = {name for name, *_ in poison}
    poisoned = {pos: m[0] for pos, m in zip(positions, messages, strict=True) if m[0] in poison_names}
    assert len(poisoned) == len(poison)

    # Every poison message is dead-lettered with its position and a reason.
    letters = asyncio.run(_dead_letters(bootstrap, topics.dead_letters, set(poisoned)))
    fragments = {name: words for name, _, _, words in poison}
    for position, name in poisoned.items():
        letter = letters[position]
        assert any(word in letter.reason for word in fragments[name]), (name, letter.reason[:500])
        assert letter.consumer == "trainer"
        assert letter.key == f"poison-{name}", (name, letter.key)
        assert len(letter.value) <= 65536, name
    huge = letters[next(p for p, n in poisoned.items() if n == "huge-value")]
    assert huge.value.startswith('{"') and len(huge.value) == 65536, "the original value, cut to 64 KiB"
    assert not {pos for pos in letters if pos[0] in (topics.events, topics.labels)} - set(poisoned), "a valid message was dead-lettered"

    # The trainer learned every valid example (the late one once its label came) and counts the dead letters.
    expected = examples_before + len(valid) + 1
    wait_for(lambda: _status(suite)["examples_seen"] >= expected, 120, f"{expected} examples learned")
    status = _status(suite)
    assert status["examples_seen"] == expected, status
    assert status["dead_letters"] == len(poison), status

    # The served version advances past the poison, and learning goes on after it.
    after = client.wait_examples(expected)
    assert after["meta"]["version"] > version_before
    client.send(stream.take(100))
    final = client.wait_examples(expected + 100)
    assert final["meta"]["version"] > after["meta"]["version"]
    assert _status(suite)["dead_letters"] == len(poison)
    r = httpx.post(f"{suite.url('predictor')}/v1/predict", json={"features": valid[0].features}, timeout=10)
    assert r.status_code == 200 and r.json()["version"] >= final["meta"]["version"], r.text
