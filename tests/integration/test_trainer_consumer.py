"""The trainer's batch consumer on Apache Kafka: a quiet topic does not hold the busy one back.

aiokafka keeps one fetch in flight per broker. When the events topic has records buffered and
the labels topic has none, the labels fetch waits at the broker for data (up to
``fetch_max_wait_ms``), and the next events fetch waits behind it once the buffer is drained.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaProducer

from streamwise_core.kafka import ensure_topics
from streamwise_core.settings import KafkaSettings
from streamwise_devstack import KafkaBroker
from streamwise_trainer.consumer import BatchConsumer
from streamwise_trainer.settings import TrainerSettings


async def _wait_behind_a_quiet_fetch(bootstrap: str, max_wait_ms: int) -> float:
    """Seconds from producing a record to the consumer handing it over, when the busy topic's
    buffer was just drained while a fetch for the quiet topic alone is held at the broker."""
    settings = KafkaSettings(bootstrap=bootstrap)
    busy, quiet = f"busy-{uuid.uuid4().hex[:8]}", f"quiet-{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [busy, quiet], timeout_s=30)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    consumer = BatchConsumer(settings, [busy, quiet], client_id="test", fetch_max_wait_ms=max_wait_ms)
    try:
        await consumer.start({})
        for n in range(3):
            await producer.send(busy, f"buffered-{n}".encode())
        await producer.flush()
        got: list = []
        while not got:  # one of the three; the other two stay buffered
            got = await consumer.next_batch({}, max_records=1, timeout_ms=2000)
        # Records buffered for longer than aiokafka's prefetch backoff (0.1 s): the quiet topic
        # is fetched alone, and that fetch waits at the broker for data.
        await asyncio.sleep(0.3)
        drained = await consumer.next_batch({}, max_records=10, timeout_ms=0)
        assert len(got) + len(drained) == 3
        sent = time.monotonic()
        await producer.send_and_wait(busy, b"new")
        got = []
        while not got:
            got = await consumer.next_batch({}, max_records=10, timeout_ms=2000)
        return time.monotonic() - sent
    finally:
        await consumer.stop()
        await producer.stop()


async def test_records_of_a_busy_topic_are_not_held_behind_a_quiet_topics_fetch(kafka_broker: KafkaBroker) -> None:
    default_wait = TrainerSettings.model_fields["fetch_max_wait_ms"].default
    assert default_wait <= 50
    held = await _wait_behind_a_quiet_fetch(kafka_broker.bootstrap, max_wait_ms=1500)
    prompt = await _wait_behind_a_quiet_fetch(kafka_broker.bootstrap, max_wait_ms=default_wait)
    assert held > 0.5, f"with a 1.5 s wait the record should have waited behind the quiet fetch ({held:.3f} s)"
    assert prompt < 0.25, f"with the trainer's {default_wait} ms it should come promptly ({prompt:.3f} s)"
