"""The whole suite as processes, on a real broker and Redis, for end-to-end tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from streamwise_devstack import free_port
from streamwise_devstack.suite import Suite, service_specs, suite_env

ROOT = Path(__file__).resolve().parents[2]
APP_SPEC = ROOT / "examples" / "fraud" / "streamwise.toml"


def start_suite(
    tmp_path: Path, bootstrap: str, idempotence: bool, redis_url: str, names: tuple[str, ...],
    extra_env: dict[str, str] | None = None, app_spec: Path = APP_SPEC, *,
    topic_prefix: str | None = None, service_env: dict[str, dict[str, str]] | None = None,
) -> Suite:
    """The services ``names`` on the given backends; ``service_env``: variables of one service
    only (such as its own Kafka user)."""
    ports = {name: free_port() for name in ("webapp", "ingest", "predictor", "trainer")}
    env = suite_env(
        bootstrap=bootstrap, idempotence=idempotence, redis_url=redis_url,
        database_url=f"sqlite:///{tmp_path / 'registry.db'}", app_spec=app_spec,
        topic_prefix=topic_prefix or f"e2e{uuid.uuid4().hex[:8]}",
        extra={
            "STREAMWISE_POLL_INTERVAL_MS": "500",
            # where the web app reaches the others (its System page and live feed)
            **{f"STREAMWISE_UPSTREAM__{n.upper()}": f"http://127.0.0.1:{ports[n]}" for n in ("ingest", "predictor", "trainer")},
            **(extra_env or {}),
        },
    )
    specs = [replace(s, env=(*s.env, *(service_env or {}).get(s.name, {}).items())) for s in service_specs(ports) if s.name in names]
    suite = Suite(env, tmp_path / "logs", specs, cwd=ROOT)
    try:
        suite.start()
    except BaseException:
        suite.stop()
        raise
    return suite


@pytest.fixture
def kafka_suite(tmp_path: Path, kafka_broker, redis_server) -> Iterator[Suite]:  # type: ignore[no-untyped-def]
    suite = start_suite(tmp_path, kafka_broker.bootstrap, True, redis_server.url, ("trainer", "ingest", "predictor", "webapp"))
    yield suite
    suite.stop()


@pytest.fixture
def tansu_suite(tmp_path: Path, tansu_broker, redis_server) -> Iterator[Suite]:  # type: ignore[no-untyped-def]
    suite = start_suite(tmp_path, tansu_broker.bootstrap, False, redis_server.url, ("trainer", "ingest", "predictor", "webapp"))
    yield suite
    suite.stop()
