"""The trainer's batch consumer on Apache Kafka: a quiet topic does not hold the busy one back.

aiokafka keeps one fetch in flight per broker. When the events topic has records buffered and
the labels topic has none, the labels fetch waits at the broker for data (up to
``fetch_max_wait_ms``), and the next events fetch waits behind it once the buffer is drained.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaProducer, TopicPartition

from streamwise_core.adapters.kafka import ensure_topics
from streamwise_core.adapters.settings import KafkaSettings
from streamwise_devstack import KafkaBroker
from streamwise_trainer.consumer import BatchConsumer
from streamwise_trainer.learning import ConsumedRecord
from streamwise_trainer.settings import TrainerSettings

DEADLINE_S = 30.0
"""How long a wait for something that happens in milliseconds may take before the test fails."""


async def _batch(consumer: BatchConsumer, what: str) -> list[ConsumedRecord]:
    deadline = time.monotonic() + DEADLINE_S
    while not (got := await consumer.next_batch({}, max_records=10, timeout_ms=200)):
        assert time.monotonic() < deadline, f"no record after {DEADLINE_S}s waiting for {what}"
    return got


async def _quiet_fetch_in_flight(consumer: BatchConsumer, busy: str) -> None:
    """Wait until the busy topic's records are buffered past aiokafka's prefetch backoff and the
    fetch in flight is the quiet topic's alone (aiokafka sends none for a partition with records
    buffered). aiokafka has no public view of its fetcher: its private state is read here."""
    fetcher = consumer._consumer._fetcher  # noqa: SLF001
    buffered = fetcher._records  # noqa: SLF001
    deadline = time.monotonic() + DEADLINE_S
    tp = TopicPartition(busy, 0)
    while not (tp in buffered and buffered[tp].calculate_backoff() == 0 and fetcher._in_flight):  # noqa: SLF001
        assert time.monotonic() < deadline, f"no fetch of the quiet topic alone after {DEADLINE_S}s"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def _behind_a_quiet_fetch(bootstrap: str, max_wait_ms: int) -> AsyncIterator[tuple[BatchConsumer, AIOKafkaProducer, str]]:
    """A consumer of a busy and a quiet topic whose busy records were just drained while a fetch of
    the quiet topic alone is held at the broker; with a producer and the busy topic."""
    settings = KafkaSettings(bootstrap=bootstrap, request_timeout_ms=max_wait_ms + 30_000)  # no request gives up first
    busy, quiet = f"busy-{uuid.uuid4().hex[:8]}", f"quiet-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [busy, quiet], timeout_s=30)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    consumer = BatchConsumer(settings, [busy, quiet], client_id="test", fetch_max_wait_ms=max_wait_ms)
    try:
        # Produced first: a fetch of an empty topic held at the broker would hold the start back too.
        for n in range(3):
            await producer.send(busy, f"buffered-{n}".encode())
        await producer.flush()
        await consumer.start({})
        got = await consumer.next_batch({}, max_records=1, timeout_ms=2000)
        while not got:  # one of the three; the other two stay buffered
            got = await consumer.next_batch({}, max_records=1, timeout_ms=2000)
        await _quiet_fetch_in_flight(consumer, busy)
        drained = await consumer.next_batch({}, max_records=10, timeout_ms=0)
        assert len(got) + len(drained) == 3
        yield consumer, producer, busy
    finally:
        await consumer.stop()
        await producer.stop()


async def test_records_of_a_busy_topic_are_not_held_behind_a_quiet_topics_fetch(kafka_broker: KafkaBroker) -> None:
    # Why the trainer sets fetch_max_wait_ms: with a long one, a new record of the busy topic waits
    # behind the quiet topic's fetch. (Held 30 s at the broker: no machine is slow enough to see the
    # record in the two seconds asked for here, unless aiokafka fetched it beside the quiet fetch.)
    async with _behind_a_quiet_fetch(kafka_broker.bootstrap, max_wait_ms=30_000) as (consumer, producer, busy):
        await producer.send_and_wait(busy, b"new")
        assert await consumer.next_batch({}, max_records=10, timeout_ms=2000) == []

    # The trainer's default keeps such a wait short: the quiet fetch asks the broker to wait at most
    # that long (what the client decides; how long the round trips take is the machine's business).
    default_wait = TrainerSettings.model_fields["fetch_max_wait_ms"].default
    assert default_wait <= 50
    async with _behind_a_quiet_fetch(kafka_broker.bootstrap, max_wait_ms=default_wait) as (consumer, producer, busy):
        assert consumer._consumer._fetcher._fetch_max_wait_ms == default_wait  # noqa: SLF001
        await producer.send_and_wait(busy, b"new")
        assert [r.value for r in await _batch(consumer, "the new record")] == [b"new"]
