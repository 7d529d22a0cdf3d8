"""Topic configs on a real Apache Kafka 4: the topics our code creates carry the module's configs, an
existing topic with other values converges (keeping its other settings), and a trainer resuming below
what retention left says so. On Tansu (``streamwise up``), which cannot alter configs, nothing fails."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import TopicPartition

from streamwise_core.adapters.kafka import ensure_app_topics
from streamwise_core.adapters.settings import KafkaSettings, Settings
from streamwise_core.contracts.topic_config import topic_configs
from streamwise_devstack import KafkaBroker, TansuBroker
from streamwise_trainer.consumer import BatchConsumer

pytestmark = pytest.mark.integration

APP_SPEC = "examples/fraud/lifecycle.toml"
DYNAMIC_TOPIC_CONFIG = 1


def _logged(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger]


def _settings(bootstrap: str, idempotence: bool = True) -> Settings:
    return Settings(app_spec=APP_SPEC, topic_prefix=f"tc{uuid.uuid4().hex[:10]}",  # type: ignore[arg-type]
                    kafka=KafkaSettings(bootstrap=bootstrap, idempotence=idempotence))


async def _described(bootstrap: str, topics: list[str]) -> dict[str, dict[str, tuple[str, int]]]:
    """``{topic: {config: (value, config_source)}}``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
    finally:
        await admin.close()
    return {
        r["resource_name"]: {e["config_names"]: (e["config_value"], e["config_source"]) for e in r["config_entries"]}
        for r in response.to_object()["resources"]
    }


async def _described_once(
    bootstrap: str, topic: str, done: Callable[[dict[str, tuple[str, int]]], bool], deadline_s: float = 60.0,
) -> dict[str, tuple[str, int]]:
    """``topic``'s described configs once ``done`` holds for them (a hang guard of ``deadline_s``)."""
    deadline = time.monotonic() + deadline_s
    while True:
        described = (await _described(bootstrap, [topic]))[topic]
        if done(described):
            return described
        assert time.monotonic() < deadline, f"{topic} never converged: {described}"
        await asyncio.sleep(0.2)


async def _create(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(topic, 1, 1, topic_configs=configs)])
        assert [code for _, code, *_ in response.topic_errors] == [0]
    finally:
        await admin.close()


async def test_created_topics_carry_the_configs(kafka_broker: KafkaBroker) -> None:
    settings = _settings(kafka_broker.bootstrap)
    await ensure_app_topics(settings, timeout_s=30)
    wanted = topic_configs(settings.topics, settings.topic_retention)
    described = await _described(kafka_broker.bootstrap, settings.topics.all())
    for topic, config in wanted.items():
        assert {k: described[topic][k] for k in config} == {k: (v, DYNAMIC_TOPIC_CONFIG) for k, v in config.items()}, topic
    assert described[settings.topics.models]["cleanup.policy"][0] == "compact"


async def test_an_existing_topic_converges(kafka_broker: KafkaBroker, caplog: pytest.LogCaptureFixture) -> None:
    """An events topic made by an older version (compacted, one hour, and a setting of its own)."""
    settings = _settings(kafka_broker.bootstrap)
    events = settings.topics.events
    await _create(kafka_broker.bootstrap, events,
                  {"cleanup.policy": "compact", "retention.ms": "3600000", "max.message.bytes": "2000000"})
    with caplog.at_level(logging.WARNING, logger="streamwise_core.adapters.kafka"):
        await ensure_app_topics(settings, timeout_s=30)
    assert [m for m in _logged(caplog, "streamwise_core.adapters.kafka") if events in m], "the change is logged"
    wanted = topic_configs(settings.topics, settings.topic_retention)[events]
    # The controller has accepted the change; each broker applies it from the metadata log a
    # moment later, so DescribeConfigs may still answer the old values at first.
    described = await _described_once(kafka_broker.bootstrap, events, lambda d: {k: d[k][0] for k in wanted} == wanted)
    assert described["max.message.bytes"] == ("2000000", DYNAMIC_TOPIC_CONFIG), "its other settings stay"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="streamwise_core.adapters.kafka"):
        await ensure_app_topics(settings, timeout_s=30)
    assert not _logged(caplog, "streamwise_core.adapters.kafka"), "nothing left to change"


async def test_tansu_takes_the_configs_and_does_not_fail(tansu_broker: TansuBroker, caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(tansu_broker.bootstrap, idempotence=False)
    await _create(tansu_broker.bootstrap, settings.topics.predictions, {"retention.ms": "1000"})
    with caplog.at_level(logging.WARNING, logger="streamwise_core.adapters.kafka"):
        await ensure_app_topics(settings, timeout_s=30)  # Tansu has no AlterConfigs: logged, not raised
    assert any(settings.topics.predictions in m for m in _logged(caplog, "streamwise_core.adapters.kafka"))
    described = await _described(tansu_broker.bootstrap, [settings.topics.events])
    assert described[settings.topics.events]["retention.ms"][0] == str(settings.topic_retention.events_ms)


async def test_resuming_below_the_earliest_offset_is_reported(
    kafka_broker: KafkaBroker, caplog: pytest.LogCaptureFixture,
) -> None:
    """Retention deleted offsets 0-4 (``delete_records`` does what retention would): a checkpoint that
    learned up to offset 1 goes on from offset 5, and the trainer says three records are skipped."""
    settings = _settings(kafka_broker.bootstrap)
    topic = settings.topics.events
    await ensure_app_topics(settings, timeout_s=30)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    await producer.start()
    try:
        for n in range(8):
            await producer.send_and_wait(topic, str(n).encode())
    finally:
        await producer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(before_offset=5)})
    finally:
        await admin.close()
    consumer = BatchConsumer(settings.kafka, [topic], client_id="test", fetch_max_wait_ms=50)
    positions = {f"{topic}:0": 1}
    try:
        with caplog.at_level(logging.WARNING, logger="streamwise_trainer.consumer"):
            await consumer.start(positions)
        [warning] = _logged(caplog, "streamwise_trainer.consumer")
        assert f"{topic}:0: resuming at offset 2" in warning and "before offset 5: 3 records are skipped" in warning
        got: list = []
        async with asyncio.timeout(60):  # a hang guard: the records are there already
            while len(got) < 3:
                got += await consumer.next_batch(positions, max_records=10, timeout_ms=2000)
        assert [r.offset for r in got] == [5, 6, 7]
    finally:
        await consumer.stop()
