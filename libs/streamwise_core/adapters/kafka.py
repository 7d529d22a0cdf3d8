"""Kafka adapters shared by the services: client security, producer factory and explicit topic creation."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner

from streamwise_core.adapters.settings import KafkaSettings, Settings
from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_core.contracts.topic_config import topic_configs


async def send_batches(
    producer: AIOKafkaProducer, topic: str, records: list[tuple[bytes, bytes]]
) -> list[asyncio.Future[object]]:
    """Hand ``(key, value)`` records to the producer as one record batch per partition.

    Partitions are chosen by key with Kafka's default (murmur2) partitioner, as ``send()``
    would; whole batches save most of the producer's per-record cost. Each batch is closed
    before it is handed over (``BatchBuilder.close``): aiokafka holds an open batch for
    ``linger_ms`` in case ``send()`` adds to it, and ours are complete. Returns the delivery
    futures (one per batch), which the caller awaits or watches.
    """
    partitions = sorted(await producer.partitions_for(topic))
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    if len(partitions) == 1:  # murmur2 is Python code: ~7 µs a key, for the answer it must give
        by_partition[partitions[0]] = records
    else:
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
        batch.close()
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


_PARTITIONER = DefaultPartitioner()
log = logging.getLogger(__name__)


class RecordBuffer:
    """Records written off the request path: ``add`` only appends to a buffer; a background
    task hands what gathered to ``send_batches`` every ``linger_s``, so many requests share
    one record batch per partition (and one produce request) instead of one each.

    Delivery is best effort, for records nobody waits for (the predictions topic): a failed
    or late batch is logged with its size, and past ``max_pending`` records waiting (a broker
    that is down) new ones are dropped and counted instead of filling memory.
    """

    def __init__(
        self, producer: AIOKafkaProducer, topic: str, *, linger_s: float = 0.01, max_pending: int = 100_000,
        send_timeout_s: float = 5.0,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._linger_s = linger_s
        self._max_pending = max_pending
        self._send_timeout_s = send_timeout_s
        self._pending: list[tuple[bytes, bytes]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0
        """Records refused because ``max_pending`` were waiting."""
        self.failed = 0
        """Records handed to the producer and not delivered (or not handed over in time)."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"record-buffer:{self._topic}")

    def add(self, records: list[tuple[bytes, bytes]]) -> None:
        """Queue ``records`` for the next batch (never waits)."""
        if len(self._pending) + len(records) > self._max_pending:
            if self.dropped == 0 or self.dropped % 10_000 < len(records):
                log.warning("%s: %s records waiting for Kafka, dropping new ones (%s so far)", self._topic, len(self._pending),
                            self.dropped + len(records))
            self.dropped += len(records)
            return
        self._pending += records
        self._wake.set()

    async def _run(self) -> None:
        while not self._closing:
            await self._wake.wait()
            if not self._closing:
                await asyncio.sleep(self._linger_s)
            await self._flush()

    async def _flush(self) -> None:
        self._wake.clear()
        records, self._pending = self._pending, []
        if not records:
            return
        try:
            async with asyncio.timeout(self._send_timeout_s):
                deliveries = await send_batches(self._producer, self._topic, records)
        except Exception as exc:  # noqa: BLE001 - best effort: log, keep the task alive for later records
            self._failed(len(records), exc)
            return
        for delivery in deliveries:
            delivery.add_done_callback(functools.partial(self._delivered, n=len(records)))

    def _delivered(self, delivery: asyncio.Future[object], n: int) -> None:
        if not delivery.cancelled() and delivery.exception() is not None:
            self._failed(n, delivery.exception())

    def _failed(self, n: int, exc: BaseException | None) -> None:
        self.failed += n
        log.warning("%s: up to %s record(s) not written: %r", self._topic, n, exc)

    async def close(self) -> None:
        """Hand over what is still buffered and stop (call it before stopping the producer)."""
        self._closing = True
        self._wake.set()
        if self._task is None:
            await self._flush()
            return
        try:
            await self._task
        except asyncio.CancelledError:
            self._task.cancel()
            raise


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """The connection keywords of every aiokafka client (producer, consumer, admin): the
    bootstrap servers, and TLS and SASL as the settings say."""
    options: dict[str, Any] = {"bootstrap_servers": kafka.bootstrap, "security_protocol": kafka.security_protocol}
    if kafka.encrypted:
        context = create_ssl_context(
            cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None,
            certfile=str(kafka.ssl_certfile) if kafka.ssl_certfile else None,
            keyfile=str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None,
        )
        context.check_hostname = kafka.ssl_check_hostname
        options["ssl_context"] = context
    if kafka.security_protocol.startswith("SASL_"):
        options.update(
            sasl_mechanism=kafka.sasl_mechanism, sasl_plain_username=kafka.sasl_username,
            sasl_plain_password=kafka.sasl_password.get_secret_value(),
        )
    return options


