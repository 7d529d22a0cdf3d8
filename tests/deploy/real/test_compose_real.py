"""``docker compose up`` for real: docker-compose.yml as users run it, on a Docker engine, with the
local equivalents of the third-party images passed in through their variables.

One project for the module, in steps that build on each other: up with the demo stream, a model
that learns and is served through the published ports, a killed trainer that resumes exactly
once, and ``down`` then ``up`` that keeps every model and registry row (named volumes).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamwise_devstack.docker_engine import DockerEngine
from streamwise_devstack.fraud import FraudStream
from tests.e2e.loop_client import API_KEY, LoopClient, wait_for

from .compose_project import ComposeProject

pytestmark = [pytest.mark.real, pytest.mark.deploy, pytest.mark.timeout(3600)]

DEADLINE_S = 300.0
"""A hang guard for a step that normally takes seconds (containers on a shared 2-core machine)."""


def _get(url: str, **kwargs: Any) -> dict[str, Any] | None:
    try:
        response = httpx.get(url, timeout=10, headers=API_KEY, **kwargs)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


class Running:
    """The project's published URLs, looked up again after every ``up`` (ports are ephemeral)."""

    def __init__(self, project: ComposeProject) -> None:
        self.project = project
        self.refresh()

    def refresh(self) -> None:
        self.trainer = self.project.url("trainer", 8003)
        self.ingest = self.project.url("ingest", 8001)
        self.predictor = self.project.url("predictor", 8002)
        self.webapp = self.project.url("webapp", 8000)

    def status(self) -> dict[str, Any] | None:
        return _get(f"{self.trainer}/v1/status")

    def served(self) -> dict[str, Any] | None:
        """The predictor's ``/v1/model``, with the served ``model`` and ``version`` at the top."""
        found = _get(f"{self.predictor}/v1/model")
        return found and {**found, "model": found["meta"]["model"], "version": found["meta"]["version"]}

    def versions(self, model: str = "fraud-lr") -> list[dict[str, Any]]:
        found = _get(f"{self.webapp}/api/v1/models/{model}/versions", params={"limit": 500})
        assert isinstance(found, list), found
        return found


@pytest.fixture(scope="module")
def project(docker_engine: DockerEngine, compose_binary: Path, local_images: dict[str, str], build_env: dict[str, str]) -> Iterator[ComposeProject]:
    name = f"swtest{uuid.uuid4().hex[:8]}"
    env = {**local_images, **build_env, "STREAMWISE_IMAGE": f"streamwise-test/{name}:latest"}
    compose = ComposeProject(docker_engine, compose_binary, name, env, profiles=("demo",))
    try:
        yield compose
    finally:
        compose.down(volumes=True)
        docker_engine.docker("image", "rm", "--force", env["STREAMWISE_IMAGE"], check=False)


@pytest.fixture(scope="module")
def running(project: ComposeProject) -> Running:
    project.run("up", "--build", "--detach", "--wait", "--wait-timeout", str(int(DEADLINE_S * 2)), timeout=3000)
    return Running(project)


def test_up_streams_learns_and_serves_through_the_published_ports(project: ComposeProject, running: Running) -> None:
    """`--profile demo up --wait`: every service healthy, the demo streaming, versions advancing,
    and `POST /v1/predict` answered by the newest version."""
    states = project.run("ps", "--all", "--format", "{{.Service}} {{.State}} {{.Health}}").stdout.split("\n")
    by_service = dict(line.split(" ", 1) for line in filter(None, states))
    for service in ("kafka", "redis", "postgres", "trainer", "ingest", "predictor", "webapp"):
        assert by_service[service].startswith("running") and "healthy" in by_service[service], by_service
    first = wait_for(lambda: (s := running.served()) and s, DEADLINE_S, "a first served version")
    later = wait_for(lambda: (s := running.served()) and s["version"] > first["version"] and s, DEADLINE_S, "versions advancing")
    assert later["meta"]["examples_seen"] > first["meta"]["examples_seen"]
    event = FraudStream(seed=3).take(1)[0]
    response = httpx.post(f"{running.predictor}/v1/predict", json={"features": event.features}, timeout=10)
    assert response.status_code == 200, response.text
    answered = response.json()
    assert answered["model"] == later["model"] and answered["version"] >= later["version"], "an older version answered"


