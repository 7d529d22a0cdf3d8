"""Kafka client helpers that work on Apache Kafka and Tansu: readiness probe, topic creation."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.structs import TopicPartition

__all__ = ["create_topics", "kafka_brokers", "wait_for_kafka", "wait_for_topics"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def _run_in_thread(coro_fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a fresh event loop in a helper thread.

    Works whether or not the calling thread already runs an event loop.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro_fn()))
        except BaseException as exc:  # re-raised in the caller
            error.append(exc)

    thread = threading.Thread(target=target, name="devstack-kafka-probe", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


async def kafka_brokers(bootstrap: str, request_timeout: float = 5.0, options: Mapping[str, Any] | None = None) -> list[int]:
    """Send a metadata request to ``bootstrap`` and return the advertised broker ids
    (``options``: more client keywords, such as TLS and SASL)."""
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(request_timeout * 1000), **(options or {})
    )
    try:
        await client.bootstrap()
        return sorted(b.nodeId for b in client.cluster.brokers())
    finally:
        await client.close()


def wait_for_kafka(
    bootstrap: str, timeout: float = 60.0, *, alive: Callable[[], bool] | None = None,
    options: Mapping[str, Any] | None = None,
) -> None:
    """Block until a metadata request to ``bootstrap`` lists at least one broker."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if alive is not None and not alive():
            raise RuntimeError(f"broker process exited before {bootstrap} answered metadata")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(
                f"{bootstrap} did not answer a metadata request within {timeout:.1f}s "
                f"(last error: {last_error!r})"
            )
        request_timeout = min(5.0, max(remaining, 0.5))
        try:
            if _run_in_thread(functools.partial(kafka_brokers, bootstrap, request_timeout, options)):
                return
        except (TimeoutError, KafkaError, OSError) as exc:
            last_error = exc
        time.sleep(0.2)


async def wait_for_topics(
    client: AIOKafkaClient, names: list[str], partitions: int | None = None, timeout: float = 30.0
) -> None:
    """Poll metadata until each topic has ``partitions`` (default: any) partitions, all led."""
    deadline = time.monotonic() + timeout
    while True:
        metadata = await client.fetch_all_metadata()
        pending = []
        for name in names:
            parts = metadata.partitions_for_topic(name) or set()
            leaders = [metadata.leader_for_partition(TopicPartition(name, p)) for p in parts]
            leaders_ok = all(leader not in (None, -1) for leader in leaders)
            if not parts or not leaders_ok or (partitions is not None and len(parts) < partitions):
                pending.append(name)
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"topics {pending} not visible in metadata after {timeout:.1f}s")
        await asyncio.sleep(0.1)


async def create_topics(
    bootstrap: str, names: list[str], partitions: int = 1, *, timeout: float = 30.0
) -> None:
    """Create topics (replication factor 1) unless they exist, then wait until metadata has them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, num_partitions=partitions, replication_factor=1)
               for n in names if n not in existing]
        if new:
            response = await admin.create_topics(new, timeout_ms=int(timeout * 1000))
            for topic, code, *rest in response.topic_errors:
                if code == 0 or code == TopicAlreadyExistsError.errno:
                    continue
                message = rest[0] if rest else ""
                raise for_code(code)(f"cannot create topic {topic!r}: {message}")
        await wait_for_topics(admin._client, names, timeout=timeout)  # admin has no public client
    finally:
        await admin.close()