def make_producer(kafka: KafkaSettings, client_id: str) -> AIOKafkaProducer:
    """A producer that only reports success once every in-sync replica has the record."""
    return AIOKafkaProducer(
        **client_options(kafka),
        client_id=client_id,
        acks="all",
        enable_idempotence=kafka.idempotence,
        linger_ms=2,
        request_timeout_ms=kafka.request_timeout_ms,
        max_request_size=8 * 1024 * 1024,
    )


async def ensure_app_topics(settings: Settings, *, timeout_s: float = 60.0) -> None:
    """The application's five topics, created or converged with their configs (``topic_config.py``)."""
    configs = topic_configs(settings.topics, settings.topic_retention)
    await ensure_topics(settings.kafka, settings.topics.all(), configs=configs, timeout_s=timeout_s)


async def ensure_topics(
    kafka: KafkaSettings, names: list[str], *, configs: Mapping[str, Mapping[str, str]] | None = None,
    timeout_s: float = 60.0,
) -> None:
    """Create ``names`` with the configured partition count unless they exist.

    ``configs`` (Kafka topic configs by topic name) are given to a topic when it is created, and
    applied to one that already exists with other values, so an upgrade converges.
    Topics are created explicitly because brokers differ on auto-creation (Tansu makes
    four partitions); retried until ``timeout_s`` since a broker may still be starting.
    """
    configs = configs or {}
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        admin = AIOKafkaAdminClient(**client_options(kafka), request_timeout_ms=10_000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [n for n in names if n not in existing]
            if missing:
                try:
                    response = await admin.create_topics([
                        NewTopic(n, num_partitions=kafka.partitions, replication_factor=kafka.replication_factor,
                                 topic_configs=dict(configs.get(n, {})))
                        for n in missing
                    ])
                except TopicAlreadyExistsError:
                    pass
                else:
                    for topic, code, *rest in response.topic_errors:
                        if code not in (0, TopicAlreadyExistsError.errno):
                            raise for_code(code)(f"cannot create topic {topic!r}: {rest[0] if rest else ''}")
            if set(names) <= set(await admin.list_topics()):
                await _converge_configs(admin, {n: configs[n] for n in names if n in existing and configs.get(n)})
                return
        except (KafkaError, OSError) as exc:
            last = exc
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
    raise BackendUnavailable(f"could not create topics {names} on {kafka.bootstrap}: {last!r}")


_DYNAMIC_TOPIC_CONFIG = 1
"""DescribeConfigs ``config_source`` of a value set on the topic itself (not a broker default)."""


async def _converge_configs(admin: AIOKafkaAdminClient, wanted: Mapping[str, Mapping[str, str]]) -> None:
    """Give the existing topics in ``wanted`` those config values where theirs differ.

    aiokafka has only the non-incremental AlterConfigs, which replaces every value set on a topic:
    the topic's other values (``min.insync.replicas`` from a Strimzi KafkaTopic, say) are sent along.
    A broker without AlterConfigs (Tansu) or a refused change is logged, not raised: the topics exist
    and work, with the retention they had.
    """
    if not wanted:
        return
    try:
        [described] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in wanted])
    except KafkaError as exc:
        log.warning("topics %s: cannot read their configs, left as they are (%r)", list(wanted), exc)
        return
    alter: list[ConfigResource] = []
    for resource in described.to_object()["resources"]:
        topic, entries = resource["resource_name"], resource["config_entries"]
        if resource["error_code"]:
            log.warning("topic %s: cannot read its configs, left as they are: %s %s", topic,
                        for_code(resource["error_code"]).__name__, resource["error_message"] or "")
            continue
        current = {e["config_names"]: e["config_value"] for e in entries}
        changed = {k: v for k, v in wanted[topic].items() if current.get(k) != v}
        if not changed:
            continue
        own = {e["config_names"]: e["config_value"] for e in entries if e.get("config_source") == _DYNAMIC_TOPIC_CONFIG}
        if None in own.values():  # a sensitive value is not described: it could not be sent back
            log.warning("topic %s: configs %s differ from %s, not changed (it holds sensitive values)", topic,
                        {k: current.get(k) for k in changed}, changed)
            continue
        log.warning("topic %s: changing configs %s to %s", topic, {k: current.get(k) for k in changed}, changed)
        alter.append(ConfigResource(ConfigResourceType.TOPIC, topic, configs={**own, **wanted[topic]}))
    if not alter:
        return
    try:
        responses = await admin.alter_configs(alter)
    except KafkaError as exc:
        log.warning("topics %s keep their configs: the broker cannot change them (%r)", [r.name for r in alter], exc)
        return
    for response in responses:
        for code, message, _type, topic in response.resources:
            if code:
                log.warning("topic %s keeps its configs: %s %s", topic, for_code(code).__name__, message or "")
