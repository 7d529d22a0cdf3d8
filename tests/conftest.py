"""Session-scoped real servers, started lazily on first use and stopped at session end.

Set STREAMWISE_TEST_KAFKA_BOOTSTRAP / STREAMWISE_TEST_REDIS_URL to reuse running servers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from streamwise_devstack import (
    ExternalKafka,
    ExternalRedis,
    KafkaBroker,
    PostgresServer,
    RedisServer,
    TansuBroker,
    wait_for_kafka,
)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker | ExternalKafka]:
    """Apache Kafka 4 (KRaft, single node), or the external one named by the env."""
    external = os.environ.get("STREAMWISE_TEST_KAFKA_BOOTSTRAP")
    if external:
        wait_for_kafka(external, timeout=30)
        yield ExternalKafka(external)
        return
    with KafkaBroker(tmp_path_factory.mktemp("kafka")) as broker:
        yield broker


@pytest.fixture(scope="session")
def tansu_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """Tansu, the memory-only Kafka-compatible broker."""
    with TansuBroker(tmp_path_factory.mktemp("tansu")) as broker:
        yield broker


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer | ExternalRedis]:
    """redis-server without persistence, or the external one named by the env."""
    external = os.environ.get("STREAMWISE_TEST_REDIS_URL")
    if external:
        yield ExternalRedis(external)
        return
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """PostgreSQL with a `streamwise` database, trust auth on 127.0.0.1."""
    with PostgresServer(tmp_path_factory.mktemp("postgres")) as server:
        yield server


REAL_TIER = "deploy/real"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The real-deployment tier runs last: its first use builds images and tools for minutes, and
    every other tier's failures are worth seeing first."""
    items.sort(key=lambda item: REAL_TIER in item.nodeid)
