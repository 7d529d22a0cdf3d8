"""The SQL model registry on real SQLite and PostgreSQL, and the trainer's Publisher when
PostgreSQL goes away and comes back (no mocks)."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.adapters.registry import Registry, migrate
from streamwise_core.adapters.registry.repository import MIGRATIONS
from streamwise_core.adapters.settings import Topics
from streamwise_core.contracts.appspec import load_app_spec
from streamwise_core.contracts.codec import ModelMeta, verify
from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_core.contracts.events import EventReceived, ModelPublished
from streamwise_core.contracts.signing import Signer
from streamwise_devstack import ExternalKafka, ExternalRedis, KafkaBroker, PostgresServer, RedisServer, create_topics
from streamwise_trainer.learning import Record, Snapshot, Trainer
from streamwise_trainer.publisher import Publisher

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_app_spec(ROOT / "examples/fraud/streamwise.toml")
SIGNER = Signer({"k1": b"integration-test-signing-key-1"})

HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()
"""The newest migration: a database brought up to date is stamped with it."""


def _alembic_config(url: str) -> Config:
    """The same Alembic config ``migrate`` builds."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def _pg_admin(server: PostgresServer) -> psycopg.Connection:
    return psycopg.connect(host=server.host, port=server.port, user="postgres", dbname="postgres",
                           autocommit=True, connect_timeout=5)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new database on the session PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nested' / 'registry.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"reg_{uuid.uuid4().hex[:12]}"
    with _pg_admin(server) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@{server.host}:{server.port}/{name}"
    with _pg_admin(server) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def registry(db_url: str) -> Iterator[Registry]:
    migrate(db_url)
    reg = Registry.from_url(db_url)
    try:
        yield reg
    finally:
        reg.close()


def _meta(app: str, version: int, *, model: str = "fraud-lr", created_at: datetime | None = None) -> ModelMeta:
    return ModelMeta(
        app=app, model=model, version=version, task="binary", classes=[False, True],
        examples_seen=100 * version,
        metrics={"accuracy": 0.5 + version / 100, "log_loss": 0.693 - version / 1000},
        offsets={f"streamwise.{app}.events:0": 10 * version, f"streamwise.{app}.labels:0": 3 * version},
        blob_sha256=hashlib.sha256(f"blob-{version}".encode()).hexdigest(),
        created_at=created_at or datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC) + timedelta(minutes=version),
    )


def _as_utc(value: datetime) -> datetime:
    """SQLite keeps no zone: its naive datetimes are UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _alembic_heads(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(sa.text("SELECT version_num FROM alembic_version"))]
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- Registry


def test_migrate_twice_is_idempotent(db_url: str) -> None:
    migrate(db_url)
    assert {"model_versions", "alembic_version"} <= _tables(db_url)
    assert _alembic_heads(db_url) == [HEAD]
    migrate(db_url)
    assert _alembic_heads(db_url) == [HEAD]

    # Rows survive a second migrate.
    reg = Registry.from_url(db_url)
    try:
        assert reg.record_version(_meta("app", 1), "k1")
        migrate(db_url)
        assert [r.version for r in reg.versions("app", "fraud-lr")] == [1]
    finally:
        reg.close()


def test_a_url_encoded_password_migrates_and_records(postgres_server: PostgresServer) -> None:
    """Trust authentication on the test server accepts any password: what matters is that ``%``
    in the URL (``p@ss`` encoded) reaches the driver intact instead of crashing Alembic's config."""
    name = f"reg_{uuid.uuid4().hex[:12]}"
    with _pg_admin(postgres_server) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres:p%40ss%25@{postgres_server.host}:{postgres_server.port}/{name}"
    migrate(url)
    registry = Registry.from_url(url)
    try:
        meta = ModelMeta(app="a", model="m", version=1, task="binary", examples_seen=1)
        assert registry.record_version(meta, "k1")
        assert [v.version for v in registry.versions("a", "m")] == [1]
    finally:
        registry.close()
        with _pg_admin(postgres_server) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _postgres_db(server: PostgresServer) -> tuple[str, str]:
    name = f"reg_{uuid.uuid4().hex[:12]}"
    with _pg_admin(server) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"postgresql+psycopg://postgres@{server.host}:{server.port}/{name}"


