"""Integration tests of the devstack: real Kafka, Tansu, Redis and PostgreSQL servers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from streamwise_devstack import (
    ExternalKafka,
    ExternalRedis,
    KafkaBroker,
    PostgresServer,
    RedisServer,
    TansuBroker,
    create_topics,
    ensure_debian_packages,
)

pytestmark = pytest.mark.integration


def _topic() -> str:
    return f"devstack-{uuid.uuid4().hex[:12]}"


async def _produce(bootstrap: str, topic: str, values: list[bytes], **options: Any) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **options)
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send(topic, value, key=str(i).encode())
        await asyncio.wait_for(producer.flush(), 30)
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, count: int, timeout: float = 60.0) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(received) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            received += [msg.value for msgs in batches.values() for msg in msgs]
    finally:
        await consumer.stop()
    return received


def _values(n: int) -> list[bytes]:
    return [f"message-{i}".encode() for i in range(n)]


async def test_kafka_roundtrip_idempotent_acks_all(
    kafka_broker: KafkaBroker | ExternalKafka,
) -> None:
    topic = _topic()
    await create_topics(kafka_broker.bootstrap, [topic], partitions=2)
    await create_topics(kafka_broker.bootstrap, [topic], partitions=2)  # already exists: no error
    await _produce(kafka_broker.bootstrap, topic, _values(20), enable_idempotence=True, acks="all")
    received = await _consume(kafka_broker.bootstrap, topic, 20)
    assert sorted(received) == sorted(_values(20))


async def test_tansu_roundtrip(tansu_broker: TansuBroker) -> None:
    topic = _topic()
    await create_topics(tansu_broker.bootstrap, [topic], partitions=1)
    # Tansu refuses the idempotent producer (InitProducerId -> UNKNOWN_SERVER_ERROR).
    await _produce(tansu_broker.bootstrap, topic, _values(10), enable_idempotence=False)
    received = await _consume(tansu_broker.bootstrap, topic, 10)
    assert received == _values(10)  # one partition: order is kept


async def test_tansu_create_topics_honours_partitions(tansu_broker: TansuBroker) -> None:
    topic = _topic()
    await create_topics(tansu_broker.bootstrap, [topic], partitions=3)
    admin = AIOKafkaAdminClient(bootstrap_servers=tansu_broker.bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert sorted(p["partition"] for p in described["partitions"]) == [0, 1, 2]


async def test_kafka_kill_and_restart_keeps_messages(
    kafka_broker: KafkaBroker | ExternalKafka,
) -> None:
    if not isinstance(kafka_broker, KafkaBroker):
        pytest.skip("external broker: cannot kill it")
    topic = _topic()
    await create_topics(kafka_broker.bootstrap, [topic])
    await _produce(kafka_broker.bootstrap, topic, _values(5), enable_idempotence=True, acks="all")
    old_pid, bootstrap = kafka_broker.pid, kafka_broker.bootstrap

    await asyncio.to_thread(kafka_broker.kill)
    assert kafka_broker.pid is None
    await asyncio.to_thread(kafka_broker.restart)

    assert kafka_broker.pid not in (None, old_pid)
    assert kafka_broker.bootstrap == bootstrap
    assert await _consume(kafka_broker.bootstrap, topic, 5) == _values(5)


def test_redis_set_get_and_restart_forgets(redis_server: RedisServer | ExternalRedis) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        key = f"devstack:{uuid.uuid4().hex}"
        client.set(key, b"value")
        assert client.get(key) == b"value"
        if not isinstance(redis_server, RedisServer):
            return
        redis_server.restart()
        assert client.get(key) is None  # no RDB, no AOF: nothing survives
    finally:
        client.close()


def test_redis_appendonly_survives_kill(tmp_path: Path) -> None:
    with RedisServer(tmp_path, appendonly=True) as server:
        client = redis.Redis.from_url(server.url)
        try:
            client.set("kept", b"yes")
            server.kill()
            server.start()
            assert client.get("kept") == b"yes"
        finally:
            client.close()


def test_postgres_select_one(postgres_server: PostgresServer) -> None:
    engine = sa.create_engine(postgres_server.url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar() == 1
            assert conn.execute(sa.text("select current_database()")).scalar() == "streamwise"
    finally:
        engine.dispose()


def test_postgres_kill_and_restart_keeps_committed_rows(postgres_server: PostgresServer) -> None:
    engine = sa.create_engine(postgres_server.url)
    table = f"t_{uuid.uuid4().hex[:8]}"
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"create table {table} (v int)"))
            conn.execute(sa.text(f"insert into {table} values (42)"))
        engine.dispose()
        postgres_server.kill()
        postgres_server.start()
        with engine.connect() as conn:
            assert conn.execute(sa.text(f"select v from {table}")).scalar() == 42
    finally:
        engine.dispose()


def test_system_binaries_are_found() -> None:
    paths = ensure_debian_packages({"redis-server": "redis-server", "initdb": "postgresql"})
    assert all(Path(path).is_file() for path in paths.values())


def test_a_terminated_runner_stops_its_servers(tmp_path: Path) -> None:
    """SIGTERM to a process holding a devstack server (as `timeout` or CI sends) stops the
    server too, instead of orphaning it."""
    script = tmp_path / "runner.py"
    script.write_text(
        "import sys, time\nfrom pathlib import Path\nfrom streamwise_devstack import RedisServer\n"
        "with RedisServer(Path(sys.argv[1])) as r:\n    print(r.pid, flush=True)\n    time.sleep(60)\n"
    )
    (tmp_path / "redis").mkdir()
    runner = subprocess.Popen([sys.executable, str(script), str(tmp_path / "redis")], stdout=subprocess.PIPE, text=True)
    assert runner.stdout is not None
    server_pid = int(runner.stdout.readline())
    os.kill(server_pid, 0)  # running
    runner.terminate()
    assert runner.wait(timeout=30) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(server_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"redis-server {server_pid} outlived its runner")
