"""Kafka adapter of ingest: write a batch and return only once Kafka has all of it."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streamwise_core.errors import BackendUnavailable


class KafkaSink:
    def __init__(self, producer: AIOKafkaProducer, timeout_s: float) -> None:
        self._producer = producer
        self._timeout_s = timeout_s

    async def write(self, topic: str, records: list[tuple[bytes, bytes]]) -> None:
        """Send ``(key, value)`` records; raise ``BackendUnavailable`` unless all are acknowledged."""
        try:
            async with asyncio.timeout(self._timeout_s):
                futures = [await self._producer.send(topic, value, key=key) for key, value in records]
                await asyncio.gather(*futures)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise BackendUnavailable(f"kafka: {exc!r}") from exc
