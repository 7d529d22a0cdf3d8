"""docker-compose.yml, run without Docker: every service started with exactly the command and the
environment compose gives it, on the session's real Kafka, Redis and PostgreSQL, then the loop.

Only what a container network provides is mapped: host names to the local servers
(``kafka:9092``, ``redis:6379``, ``postgres:5432``), container ports to free ports (and
``0.0.0.0`` to 127.0.0.1), the image's app spec path to the repository's, the image's working
directory to a temporary one. Two additions isolate this run from others on the same servers:
``STREAMWISE_TOPIC_PREFIX`` (topics and Redis keys) and a fresh database owned by the compose
user ``streamwise``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
import redis
from aiokafka.admin import AIOKafkaAdminClient

from streamwise_devstack import free_port
from streamwise_devstack.fraud import FraudStream
from streamwise_devstack.redis_server import RedisServer
from streamwise_devstack.suite import ServiceSpec, Suite
from tests.e2e.loop_client import LoopClient, wait_for

from .support import APP_SPEC, IMAGE_APP_SPEC, SERVICES, compose_command, compose_environment, container_port, http_check, load_compose

pytestmark = [pytest.mark.deploy, pytest.mark.e2e]

ONE_SHOT = ("migrate", "topics")
DEADLINE_S = 120.0
"""How long a step the loop normally takes seconds for may take before the test fails."""


class ComposeOnLocalServers:
    """Rewrites compose values for processes on this machine (see the module docstring)."""

    def __init__(self, compose: dict, kafka: str, redis_url: str, pg_host: str, pg_port: int, database: str, prefix: str) -> None:
        self.compose = compose
        self.prefix = prefix
        self.ports = {name: free_port() for name in SERVICES}
        redis = urlsplit(redis_url)
        self.hosts = {
            "kafka:9092": kafka,
            "redis:6379": f"{redis.hostname}:{redis.port}",
            "@postgres:5432/streamwise": f"@{pg_host}:{pg_port}/{database}",
            IMAGE_APP_SPEC: str(APP_SPEC),
        }
        for name in SERVICES:  # published ports, as a browser or the demo reaches them
            published = str(compose["services"][name]["ports"][0]).split(":")[0]
            self.hosts[f"localhost:{published}"] = f"127.0.0.1:{self.ports[name]}"
            self.hosts[f"http://{name}:{self.container_port(name)}"] = f"http://127.0.0.1:{self.ports[name]}"
            # inside the container (health checks)
            self.hosts[f"127.0.0.1:{self.container_port(name)}"] = f"127.0.0.1:{self.ports[name]}"

    def container_port(self, name: str) -> int:
        return container_port(self.compose["services"][name]["ports"][0])

    def value(self, text: str, service: str | None = None) -> str:
        for old, new in self.hosts.items():
            text = text.replace(old, new)
        if service in SERVICES:
            if text == "0.0.0.0":  # noqa: S104
                return "127.0.0.1"
            if text == str(self.container_port(service)):
                return str(self.ports[service])
        return text

    def env(self, name: str) -> dict[str, str]:
        env = {k: self.value(v, name) for k, v in compose_environment(self.compose["services"][name]).items()}
        return {**env, "STREAMWISE_TOPIC_PREFIX": self.prefix} if env else env

    def argv(self, name: str) -> tuple[str, ...]:
        return tuple(self.value(part, name) for part in compose_command(self.compose["services"][name]))

    def spec(self, name: str) -> ServiceSpec:
        _, _, path = http_check(self.compose["services"][name]["healthcheck"]["test"])  # type: ignore[misc]
        return ServiceSpec(name, self.argv(name), self.ports[name], health=path, env=tuple(self.env(name).items()))

    def healthcheck(self, name: str) -> list[str]:
        return [self.value(part, name) for part in self.compose["services"][name]["healthcheck"]["test"][1:]]


def _python(argv: list[str] | tuple[str, ...]) -> list[str]:
    return [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]


def _health_check(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a compose health check until it passes, as compose retries it (one run has its own
    short timeout, which a busy machine can miss once); return the last run."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode == 0 or time.monotonic() >= deadline:
            return result
        time.sleep(1)


@pytest.fixture
def database(postgres_server) -> str:  # type: ignore[no-untyped-def]
    """A fresh database owned by the compose user ``streamwise``, who may create the services'
    roles as compose's superuser may (trust auth: any password)."""
    name = f"deploy_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'streamwise'").fetchone():
            conn.execute("CREATE ROLE streamwise LOGIN")
        conn.execute("ALTER ROLE streamwise CREATEROLE")
        conn.execute(f'CREATE DATABASE "{name}" OWNER streamwise')
    return name


@pytest.fixture
def prefix() -> str:
    return f"dep{uuid.uuid4().hex[:8]}"


@pytest.fixture
def compose_redis(tmp_path: Path, prefix: str) -> Iterator[RedisServer]:
    """redis-server as compose runs it: its ACL users (the `redis-users` config, keys and channel
    under this run's prefix) and its append-only file."""
    acl = tmp_path / "users.acl"
    acl.write_text(load_compose()["configs"]["redis-users"]["content"].replace("streamwise:fraud:", f"{prefix}:fraud:"))
    with RedisServer(tmp_path / "redis", acl_file=acl, appendonly=True) as server:
        yield server


