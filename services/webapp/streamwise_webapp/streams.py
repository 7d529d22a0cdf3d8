"""Kafka adapters of the web app: it watches the events and dead-letter topics (no consumer
group: it commits nothing and starts at the end of events, the start of dead letters), and it
writes people's feedback to the labels topic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from streamwise_core.adapters.kafka import client_options, make_producer
from streamwise_core.adapters.settings import KafkaSettings, Topics
from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_core.contracts.events import DeadLettered, EventReceived, LabelReceived

from .feed import DeadLetterItem, DeadLetterLog, FreshnessTracker, RateMeter, Sampler

log = logging.getLogger(__name__)

RETRY_S = (1.0, 15.0)
PREVIEW_CHARS = 500
SEND_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 2.0


class StreamWatcher:
    """Counts every event, samples some for the feed, marks acceptance times for freshness,
    and keeps the dead letters."""

    def __init__(
        self, kafka: KafkaSettings, topics: Topics, client_id: str, *, sampler: Sampler, meter: RateMeter,
        freshness: FreshnessTracker, dead_letters: DeadLetterLog, on_sample: Callable[[EventReceived], None],
    ) -> None:
        self._kafka = kafka
        self._topics = topics
        self._client_id = client_id
        self._sampler = sampler
        self._meter = meter
        self._freshness = freshness
        self._dead_letters = dead_letters
        self._on_sample = on_sample
        self.connected = False
        self.problem: str | None = "not connected yet"

    async def run(self) -> None:
        """Consume until cancelled; reconnect with backoff when the broker goes away."""
        backoff = RETRY_S[0]
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except (KafkaError, OSError) as exc:
                self.problem = f"Kafka: {exc!r}"[:300]
                log.warning("watching topics failed, retrying in %.0f s: %r", backoff, exc)
            except Exception as exc:  # a bug must not end the live views
                self.problem = f"{type(exc).__name__}: {exc}"[:300]
                log.exception("watching topics failed")
            self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, RETRY_S[1])

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self._kafka), client_id=self._client_id, group_id=None,
            enable_auto_commit=False, auto_offset_reset="latest",
            request_timeout_ms=self._kafka.request_timeout_ms,
        )
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()  # a start that failed half way leaves its client open
            raise
        try:
            events, dead = await self._partitions(consumer)
            consumer.assign(events + dead)
            if events:
                await consumer.seek_to_end(*events)
            if dead:
                await consumer.seek_to_beginning(*dead)
            self.connected, self.problem = True, None
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
                now = time.monotonic()
                for tp, records in batches.items():
                    if tp.topic == self._topics.events:
                        self._meter.add(len(records), now)
                        for record in records:
                            self._freshness.accepted(tp.partition, record.offset, record.timestamp / 1000)
                            if self._sampler.take(now):
                                self._sample(record.value)
                    else:
                        for record in records:
                            self._dead(tp, record.offset, record.value)
        finally:
            self.connected = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), STOP_TIMEOUT_S)

    async def _partitions(self, consumer: AIOKafkaConsumer) -> tuple[list[TopicPartition], list[TopicPartition]]:
        """Wait for the events topic (the trainer or the init step creates the topics)."""
        while True:
            # ``topics()`` asks for all metadata: it never makes a broker auto-create a topic.
            existing = await consumer.topics()
            if self._topics.events in existing:
                break
            self.problem = f"waiting for topic {self._topics.events}"
            await asyncio.sleep(1.0)

        # As the trainer does: track our topics' metadata and refresh it (aiokafka has no public call).
        wanted = [t for t in (self._topics.events, self._topics.dead_letters) if t in existing]
        client = consumer._client  # noqa: SLF001
        client.set_topics(wanted)
        await client.force_metadata_update()

        def of(topic: str) -> list[TopicPartition]:
            return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]

        return of(self._topics.events), of(self._topics.dead_letters) if self._topics.dead_letters in existing else []

    def _sample(self, value: bytes | None) -> None:
        try:
            event = EventReceived.model_validate_json(value or b"")
        except ValidationError:
            return  # the trainer dead-letters it; the feed shows only readable events
        self._on_sample(event)

    def _dead(self, tp: TopicPartition, offset: int, value: bytes | None) -> None:
        try:
            letter = DeadLettered.model_validate_json(value or b"")
        except ValidationError:
            log.warning("unreadable record on %s at %s:%s", self._topics.dead_letters, tp.partition, offset)
            return
        self._dead_letters.add(DeadLetterItem(
            topic=letter.topic, partition=letter.partition, offset=letter.offset, key=letter.key, reason=letter.reason,
            consumer=letter.consumer, at=letter.at, value_preview=letter.value[:PREVIEW_CHARS],
        ))


class LabelWriter:
    """Writes labels (people's feedback) like ingest does: acks from every in-sync replica."""

    def __init__(self, kafka: KafkaSettings, topic: str, client_id: str) -> None:
        self._kafka = kafka
        self._topic = topic
        self._client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = make_producer(self._kafka, self._client_id)
                try:
                    async with asyncio.timeout(SEND_TIMEOUT_S):
                        await producer.start()
                except (KafkaError, OSError, TimeoutError) as exc:
                    await producer.stop()
                    raise BackendUnavailable(f"Kafka: {exc!r}") from exc
                self._producer = producer
            return self._producer

    async def write(self, label: LabelReceived) -> None:
        producer = await self._started()
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await producer.send_and_wait(self._topic, label.to_bytes(), key=label.id.encode())
        except (KafkaError, TimeoutError) as exc:
            raise BackendUnavailable(f"Kafka: {exc!r}") from exc

    async def close(self) -> None:
        async with self._lock:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None
