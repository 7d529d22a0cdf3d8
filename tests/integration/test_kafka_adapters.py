"""Kafka adapters (make_producer, ensure_topics, KafkaSink) on Apache Kafka with the idempotent
producer and on Tansu without it (no mocks)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from streamwise_core.adapters.kafka import ensure_topics, make_producer
from streamwise_core.adapters.settings import KafkaSettings
from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_devstack import KafkaBroker, TansuBroker
from streamwise_ingest.sink import KafkaSink

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Target:
    name: str
    bootstrap: str
    idempotence: bool

    def settings(self, **overrides: object) -> KafkaSettings:
        return KafkaSettings(bootstrap=self.bootstrap, idempotence=self.idempotence, **overrides)


@pytest.fixture(params=["kafka", "tansu"])
def target(request: pytest.FixtureRequest) -> Target:
    """Apache Kafka with the idempotent producer, or Tansu (which refuses it) without."""
    if request.param == "kafka":
        return Target("kafka", request.getfixturevalue("kafka_broker").bootstrap, True)
    return Target("tansu", request.getfixturevalue("tansu_broker").bootstrap, False)


def _topic(tag: str) -> str:
    return f"it-{tag}-{uuid.uuid4().hex[:12]}"


async def _gives_up(call: Awaitable[None], timeout_s: float) -> pytest.ExceptionInfo[BackendUnavailable]:
    """``call`` fails with BackendUnavailable. The guard, ten times its timeout, only catches a call
    that hangs or ignores its timeout: a bound close to the timeout would measure the machine."""
    guard_s = 10 * timeout_s
    guard = asyncio.timeout(guard_s)
    try:
        async with guard:
            with pytest.raises(BackendUnavailable) as info:
                await call
    except TimeoutError:
        if not guard.expired():
            raise
        pytest.fail(f"still waiting after {guard_s}s with a {timeout_s}s timeout: the timeout is not honoured")
    return info


async def _partition_counts(bootstrap: str, topics: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}


async def _consume(
    bootstrap: str, topic: str, done: Callable[[list[ConsumerRecord]], bool], timeout: float = 30.0
) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the beginning (no consumer group), until ``done`` says so.

    Raises TimeoutError (not AssertionError, which the xfail tests expect) past ``timeout``.
    """
    count = (await _partition_counts(bootstrap, [topic])).get(topic)
    if not count:
        raise TimeoutError(f"topic {topic} does not exist")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(count)])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while not done(records):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out reading {topic}: {len(records)} records so far")
            batches = await consumer.getmany(timeout_ms=200)
            for tp in sorted(batches, key=lambda tp: tp.partition):
                records += batches[tp]
    finally:
        await consumer.stop()
    return records


@pytest.fixture
async def producer_for(target: Target) -> AsyncIterator[Callable[[KafkaSettings], AIOKafkaProducer]]:
    started: list[AIOKafkaProducer] = []

    def factory(settings: KafkaSettings) -> AIOKafkaProducer:
        producer = make_producer(settings, client_id=f"it-{target.name}")
        started.append(producer)
        return producer

    yield factory
    for producer in started:
        await asyncio.wait_for(producer.stop(), 30)


# --------------------------------------------------------------------------- ensure_topics


async def test_ensure_topics_creates_partitions_and_is_idempotent(target: Target) -> None:
    settings = target.settings(partitions=3)
    a, b = _topic("a"), _topic("b")
    await ensure_topics(settings, [a, b], timeout_s=30)
    assert await _partition_counts(target.bootstrap, [a, b]) == {a: 3, b: 3}

    # Again, unchanged; with one more new topic and another partition count: only the new one
    # gets it, existing topics are left as they are.
    await ensure_topics(settings, [a, b], timeout_s=30)
    c = _topic("c")
    await ensure_topics(target.settings(partitions=2), [a, c], timeout_s=30)
    assert await _partition_counts(target.bootstrap, [a, b, c]) == {a: 3, b: 3, c: 2}


async def test_ensure_topics_gives_up_with_backend_unavailable() -> None:
    # A port that is bound but not listening refuses connections, and nobody else can take it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as reserved:
        reserved.bind(("127.0.0.1", 0))
        settings = KafkaSettings(bootstrap=f"127.0.0.1:{reserved.getsockname()[1]}")
        info = await _gives_up(ensure_topics(settings, [_topic("x")], timeout_s=1.5), 1.5)
    assert info.value.retriable


# --------------------------------------------------------------------------- KafkaSink


def _records(tag: str, n: int, keys: int | None = None) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(n):
        key = f"{tag}-key-{i % keys if keys else i}".encode()
        out.append((key, json.dumps({"tag": tag, "seq": i, "pad": "x" * (i % 50)}).encode()))
    return out