def test_compose_redis_keeps_a_services_transactions_across_a_restart(compose_redis: RedisServer, prefix: str) -> None:
    """The append-only file is replayed as `default`: a `default` with fewer rights than the
    services' would drop their MULTI/EXEC writes at the next start (redis/redis#14541)."""
    env = compose_environment(load_compose()["services"]["trainer"])
    url = env["STREAMWISE_REDIS_URL"].replace("redis:6379", f"127.0.0.1:{compose_redis.port}")
    key = f"{prefix}:fraud:trainer:fraud-lr:checkpoint"
    latest = f"{prefix}:fraud:model:fraud-lr:latest"
    client = redis.Redis.from_url(url)
    with client.pipeline(transaction=True) as tx:  # two writes: a one-command transaction is logged bare
        tx.hset(key, mapping={"blob": b"state", "offsets": "{}"})
        tx.set(latest, 7)
        tx.execute()
    client.close()
    compose_redis.restart()
    client = redis.Redis.from_url(url)
    try:
        assert client.hgetall(key) == {b"blob": b"state", b"offsets": b"{}"}
        assert client.get(latest) == b"7"
    finally:
        client.close()


async def _topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def test_compose_services_run_the_loop(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kafka_broker, compose_redis: RedisServer, postgres_server, database: str,
    prefix: str,
) -> None:
    for key in [k for k in os.environ if k.startswith("STREAMWISE_")]:
        monkeypatch.delenv(key)  # the services get compose's variables and nothing else of ours
    local = ComposeOnLocalServers(
        load_compose(), kafka_broker.bootstrap, compose_redis.url, postgres_server.host, postgres_server.port, database, prefix,
    )
    workdir = tmp_path / "workdir"  # the image's WORKDIR: faust keeps the trainer's data folder here
    workdir.mkdir()

    # The one-shot init steps, as compose runs them before the services.
    for name in ONE_SHOT:
        result = subprocess.run(
            _python(local.argv(name)), env={**os.environ, **local.env(name)}, cwd=workdir,
            capture_output=True, text=True, timeout=90, check=False,
        )
        assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    with psycopg.connect(postgres_server.dsn.rsplit("/", 1)[0] + f"/{database}") as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone(), "migrations ran"
    expected = {f"{prefix}.fraud.{k}" for k in ("events", "labels", "predictions", "models", "dead-letters")}
    assert expected <= asyncio.run(_topics(kafka_broker.bootstrap))

    suite = Suite({}, tmp_path / "logs", [local.spec(name) for name in SERVICES], cwd=workdir)
    demo: subprocess.Popen[bytes] | None = None
    try:
        suite.start(timeout_s=90)
        # The compose health checks themselves pass (the containers would be "healthy").
        for name in SERVICES:
            result = _health_check(_python(local.healthcheck(name)))
            assert result.returncode == 0, f"{name} health check failed: {result.stderr}"

        # The demo profile's command streams into ingest; the trainer learns, the predictor swaps.
        client = LoopClient(suite.url("ingest"), suite.url("predictor"))
        with open(tmp_path / "logs" / "demo.log", "wb") as log:
            demo = subprocess.Popen(
                _python(local.argv("demo")), env={**os.environ, **local.env("demo")}, cwd=workdir,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        first = client.wait_examples(100, timeout_s=DEADLINE_S)
        assert first["meta"]["version"] >= 1
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C: sends the late labels held back, then stops
        assert demo.wait(60) == 0, (tmp_path / "logs" / "demo.log").read_text()[-3000:]

        # Our own events and labels, then predictions from a newer version.
        seen = client.examples_seen()
        stream = FraudStream(seed=5, drift_at=10**9, run_id=f"c{uuid.uuid4().hex[:6]}")
        client.send(stream.take(300))
        served = client.wait_examples(seen + 300, timeout_s=DEADLINE_S)
        assert served["meta"]["version"] > first["meta"]["version"]
        event = stream.take(1)[0]
        r = client.predictor.post("/v1/predict", json={"id": event.id, "features": event.features})
        assert r.status_code == 200, r.text
        assert r.json()["version"] >= served["meta"]["version"] and isinstance(r.json()["prediction"], bool)
        assert client.accuracy(stream.take(200)) > 0.5

        # The web app (PostgreSQL registry + Redis) and the trainer's status page see it too.
        page = wait_for(
            lambda: (x := httpx.get(f"{suite.url('webapp')}/api/v1/models/current", timeout=30)).status_code == 200 and x.json(),
            DEADLINE_S, "web app shows the current version",
        )
        assert page
        status = httpx.get(f"{suite.url('trainer')}/v1/status", timeout=30, headers={"X-API-Key": "dev-api-key"}).json()
        assert status
        assert (workdir / "var" / "trainer").is_dir() and not list(workdir.glob("*-data")), "faust files under STREAMWISE_DATA_DIR"

        # Stopped and started again as its own Redis user, the trainer resumes from its checkpoint.
        learned = wait_for(lambda: (x := client.examples_seen()) >= seen + 300 and x, DEADLINE_S, "all events learned")
        before = client.served()
        suite.stop("trainer")
        suite.start("trainer", timeout_s=90)
        client.send(stream.take(200))
        after = client.wait_examples(learned + 200, timeout_s=DEADLINE_S)
        assert after["meta"]["version"] > before["meta"]["version"], "versions continue after the restart"
    finally:
        if demo is not None and demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        suite.stop()
