"""The ingest HTTP service, served by uvicorn, writing to a real Apache Kafka (no mocks)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, TopicPartition

from streamwise_core.adapters.kafka import ensure_topics
from streamwise_core.adapters.settings import DEV_API_KEY, KafkaSettings, Topics
from streamwise_core.contracts.events import EventReceived, LabelReceived
from streamwise_devstack import ExternalKafka, KafkaBroker, TansuBroker
from streamwise_ingest.app import create_app
from streamwise_ingest.settings import IngestSettings
from tests.threaded_server import serve

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
APP_SPEC = ROOT / "examples/fraud/streamwise.toml"
MAX_BODY = 4096
KEY = {"X-API-Key": DEV_API_KEY}


@dataclass
class Ingest:
    url: str
    settings: IngestSettings
    topics: Topics
    bootstrap: str


@contextmanager
def _serve(settings: IngestSettings) -> Iterator[str]:
    """Run the ingest app in a background thread; yield its URL."""
    with serve(create_app(settings), "ingest") as url:
        yield url


def _settings(
    bootstrap: str, *, idempotence: bool = True, kafka: dict[str, Any] | None = None, **overrides: Any
) -> IngestSettings:
    return IngestSettings(
        kafka=KafkaSettings(bootstrap=bootstrap, idempotence=idempotence, partitions=1, **(kafka or {})),
        topic_prefix=f"it-{uuid.uuid4().hex[:12]}",
        app_spec=APP_SPEC,
        max_body_bytes=MAX_BODY,
        **overrides,
    )


@pytest.fixture
async def ingest(kafka_broker: KafkaBroker | ExternalKafka) -> AsyncIterator[Ingest]:
    settings = _settings(kafka_broker.bootstrap)
    topics = settings.topics
    await ensure_topics(settings.kafka, [topics.events, topics.labels], timeout_s=30)
    with _serve(settings) as url:
        yield Ingest(url, settings, topics, kafka_broker.bootstrap)


@pytest.fixture
async def client(ingest: Ingest) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ingest.url, timeout=30) as c:
        yield c


async def _consume(
    bootstrap: str, topic: str, done: Callable[[list[ConsumerRecord]], bool], timeout: float = 30.0
) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the beginning (no consumer group), until ``done`` says so."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        consumer.assign([TopicPartition(topic, p["partition"]) for p in described["partitions"]])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while not done(records):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out reading {topic}: {len(records)} records so far")
            batches = await consumer.getmany(timeout_ms=200)
            records += [r for rs in batches.values() for r in rs]
    finally:
        await consumer.stop()
    return records


async def _events_until(ingest: Ingest, sentinel: str) -> list[EventReceived]:
    """Events on the topic up to and including the one with id ``sentinel``."""
    records = await _consume(ingest.bootstrap, ingest.topics.events, lambda rs: any(r.key == sentinel.encode() for r in rs))
    events = []
    for r in records:
        event = EventReceived.from_bytes(r.value)
        assert r.key == event.id.encode()
        events.append(event)
    return events


async def _sentinel(client: httpx.AsyncClient) -> str:
    """Accept one more event; once it is read, everything written before it has been read."""
    sentinel = f"sentinel-{uuid.uuid4().hex[:8]}"
    response = await client.post("/v1/events", json=_event(sentinel), headers=KEY)
    assert response.status_code == 202, response.text
    return sentinel


def _event(event_id: str | None, **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "features": {
            "amount": 123.45, "hour": 14, "distance_km": 3.5, "is_foreign": False, "card_present": True,
            "merchant": "grocery", "txn_last_hour": 1,
        },
        "label": False,
    }
    if event_id is not None:
        event["id"] = event_id
    for key, value in changes.items():
        if key in event["features"]:
            event["features"][key] = value
        else:
            event[key] = value
    return event


# --------------------------------------------------------------------------- accepted bodies


async def test_object_list_and_ndjson_bodies_are_accepted_and_on_the_events_topic(
    ingest: Ingest, client: httpx.AsyncClient
) -> None:
    sent: list[dict[str, Any]] = []

    single = _event("single-1", amount=900.0, merchant="electronics", label=True, timestamp="2026-01-02T03:04:05Z")
    r = await client.post("/v1/events", json=single, headers=KEY)
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 1, "ids": ["single-1"]}
    sent.append(single)

    no_id = _event(None, label=None)
    r = await client.post("/v1/events", json=no_id, headers=KEY)
    assert r.status_code == 202, r.text
    [generated] = r.json()["ids"]
    sent.append({**no_id, "id": generated})

    batch = [_event(f"list-{i}", hour=i, txn_last_hour=i) for i in range(3)]
    r = await client.post("/v1/events", json=batch, headers=KEY)
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 3, "ids": ["list-0", "list-1", "list-2"]}
    sent += batch

    lines = [_event(f"nd-{i}", distance_km=float(i)) for i in range(2)]
    body = "\n".join(json.dumps(x) for x in lines) + "\n\n"
    r = await client.post("/v1/events", content=body, headers={**KEY, "Content-Type": "application/x-ndjson"})
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 2, "ids": ["nd-0", "nd-1"]}
    sent += lines

    events = await _events_until(ingest, "nd-1")
    assert [e.id for e in events] == [x["id"] for x in sent]  # one partition: request order
    for event, item in zip(events, sent, strict=True):
        assert event.features == item["features"]
        assert event.label == item.get("label")
        assert event.kind == "event_received" and event.schema_version == 1
    assert events[0].timestamp.isoformat() == "2026-01-02T03:04:05+00:00"
    assert events[1].timestamp == events[1].received_at  # no timestamp given: received time


# --------------------------------------------------------------------------- refused bodies


async def test_bad_event_in_a_list_is_422_and_nothing_of_it_is_written(
    ingest: Ingest, client: httpx.AsyncClient
) -> None:
    batch = [
        _event("ok-0"),
        _event("bad-1", amount="lots"),
        _event("ok-2"),
        _event("bad-3", merchant="casino", label="yes"),
    ]
    r = await client.post("/v1/events", json=batch, headers=KEY)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    located = {(d["index"], d["id"], tuple(d["loc"])) for d in detail}
    assert (1, "bad-1", ("features", "amount")) in located
    assert (3, "bad-3", ("features", "merchant")) in located
    assert (3, "bad-3", ("label",)) in located
    assert r.json()["errors"] == len(detail)
    assert all(d["index"] in (1, 3) for d in detail)

    # Duplicated ids and broken NDJSON lines are refused as a whole as well.
    r = await client.post("/v1/events", json=[_event("dup-0"), _event("dup-0")], headers=KEY)
    assert r.status_code == 422
    assert r.json()["detail"][0] | {"msg": None} == {"index": 1, "id": "dup-0", "loc": ["id"], "msg": None}
    body = json.dumps(_event("nd-ok")) + "\n{not json\n"
    r = await client.post("/v1/events", content=body, headers={**KEY, "Content-Type": "application/x-ndjson"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", 1]

    sentinel = await _sentinel(client)
    events = await _events_until(ingest, sentinel)
    assert [e.id for e in events] == [sentinel]


async def test_missing_or_wrong_api_key_is_401(ingest: Ingest, client: httpx.AsyncClient) -> None:
    for path, body in (("/v1/events", _event("nokey-1")), ("/v1/labels", {"id": "nokey-1", "label": True})):
        r = await client.post(path, json=body)
        assert r.status_code == 401, r.text
        r = await client.post(path, json=body, headers={"X-API-Key": "wrong-key"})
        assert r.status_code == 401, r.text
        r = await client.post(path, json=body, headers={"X-API-Key": DEV_API_KEY + "x"})
        assert r.status_code == 401, r.text

    sentinel = await _sentinel(client)
    assert [e.id for e in await _events_until(ingest, sentinel)] == [sentinel]
    r = await client.post("/v1/labels", json={"id": sentinel, "label": True}, headers=KEY)
    assert r.status_code == 202, r.text
    labels = await _consume(ingest.bootstrap, ingest.topics.labels, lambda rs: any(x.key == sentinel.encode() for x in rs))
    assert [x.key for x in labels] == [sentinel.encode()]


async def test_body_over_the_limit_is_413_declared_or_chunked(ingest: Ingest, client: httpx.AsyncClient) -> None:
    big = [_event(f"big-{i}") for i in range(40)]
    payload = json.dumps(big).encode()
    assert len(payload) > MAX_BODY

    r = await client.post("/v1/events", content=payload, headers={**KEY, "Content-Type": "application/json"})
    assert r.status_code == 413, r.text

    sent_chunks = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent_chunks
        for start in range(0, len(payload), 512):
            sent_chunks += 1
            yield payload[start : start + 512]

    request = client.build_request("POST", "/v1/events", content=chunks(), headers={**KEY, "Content-Type": "application/json"})
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    r = await client.send(request)
    assert r.status_code == 413, r.text
    assert sent_chunks >= MAX_BODY // 512

    # The same on the labels endpoint; and a chunked body under the limit is fine.
    r = await client.post("/v1/labels", content=b"[" + b" " * MAX_BODY + b"]", headers=KEY)
    assert r.status_code == 413

    small = json.dumps([_event("chunked-ok")]).encode()

    async def small_chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(small), 64):
            yield small[start : start + 64]

    r = await client.post("/v1/events", content=small_chunks(), headers={**KEY, "Content-Type": "application/json"})
    assert r.status_code == 202, r.text
    assert r.json()["ids"] == ["chunked-ok"]

    events = await _events_until(ingest, "chunked-ok")
    assert [e.id for e in events] == ["chunked-ok"]


# --------------------------------------------------------------------------- labels


async def test_labels_are_accepted_and_on_the_labels_topic(ingest: Ingest, client: httpx.AsyncClient) -> None:
    labels = [{"id": "evt-1", "label": True}, {"id": "evt-2", "label": False, "timestamp": "2026-01-02T00:00:00Z"}]
    r = await client.post("/v1/labels", json=labels, headers=KEY)
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 2, "ids": ["evt-1", "evt-2"]}

    r = await client.post("/v1/labels", json={"id": "evt-3", "label": True}, headers=KEY)
    assert r.status_code == 202, r.text

    r = await client.post("/v1/labels", json=[{"id": "evt-4", "label": True}, {"id": "evt-5", "label": "yes"}], headers=KEY)
    assert r.status_code == 422
    assert [(d["index"], d["id"], d["loc"]) for d in r.json()["detail"]] == [(1, "evt-5", ["label"])]

    r = await client.post("/v1/labels", json={"label": True}, headers=KEY)  # no id: nothing to join with
    assert r.status_code == 422

    records = await _consume(ingest.bootstrap, ingest.topics.labels, lambda rs: any(r.key == b"evt-3" for r in rs))
    got = [LabelReceived.from_bytes(r.value) for r in records]
    assert [(r.key, x.id, x.label) for r, x in zip(records, got, strict=True)] == [
        (b"evt-1", "evt-1", True), (b"evt-2", "evt-2", False), (b"evt-3", "evt-3", True),
    ]
    assert got[1].timestamp.isoformat() == "2026-01-02T00:00:00+00:00"
    assert all(x.kind == "label_received" and x.source == "api" for x in got)

    # Labels never land on the events topic.
    sentinel = await _sentinel(client)
    assert [e.id for e in await _events_until(ingest, sentinel)] == [sentinel]


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json() == {"ready": True}


# --------------------------------------------------------------------------- Kafka down


async def test_kafka_down_is_503_with_retry_after(tmp_path: Path) -> None:
    """On a private Tansu that is stopped: 503 once produce_timeout_s is up, and 202 again once back."""
    with TansuBroker(tmp_path / "tansu") as broker:
        # The producer's own timeout is longer than the client's: only produce_timeout_s can answer.
        settings = _settings(broker.bootstrap, idempotence=False, kafka={"request_timeout_ms": 120_000}, produce_timeout_s=1.5)
        await ensure_topics(settings.kafka, [settings.topics.events], timeout_s=30)
        with _serve(settings) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                r = await c.post("/v1/events", json=_event("up-1"), headers=KEY)
                assert r.status_code == 202, r.text

                broker.kill()
                r = await c.post("/v1/events", json=_event("down-1"), headers=KEY)
                assert r.status_code == 503, r.text
                assert r.headers["retry-after"] == "1"

                broker.start()  # empty again (memory storage)
                await ensure_topics(settings.kafka, [settings.topics.events], timeout_s=30)
                deadline = time.monotonic() + 30
                while True:  # the producer reconnects on its own
                    r = await c.post("/v1/events", json=_event(f"back-{uuid.uuid4().hex[:6]}"), headers=KEY)
                    if r.status_code == 202 or time.monotonic() >= deadline:
                        break
                    await asyncio.sleep(0.2)
                assert r.status_code == 202, r.text


async def test_readyz_reports_kafka_down(tmp_path: Path) -> None:
    with TansuBroker(tmp_path / "tansu") as broker:
        settings = _settings(broker.bootstrap, idempotence=False, produce_timeout_s=1.5)
        with _serve(settings) as url:
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                assert (await c.get("/readyz")).status_code == 200
                broker.kill()
                try:
                    r = await c.post("/v1/events", json=_event("down-1"), headers=KEY)
                    assert r.status_code == 503, r.text
                    r = await c.get("/readyz")
                    assert r.status_code == 503, r.text
                finally:
                    broker.start()  # so the app's producer can stop