async def test_sink_write_is_readable_in_order_with_keys(
    target: Target, producer_for: Callable[[KafkaSettings], AIOKafkaProducer]
) -> None:
    settings = target.settings(partitions=1)
    topic = _topic("sink")
    await ensure_topics(settings, [topic], timeout_s=30)
    producer = producer_for(settings)
    await producer.start()
    sink = KafkaSink(producer, timeout_s=20)

    first, second = _records("first", 300), _records("second", 5)
    await sink.write(topic, first)
    await sink.write(topic, second)
    await sink.write(topic, [])  # an empty batch is a no-op

    expected = first + second
    got = await _consume(target.bootstrap, topic, lambda r: len(r) >= len(expected))
    assert [(r.key, r.value) for r in got] == expected
    assert [r.offset for r in got] == list(range(len(expected)))


async def test_sink_write_keeps_per_key_order_across_partitions(
    target: Target, producer_for: Callable[[KafkaSettings], AIOKafkaProducer]
) -> None:
    settings = target.settings(partitions=3)
    topic = _topic("keys")
    await ensure_topics(settings, [topic], timeout_s=30)
    producer = producer_for(settings)
    await producer.start()
    sink = KafkaSink(producer, timeout_s=20)

    records = _records("k", 120, keys=8)
    await sink.write(topic, records)
    got = await _consume(target.bootstrap, topic, lambda r: len(r) >= len(records))
    assert sorted((r.key, r.value) for r in got) == sorted(records)

    by_key: dict[bytes, list[ConsumerRecord]] = {}
    for r in got:
        by_key.setdefault(r.key, []).append(r)
    assert len(by_key) == 8
    used_partitions = set()
    for key, rs in by_key.items():
        assert len({r.partition for r in rs}) == 1, f"{key!r} spread over partitions"
        used_partitions.add(rs[0].partition)
        seqs = [json.loads(r.value)["seq"] for r in sorted(rs, key=lambda r: r.offset)]
        assert seqs == sorted(seqs), f"{key!r} out of order: {seqs}"
    assert len(used_partitions) > 1  # 8 keys did not all land on one partition


async def test_tansu_refuses_the_idempotent_producer(tansu_broker: TansuBroker) -> None:
    """Why KafkaSettings.idempotence exists: Tansu answers InitProducerId with an error."""
    producer = make_producer(KafkaSettings(bootstrap=tansu_broker.bootstrap, idempotence=True), client_id="it-idem")
    try:
        with pytest.raises(KafkaError):
            await asyncio.wait_for(producer.start(), 30)
    finally:
        await asyncio.wait_for(producer.stop(), 30)


# --------------------------------------------------------------------------- broker down


@pytest.fixture(scope="module")
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """An Apache Kafka of this module's own, which tests stop and start again."""
    with KafkaBroker(tmp_path_factory.mktemp("private-kafka")) as broker:
        yield broker


@pytest.fixture(params=["kafka", "tansu"])
def private_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[KafkaBroker | TansuBroker, bool]]:
    """A running broker the test may stop (it is started again afterwards); with its idempotence."""
    if request.param == "kafka":
        broker: KafkaBroker = request.getfixturevalue("private_kafka")
        broker.start()  # no-op when running
        yield broker, True
        broker.start()
    else:
        with TansuBroker(tmp_path / "tansu") as tansu:
            yield tansu, False


async def test_sink_write_to_a_stopped_broker_raises_within_timeout_then_recovers(
    private_broker: tuple[KafkaBroker | TansuBroker, bool],
) -> None:
    broker, idempotence = private_broker
    settings = KafkaSettings(bootstrap=broker.bootstrap, idempotence=idempotence, partitions=1, request_timeout_ms=5000)
    topic = _topic("down")
    await ensure_topics(settings, [topic], timeout_s=30)
    producer = make_producer(settings, client_id="it-down")
    await producer.start()
    timeout_s = 2.0
    sink = KafkaSink(producer, timeout_s=timeout_s)
    try:
        await sink.write(topic, _records("up", 3))

        broker.kill()  # crash: quicker than a graceful stop with clients connected
        # The sink's own deadline gives up (a builtin TimeoutError), before the producer's request
        # timeout (5 s, a KafkaTimeoutError) would: that is what answers within timeout_s.
        info = await _gives_up(sink.write(topic, _records("down", 3)), timeout_s)
        assert info.value.retriable
        assert isinstance(info.value.__cause__, TimeoutError), repr(info.value.__cause__)

        # A topic never seen before (no cached metadata) also fails by the sink's deadline.
        info = await _gives_up(sink.write(_topic("unknown"), _records("down", 1)), timeout_s)
        assert isinstance(info.value.__cause__, TimeoutError), repr(info.value.__cause__)

        # The same producer works again once the broker is back. (Tansu keeps nothing across a
        # restart, so a producer that outlives one has nothing left to resume: Kafka only.)
        broker.start()
        if not isinstance(broker, KafkaBroker):
            return
        await ensure_topics(settings, [topic], timeout_s=30)
        sink = KafkaSink(producer, timeout_s=30)
        await sink.write(topic, _records("back", 3))
        got = await _consume(broker.bootstrap, topic, lambda r: any(x.key == b"back-key-2" for x in r))
        assert [(r.key, r.value) for r in got][-3:] == _records("back", 3)
    finally:
        broker.start()  # a producer with undelivered records cannot stop while the broker is down
        await asyncio.wait_for(producer.stop(), 60)
