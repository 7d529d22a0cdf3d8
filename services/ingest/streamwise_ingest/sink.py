"""Kafka adapter of ingest: write a batch and return only once Kafka has all of it."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streamwise_core.adapters.kafka import send_batches
from streamwise_core.contracts.errors import BackendUnavailable

Record = tuple[bytes, bytes]


def _expire(done: asyncio.Future[None]) -> None:
    """A request's deadline passed before Kafka answered for it."""
    if not done.done():
        done.set_exception(TimeoutError())


def _wake(acknowledged: asyncio.Future[None]) -> None:
    if not acknowledged.done():
        acknowledged.set_result(None)


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
            await writer.write(records)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise BackendUnavailable(f"kafka: {exc!r}") from exc


class _TopicWriter:
    """Group commit for one topic. While one flush is on its way to Kafka, the records of the
    requests that come meanwhile gather; the next flush hands them all to the producer as one
    record batch per partition (``send_batches``). A produce request carries one batch per
    partition, so a batch per request would go one broker round trip at a time; gathered, the
    round trip is shared and the producer's per-batch cost paid once. Records keep the order
    their requests came in. Each request waits for the batches of its own flush only, and at
    most ``timeout_s`` from the moment it came (then it fails with ``TimeoutError``).

    The waiting is done with futures, callbacks and timers (no ``asyncio.timeout`` per request,
    no ``gather``/``wait`` per flush): a single request costs one future and one timer.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str, timeout_s: float) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s
        self._pending: list[tuple[list[Record], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def write(self, records: list[Record]) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append((records, done))
        if self._task is None:
            self._task = loop.create_task(self._flush_all(), name=f"kafka-sink:{self._topic}")
        deadline = loop.call_later(self._timeout_s, _expire, done)
        try:
            await done  # cancelled (the caller gave up) → its records are still sent, nobody waits
        finally:
            deadline.cancel()

    async def _flush_all(self) -> None:
        try:
            while self._pending:
                flush, self._pending = self._pending, []
                await self._flush(flush)
        finally:
            self._task = None

    async def _flush(self, flush: list[tuple[list[Record], asyncio.Future[None]]]) -> None:
        waiters = [done for _, done in flush]
        records = flush[0][0] if len(flush) == 1 else [r for records, _ in flush for r in records]
        try:
            async with asyncio.timeout(self._timeout_s):
                deliveries = await send_batches(self._producer, self._topic, records)
        except Exception as exc:  # noqa: BLE001 - handed to every request of this flush, which decides
            _settle(waiters, exc)
            return
        loop = asyncio.get_running_loop()
        acknowledged: asyncio.Future[None] = loop.create_future()
        outcome = _Outcome(waiters, len(deliveries), acknowledged)
        for delivery in deliveries:
            delivery.add_done_callback(outcome.delivered)
        if acknowledged.done():
            return
        # Wait for this flush before the next, so that the requests of one round trip share it;
        # a flush Kafka does not answer in time goes on alone (its requests time out).
        timer = loop.call_later(self._timeout_s, _wake, acknowledged)
        try:
            await acknowledged
        finally:
            timer.cancel()


class _Outcome:
    """Settles the requests of one flush once every delivery of it succeeded, or at the first
    one that failed (with its exception), and then sets ``acknowledged``. Every delivery's
    outcome is retrieved, also the ones nobody waits for any more."""

    __slots__ = ("_waiters", "_left", "_acknowledged")

    def __init__(self, waiters: list[asyncio.Future[None]], deliveries: int, acknowledged: asyncio.Future[None]) -> None:
        self._waiters: list[asyncio.Future[None]] | None = waiters
        self._left = deliveries
        self._acknowledged = acknowledged
        if not deliveries:
            self._finish(None)

    def delivered(self, delivery: asyncio.Future[object]) -> None:
        self._left -= 1
        if delivery.cancelled():
            exc: BaseException | None = asyncio.CancelledError()
        else:
            exc = delivery.exception()  # also marks it seen
        if exc is not None or self._left == 0:
            self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        if self._waiters is None:  # settled already, by an earlier failure
            return
        _settle(self._waiters, exc)
        self._waiters = None
        if not self._acknowledged.done():
            self._acknowledged.set_result(None)


def _settle(waiters: list[asyncio.Future[None]], exc: BaseException | None) -> None:
    for done in waiters:
        if done.done():  # its request gave up already
            continue
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)