def _drop_db(server: PostgresServer, name: str) -> None:
    with _pg_admin(server) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_migrations_wait_for_each_other_on_an_advisory_lock(postgres_server: PostgresServer) -> None:
    """While another session holds the migration lock, migrate waits (PostgreSQL shows it waiting
    on that advisory lock); released, it migrates."""
    from concurrent.futures import ThreadPoolExecutor

    from streamwise_core.adapters.registry.migrations_lock import MIGRATION_LOCK

    name, url = _postgres_db(postgres_server)
    try:
        # The pool outlives the holder's connection: a failed assertion closes the connection
        # (releasing the lock) before the pool waits for migrate.
        with ThreadPoolExecutor(1) as pool:
            with psycopg.connect(host=postgres_server.host, port=postgres_server.port, user="postgres", dbname=name, autocommit=True) as holder:
                holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
                running = pool.submit(migrate, url)
                deadline = time.monotonic() + 60
                waiting = 0
                while not waiting and not running.done() and time.monotonic() < deadline:
                    waiting = holder.execute(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                    ).fetchone()[0]
                    time.sleep(0.05)
                assert waiting == 1, "migrate did not wait on the advisory lock"
                assert not running.done() and "alembic_version" not in _tables(url)
                holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
            running.result(timeout=120)
        assert _alembic_heads(url) == [HEAD]
    finally:
        _drop_db(postgres_server, name)


def test_concurrent_migrations_of_an_empty_database_all_succeed(postgres_server: PostgresServer) -> None:
    """The trainer, the web app's init container and compose's migrate step start together: four
    processes (Alembic's context is per process) migrate one empty database at once."""
    name, url = _postgres_db(postgres_server)
    script = "import sys; from streamwise_core.adapters.registry import migrate; migrate(sys.argv[1])"
    try:
        runs = [subprocess.Popen([sys.executable, "-c", script, url], stderr=subprocess.PIPE, text=True) for _ in range(4)]
        for run in runs:
            _, err = run.communicate(timeout=300)
            assert run.returncode == 0, err[-2000:]
        assert _alembic_heads(url) == [HEAD]
    finally:
        _drop_db(postgres_server, name)


def test_record_version_and_versions_newest_first(registry: Registry) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    for version in (2, 1, 3):  # insertion order is not the answer order
        assert registry.record_version(_meta(app, version), "k1") is True
    registry.record_version(_meta(app, 9, model="other-model"), "k1")
    registry.record_version(_meta(f"{app}-x", 7), "k1")

    rows = registry.versions(app, "fraud-lr")
    assert [r.version for r in rows] == [3, 2, 1]
    for row in rows:
        meta = _meta(app, row.version)
        assert (row.app, row.model, row.examples_seen) == (app, "fraud-lr", meta.examples_seen)
        assert row.metrics == meta.metrics  # JSON floats come back exactly
        assert row.offsets == meta.offsets
        assert all(isinstance(v, int) for v in row.offsets.values())
        assert row.river_version == meta.river_version
        assert row.blob_sha256 == meta.blob_sha256
        assert row.key_id == "k1"
        assert _as_utc(row.created_at) == meta.created_at

    assert [r.version for r in registry.versions(app, "fraud-lr", limit=2)] == [3, 2]
    assert [r.version for r in registry.versions(app, "other-model")] == [9]
    assert registry.versions(app, "missing-model") == []


def test_metrics_and_offsets_json_roundtrip_edge_values(registry: Registry) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    meta = _meta(app, 1).model_copy(update={
        "metrics": {"tiny": 1e-300, "neg": -0.0001234, "one": 1.0, "pi": 3.141592653589793, "ünïcode": 0.25},
        "offsets": {},
    })
    assert registry.record_version(meta, "k1")
    [row] = registry.versions(app, "fraud-lr")
    assert row.metrics == meta.metrics
    assert row.offsets == {}


