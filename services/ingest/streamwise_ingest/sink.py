"""Kafka adapter of ingest: write a batch and return only once Kafka has all of it."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streamwise_core.errors import BackendUnavailable
from streamwise_core.kafka import send_batches


def _retrieve(future: asyncio.Future[object]) -> None:
    """Mark the outcome of a delivery nobody waits for any more as seen."""
    if not future.cancelled():
        future.exception()


class KafkaSink:
    """Writes a request's records as one record batch per partition (``send_batches``)."""

    def __init__(self, producer: AIOKafkaProducer, timeout_s: float) -> None:
        self._producer = producer
        self._timeout_s = timeout_s

    async def write(self, topic: str, records: list[tuple[bytes, bytes]]) -> None:
        """Send ``(key, value)`` records; raise ``BackendUnavailable`` unless all are acknowledged
        (acks=all) within ``timeout_s``.

        Success means every record is stored. Failure promises nothing: records already handed
        to the producer may still be stored later (the producer keeps retrying them), which is
        why clients retry with the same ids and the trainer ignores repeated ids.
        """
        futures: list[asyncio.Future[object]] = []
        try:
            async with asyncio.timeout(self._timeout_s):
                futures = await send_batches(self._producer, topic, records)
                await asyncio.gather(*futures)
        except (KafkaError, TimeoutError, OSError) as exc:
            for future in futures:
                future.add_done_callback(_retrieve)
            raise BackendUnavailable(f"kafka: {exc!r}") from exc
