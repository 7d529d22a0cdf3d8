"""Kafka adapters shared by the services: producer factory and explicit topic creation."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner

from .errors import BackendUnavailable
from .settings import KafkaSettings


async def send_batches(
    producer: AIOKafkaProducer, topic: str, records: list[tuple[bytes, bytes]]
) -> list[asyncio.Future[object]]:
    """Hand ``(key, value)`` records to the producer as one record batch per partition.

    Partitions are chosen by key with Kafka's default (murmur2) partitioner, as ``send()``
    would; whole batches save most of the producer's per-record cost. Returns the delivery
    futures (one per batch), which the caller awaits or watches.
    """
    partitions = sorted(await producer.partitions_for(topic))
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, value in records:
        by_partition.setdefault(_PARTITIONER(key, partitions, partitions), []).append((key, value))
    futures = []
    for partition, items in by_partition.items():
        batch = producer.create_batch()
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)  # a first record always fits
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


_PARTITIONER = DefaultPartitioner()


def make_producer(kafka: KafkaSettings, client_id: str) -> AIOKafkaProducer:
    """A producer that only reports success once every in-sync replica has the record."""
    return AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=kafka.idempotence,
        linger_ms=2,
        request_timeout_ms=kafka.request_timeout_ms,
        max_request_size=8 * 1024 * 1024,
    )


async def ensure_topics(kafka: KafkaSettings, names: list[str], *, timeout_s: float = 60.0) -> None:
    """Create ``names`` with the configured partition count unless they exist.

    Topics are created explicitly because brokers differ on auto-creation (Tansu makes
    four partitions); retried until ``timeout_s`` since a broker may still be starting.
    """
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap, request_timeout_ms=10_000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [n for n in names if n not in existing]
            if missing:
                try:
                    await admin.create_topics(
                        [NewTopic(n, num_partitions=kafka.partitions, replication_factor=kafka.replication_factor) for n in missing]
                    )
                except TopicAlreadyExistsError:
                    pass
            if set(names) <= set(await admin.list_topics()):
                return
        except (KafkaError, OSError) as exc:
            last = exc
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
    raise BackendUnavailable(f"could not create topics {names} on {kafka.bootstrap}: {last!r}")
