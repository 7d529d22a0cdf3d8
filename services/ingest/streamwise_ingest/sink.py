"""Kafka adapter of ingest: write a batch and return only once Kafka has all of it."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streamwise_core.errors import BackendUnavailable
from streamwise_core.kafka import send_batches

Record = tuple[bytes, bytes]


def _retrieve(future: asyncio.Future[object]) -> None:
    """Mark the outcome of a delivery nobody waits for any more as seen."""
    if not future.cancelled():
        future.exception()


class KafkaSink:
    """Writes requests' records to Kafka, several concurrent requests in one record batch per
    partition (group commit, one ``_TopicWriter`` per topic)."""

    def __init__(self, producer: AIOKafkaProducer, timeout_s: float) -> None:
        self._producer = producer
        self._timeout_s = timeout_s
        self._writers: dict[str, _TopicWriter] = {}

    async def write(self, topic: str, records: list[Record]) -> None:
        """Send ``(key, value)`` records; raise ``BackendUnavailable`` unless all are acknowledged
        (acks=all) within ``timeout_s``.

        Success means every record is stored. Failure promises nothing: records already handed
        to the producer may still be stored later (the producer keeps retrying them), which is
        why clients retry with the same ids and the trainer ignores repeated ids.
        """
        if not records:
            return
        writer = self._writers.get(topic)
        if writer is None:
            writer = self._writers[topic] = _TopicWriter(self._producer, topic, self._timeout_s)
        try:
            async with asyncio.timeout(self._timeout_s):
                await writer.write(records)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise BackendUnavailable(f"kafka: {exc!r}") from exc


class _TopicWriter:
    """Group commit for one topic. While one flush is on its way to Kafka, the records of the
    requests that come meanwhile gather; the next flush hands them all to the producer as one
    record batch per partition (``send_batches``). A produce request carries one batch per
    partition, so a batch per request would go one broker round trip at a time; gathered, the
    round trip is shared and the producer's per-batch cost paid once. Records keep the order
    their requests came in. Each request waits for the batches of its own flush only.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str, timeout_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s
        self._pending: list[tuple[list[Record], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def write(self, records: list[Record]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((records, done))
        if self._task is None:
            self._task = asyncio.create_task(self._flush_all(), name=f"kafka-sink:{self._topic}")
        await done  # cancelled (the caller's timeout) → its records are still sent, nobody waits

    async def _flush_all(self) -> None:
        try:
            while self._pending:
                flush, self._pending = self._pending, []
                await self._flush(flush)
        finally:
            self._task = None

    async def _flush(self, flush: list[tuple[list[Record], asyncio.Future[None]]]) -> None:
        waiters = [done for _, done in flush]
        try:
            async with asyncio.timeout(self._timeout_s):
                deliveries = await send_batches(self._producer, self._topic, [r for records, _ in flush for r in records])
        except Exception as exc:  # noqa: BLE001 - handed to every request of this flush, which decides
            _settle(waiters, exc)
            return
        for delivery in deliveries:
            delivery.add_done_callback(_retrieve)
        acknowledged = asyncio.gather(*deliveries)
        acknowledged.add_done_callback(lambda f: _settle(waiters, None if f.cancelled() else f.exception()))
        # Wait for this flush before the next, so that the requests of one round trip share it;
        # a flush Kafka does not answer in time goes on alone (its requests time out).
        await asyncio.wait([acknowledged], timeout=self._timeout_s)
        if not acknowledged.done():
            acknowledged.add_done_callback(_retrieve)


def _settle(waiters: list[asyncio.Future[None]], exc: BaseException | None) -> None:
    for done in waiters:
        if done.done():  # its request gave up already
            continue
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)