def test_duplicate_version_returns_false_and_keeps_first_row(registry: Registry) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    first = _meta(app, 1)
    assert registry.record_version(first, "k1") is True
    retried = first.model_copy(update={"examples_seen": 555, "metrics": {"accuracy": 0.01}})
    assert registry.record_version(retried, "k2") is False
    [row] = registry.versions(app, "fraud-lr")
    assert (row.examples_seen, row.metrics, row.key_id) == (100, first.metrics, "k1")
    # The failed insert left the registry usable.
    assert registry.record_version(_meta(app, 2), "k1") is True
    assert [r.version for r in registry.versions(app, "fraud-lr")] == [2, 1]


def test_alembic_downgrade_to_base_and_upgrade_again(db_url: str) -> None:
    migrate(db_url)
    reg = Registry.from_url(db_url)
    try:
        assert reg.record_version(_meta("app", 1), "k1")
    finally:
        reg.close()

    cfg = _alembic_config(db_url)
    command.downgrade(cfg, "base")
    assert "model_versions" not in _tables(db_url)
    assert _alembic_heads(db_url) == []

    command.upgrade(cfg, "head")
    assert "model_versions" in _tables(db_url)
    assert _alembic_heads(db_url) == [HEAD]
    engine = sa.create_engine(db_url)
    try:
        indexes = {ix["name"] for ix in sa.inspect(engine).get_indexes("model_versions")}
        uniques = {uc["name"] for uc in sa.inspect(engine).get_unique_constraints("model_versions")}
    finally:
        engine.dispose()
    assert "ix_model_versions_app" in indexes
    assert "uq_model_version" in uniques or "uq_model_version" in indexes

    migrate(db_url)  # and migrate() still agrees it is at head
    reg = Registry.from_url(db_url)
    try:
        assert reg.versions("app", "fraud-lr") == []  # the downgrade dropped the data
        assert reg.record_version(_meta("app", 1), "k1") is True
        assert reg.record_version(_meta("app", 1), "k1") is False  # the unique constraint is back
    finally:
        reg.close()


# --------------------------------------------------------------------------- Publisher


def _record(topic: str, offset: int, event: EventReceived) -> Record:
    return Record(topic, 0, offset, event.id.encode(), event.to_bytes())


def _trainer_with_examples(topics: Topics, n: int) -> Trainer:
    trainer = Trainer(SPEC, topics)
    now = datetime.now(UTC)
    for i in range(n):
        fraud = i % 3 == 0
        event = EventReceived(
            id=f"e{i}",
            features={
                "amount": 900.0 if fraud else 40.0 + i, "hour": 3 if fraud else 14, "distance_km": 800.0 if fraud else 5.0,
                "is_foreign": fraud, "card_present": not fraud, "merchant": "electronics" if fraud else "grocery",
                "txn_last_hour": 1,
            },
            label=fraud,
            timestamp=now,
        )
        assert trainer.handle(_record(topics.events, i, event)) is None
    return trainer


def _more(trainer: Trainer, topics: Topics, start: int, n: int) -> None:
    now = datetime.now(UTC)
    for i in range(start, start + n):
        event = EventReceived(
            id=f"e{i}",
            features={"amount": 20.0, "hour": 12, "distance_km": 1.0, "is_foreign": False, "card_present": True,
                      "merchant": "fuel", "txn_last_hour": 0},
            label=False,
            timestamp=now,
        )
        assert trainer.handle(_record(topics.events, i, event)) is None


