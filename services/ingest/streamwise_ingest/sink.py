"""Kafka adapter of ingest: write a batch and return only once Kafka has all of it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.errors import KafkaError

from streamwise_core.errors import BackendUnavailable


def _retrieve(future: asyncio.Future[object]) -> None:
    """Mark the outcome of a delivery nobody waits for any more as seen."""
    if not future.cancelled():
        future.exception()


class KafkaSink:
    """Writes a request's records as one record batch per partition.

    Partitions are chosen by key with Kafka's default (murmur2) partitioner, as ``send()``
    would; handing the producer whole batches instead of single records saves most of its
    per-record cost (see ``bench/ingest_throughput.py``).
    """

    def __init__(self, producer: AIOKafkaProducer, timeout_s: float) -> None:
        self._producer = producer
        self._timeout_s = timeout_s
        self._partitioner = DefaultPartitioner()

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
                partitions = sorted(await self._producer.partitions_for(topic))
                by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
                for key, value in records:
                    by_partition.setdefault(self._partitioner(key, partitions, partitions), []).append((key, value))
                for partition, items in by_partition.items():
                    for batch in self._batches(items):
                        futures.append(await self._producer.send_batch(batch, topic, partition=partition))
                await asyncio.gather(*futures)
        except (KafkaError, TimeoutError, OSError) as exc:
            for future in futures:
                future.add_done_callback(_retrieve)
            raise BackendUnavailable(f"kafka: {exc!r}") from exc

    def _batches(self, items: list[tuple[bytes, bytes]]) -> Iterator[BatchBuilder]:
        batch = self._producer.create_batch()
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:
                yield batch
                batch = self._producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)  # a first record always fits
        yield batch
