"""Kafka over SASL_SSL for real: a broker that speaks only TLS with SCRAM-SHA-512 users and
enforces ACLs (``streamwise_devstack.kafka_secured``), each service's user granted exactly its
``kafka_access`` rights. Each user can do its service's work; nothing else gets through."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from aiokafka.protocol.fetch import FetchRequest

from streamwise_core.adapters.kafka import client_options, ensure_topics, make_producer
from streamwise_core.adapters.kafka_access import SERVICE_ACCESS
from streamwise_core.adapters.settings import KafkaSettings, Topics
from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_devstack.kafka_secured import SecuredKafkaBroker

TOPICS = Topics.for_app(f"sec{uuid.uuid4().hex[:6]}", "fraud")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafkaBroker]:
    with SecuredKafkaBroker(tmp_path_factory.mktemp("kafka-secured"), users=list(SERVICE_ACCESS)) as secured:
        for service in SERVICE_ACCESS:
            secured.grant(service, service, TOPICS)
        asyncio.run(ensure_topics(secured.settings("trainer"), TOPICS.all(), timeout_s=60))
        yield secured


async def _write(kafka: KafkaSettings, topic: str) -> None:
    producer = make_producer(kafka, f"test-{uuid.uuid4().hex[:6]}")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", key=b"k")
    finally:
        await producer.stop()


async def _read_one(kafka: KafkaSettings, topic: str) -> bytes:
    """The first record of ``topic``."""
    consumer = AIOKafkaConsumer(**client_options(kafka), group_id=None, auto_offset_reset="earliest", request_timeout_ms=10_000)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        batch = await consumer.getmany(timeout_ms=30_000, max_records=1)
        values = [r.value for records in batch.values() for r in records]
        assert values, f"nothing read from {topic}"
        return values[0]
    finally:
        await consumer.stop()


def test_each_service_user_does_its_own_work(broker: SecuredKafkaBroker) -> None:
    asyncio.run(_write(broker.settings("ingest"), TOPICS.events))
    asyncio.run(_write(broker.settings("ingest"), TOPICS.labels))
    asyncio.run(_write(broker.settings("predictor"), TOPICS.predictions))
    asyncio.run(_write(broker.settings("trainer"), TOPICS.models))
    asyncio.run(_write(broker.settings("webapp"), TOPICS.labels))
    assert asyncio.run(_read_one(broker.settings("trainer"), TOPICS.events)) == b"{}"
    assert asyncio.run(_read_one(broker.settings("webapp"), TOPICS.events)) == b"{}"


@pytest.mark.parametrize(("user", "topic"), [
    ("predictor", "events"), ("predictor", "models"), ("ingest", "predictions"), ("webapp", "events"), ("trainer", "labels"),
])
def test_a_service_user_cannot_write_another_services_topic(broker: SecuredKafkaBroker, user: str, topic: str) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(_write(broker.settings(user), getattr(TOPICS, topic)))


async def _fetch_error(kafka: KafkaSettings, topic: str) -> int:
    """The error code the broker answers a plain Fetch of ``topic`` with (aiokafka's consumer
    only logs a refused fetch and returns nothing)."""
    client = AIOKafkaClient(**client_options(kafka))
    await client.bootstrap()
    try:
        node = next(iter(client.cluster.brokers())).nodeId
        response = await client.send(node, FetchRequest(100, 1, 1 << 20, 0, [(topic, [(0, 0, 1 << 20)])]))
        [(_, [partition])] = response.topics
        return int(partition[1])
    finally:
        await client.close()


@pytest.mark.parametrize(("user", "topic"), [("ingest", "events"), ("predictor", "events"), ("webapp", "predictions")])
def test_a_service_user_cannot_read_what_it_does_not_need(broker: SecuredKafkaBroker, user: str, topic: str) -> None:
    assert asyncio.run(_fetch_error(broker.settings("trainer"), TOPICS.events)) == 0, "the trainer reads the events"
    assert asyncio.run(_fetch_error(broker.settings(user), getattr(TOPICS, topic))) == TopicAuthorizationFailedError.errno


def test_only_the_trainer_may_create_topics(broker: SecuredKafkaBroker) -> None:
    with pytest.raises(BackendUnavailable):
        asyncio.run(ensure_topics(broker.settings("ingest"), [f"{TOPICS.events}-other"], timeout_s=5))


@pytest.mark.parametrize("client", ["wrong password", "no SASL user", "plaintext"])
def test_a_client_without_valid_credentials_is_refused(broker: SecuredKafkaBroker, client: str) -> None:
    kafka = {
        "wrong password": broker.settings("ingest", password="not-the-password"),
        "no SASL user": broker.settings(None),
        "plaintext": KafkaSettings(bootstrap=broker.bootstrap, request_timeout_ms=5000),
    }[client]
    with pytest.raises((KafkaError, OSError, asyncio.TimeoutError)):
        asyncio.run(asyncio.wait_for(_write(kafka, TOPICS.events), 60))


@pytest.fixture(scope="module")
def mtls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredKafkaBroker]:
    """Mutual TLS: the user is the CN of the client's certificate, no SASL."""
    with SecuredKafkaBroker(tmp_path_factory.mktemp("kafka-mtls"), users=["ingest", "predictor", "trainer"], mutual_tls=True) as secured:
        for service in ("ingest", "predictor", "trainer"):
            secured.grant(service, service, TOPICS)
        asyncio.run(ensure_topics(secured.settings("trainer"), TOPICS.all(), timeout_s=60))
        yield secured


def test_with_mutual_tls_the_certificate_is_the_user(mtls_broker: SecuredKafkaBroker) -> None:
    ingest = mtls_broker.settings("ingest")
    assert ingest.security_protocol == "SSL" and ingest.ssl_certfile is not None and ingest.authenticated
    asyncio.run(_write(ingest, TOPICS.events))
    assert asyncio.run(_read_one(mtls_broker.settings("trainer"), TOPICS.events)) == b"{}"
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(_write(mtls_broker.settings("predictor"), TOPICS.events))


def test_with_mutual_tls_a_client_without_a_certificate_is_refused(mtls_broker: SecuredKafkaBroker) -> None:
    with pytest.raises((KafkaError, OSError, asyncio.TimeoutError)):
        asyncio.run(asyncio.wait_for(_write(mtls_broker.settings(None), TOPICS.events), 60))