async def _consume_models(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list[ModelPublished]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    out: list[ModelPublished] = []
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            out += [ModelPublished.from_bytes(m.value) for msgs in batches.values() for m in msgs]
    finally:
        await consumer.stop()
    return out


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    with PostgresServer(tmp_path / "pg") as server:
        yield server


async def test_publisher_defers_registry_rows_while_postgres_is_down(
    private_postgres: PostgresServer,
    redis_server: RedisServer | ExternalRedis,
    kafka_broker: KafkaBroker | ExternalKafka,
) -> None:
    prefix = f"it-{uuid.uuid4().hex[:8]}"
    topics = Topics.for_app(prefix, SPEC.name)
    await create_topics(kafka_broker.bootstrap, [topics.models])
    url = private_postgres.url
    await asyncio.to_thread(migrate, url)

    registry = Registry.from_url(url)
    store = ModelStore.from_url(redis_server.url, prefix, SPEC.name)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    await producer.start()
    trainer = _trainer_with_examples(topics, 30)
    model = SPEC.model.name
    snapshots: list[Snapshot] = []
    try:
        publisher = Publisher(store, registry, producer, topics.models)

        # Up: Redis and the registry both get v1.
        snapshots.append(trainer.snapshot(SIGNER))
        await publisher.deliver(snapshots[-1])
        assert publisher.registry_backlog == 0
        assert [r.version for r in await asyncio.to_thread(registry.versions, SPEC.name, model)] == [1]

        # Down: Redis still gets every version, the registry rows pile up.
        private_postgres.stop()
        with pytest.raises(BackendUnavailable):
            await asyncio.to_thread(registry.versions, SPEC.name, model)
        for expected_backlog in (1, 2, 3):
            _more(trainer, topics, 100 * expected_backlog, 5)
            snapshots.append(trainer.snapshot(SIGNER))
            await publisher.deliver(snapshots[-1])
            assert publisher.registry_backlog == expected_backlog
            assert await store.current_version(model) == snapshots[-1].meta.version
        await publisher.flush_registry()  # still down: nothing lost, nothing drained
        assert publisher.registry_backlog == 3

        for snap in snapshots:
            signed = await store.load(model, snap.meta.version)
            assert signed is not None and verify(signed, SIGNER).version == snap.meta.version
        checkpoint = await store.load_checkpoint(model)
        assert checkpoint is not None and verify(checkpoint, SIGNER).version == 4

        # Back: the backlog drains in order and every version is in the registry.
        private_postgres.start()
        await publisher.flush_registry()
        assert publisher.registry_backlog == 0
        rows = await asyncio.to_thread(registry.versions, SPEC.name, model)
        assert [r.version for r in rows] == [4, 3, 2, 1]
        by_version = {r.version: r for r in rows}
        for snap in snapshots:
            row = by_version[snap.meta.version]
            assert row.examples_seen == snap.meta.examples_seen
            assert row.metrics == snap.meta.metrics
            assert row.offsets == snap.meta.offsets
            assert row.key_id == "k1"
        assert by_version[4].offsets == {f"{topics.events}:0": 304}
        assert by_version[4].examples_seen == 45

        # A flush with nothing pending, or a row that is already there, changes nothing.
        await publisher.flush_registry()
        assert await asyncio.to_thread(registry.record_version, snapshots[0].meta, "k1") is False

        # The models topic heard about every version, Postgres or not.
        await asyncio.wait_for(producer.flush(), 30)
        published = await _consume_models(kafka_broker.bootstrap, topics.models, 4)
        assert [(p.model, p.version, p.examples_seen) for p in published] == [
            (model, s.meta.version, s.meta.examples_seen) for s in snapshots
        ]
    finally:
        await producer.stop()
        await store.close()
        registry.close()


async def test_publisher_registry_row_has_blob_digest(
    tmp_path: Path, redis_server: RedisServer | ExternalRedis, kafka_broker: KafkaBroker | ExternalKafka
) -> None:
    prefix = f"it-{uuid.uuid4().hex[:8]}"
    topics = Topics.for_app(prefix, SPEC.name)
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate(url)
    registry = Registry.from_url(url)
    store = ModelStore.from_url(redis_server.url, prefix, SPEC.name)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    await producer.start()
    try:
        publisher = Publisher(store, registry, producer, topics.models)
        snapshot = _trainer_with_examples(topics, 10).snapshot(SIGNER)
        await publisher.deliver(snapshot)
        signed = await store.load(SPEC.model.name, 1)
        assert signed is not None
        [row] = registry.versions(SPEC.name, SPEC.model.name)
        assert row.blob_sha256 == hashlib.sha256(signed.blob).hexdigest()
    finally:
        await producer.stop()
        await store.close()
        registry.close()