def _end_offsets(project: ComposeProject) -> dict[str, int]:
    """``topic:partition -> end offset`` of the events and labels topics, asked of the broker."""
    ends = {}
    for topic in ("streamwise.fraud.events", "streamwise.fraud.labels"):
        out = project.run("exec", "-T", "kafka", "/opt/kafka/bin/kafka-get-offsets.sh",
                          "--bootstrap-server", "localhost:9092", "--topic", topic, timeout=120).stdout
        for line in filter(None, out.splitlines()):
            name, partition, offset = line.rsplit(":", 2)
            ends[f"{name}:{partition}"] = int(offset)
    return ends


def _settled(running: Running, ends: dict[str, int]) -> dict[str, Any] | None:
    """The champion's status once its learned state reaches ``ends`` (everything consumed; the
    status names the last offset processed of each partition)."""
    status = running.status()
    if status is None or any(status["offsets"].get(key, -1) + 1 < end for key, end in ends.items()):
        return None
    return status


def test_a_killed_trainer_resumes_exactly_once(project: ComposeProject, running: Running) -> None:
    """`kill trainer` then `start trainer`: the versions continue, and every event is learned once."""
    project.run("stop", "demo")
    before = wait_for(lambda: _settled(running, _end_offsets(project)), DEADLINE_S, "the demo's events consumed")
    before_version = wait_for(running.served, DEADLINE_S, "a served version")["version"]
    events = FraudStream(seed=11, run_id=f"resume-{uuid.uuid4().hex[:6]}").take(3_000)
    client = LoopClient(running.ingest, running.predictor)
    client.send(events[:1_500], batch=500)
    wait_for(lambda: (s := running.status()) and s["examples_seen"] > before["examples_seen"], DEADLINE_S, "the trainer learning")
    project.run("kill", "trainer")
    client.send(events[1_500:], batch=500)
    project.run("up", "--detach", "--wait", "--no-deps", "trainer", timeout=DEADLINE_S * 2)
    running.refresh()
    ends = _end_offsets(project)
    final = wait_for(lambda: _settled(running, ends), DEADLINE_S, "every event consumed after the restart")
    assert final["examples_seen"] == before["examples_seen"] + len(events), "an event was learned twice, or lost"
    assert final["duplicates_ignored"] == before["duplicates_ignored"]
    newest = wait_for(lambda: (s := running.served()) and s["meta"]["examples_seen"] == final["examples_seen"] and s,
                      DEADLINE_S, "the final version served")
    assert newest["version"] > before_version
    numbers = [row["version"] for row in running.versions()]
    assert len(numbers) == len(set(numbers)), "a version number was published twice"


def test_down_and_up_keep_every_model_and_registry_row(project: ComposeProject, running: Running) -> None:
    """Named volumes: after `down` (without -v) and `up`, the same versions, rows and served model."""
    served = running.served()
    assert served is not None
    rows = running.versions()
    project.run("down", "--timeout", "20", timeout=600)
    project.run("up", "--detach", "--wait", "--wait-timeout", str(int(DEADLINE_S * 2)),
                "kafka", "redis", "postgres", "migrate", "topics", "trainer", "ingest", "predictor", "webapp", timeout=1800)
    running.refresh()
    again = wait_for(lambda: (s := running.served()) and s, DEADLINE_S, "the model served after up")
    assert again["version"] >= served["version"]
    assert again["meta"]["examples_seen"] == served["meta"]["examples_seen"], "the trainer relearned or lost events"
    kept = {row["version"] for row in running.versions()}
    assert {row["version"] for row in rows} <= kept
