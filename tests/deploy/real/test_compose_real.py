"""``docker compose up`` for real: docker-compose.yml as users run it, on a Docker engine, with the
local equivalents of the third-party images passed in through their variables.

One project for the module, in steps that build on each other: up with the demo stream, a model
that learns and is served through the published ports, a killed trainer that resumes exactly
once, ``down`` then ``up`` that keeps every model and registry row (named volumes), and the
``observability`` profile's Prometheus scraping the four services.
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
from tests.e2e.loop_client import LoopClient, wait_for

from .compose_project import ComposeProject
from .stack import EVENT_TOPICS, Stack, get_json, parse_offsets

pytestmark = [pytest.mark.real, pytest.mark.deploy, pytest.mark.timeout(3600)]

DEADLINE_S = 300.0
"""A hang guard for a step that normally takes seconds (containers on a shared 2-core machine)."""


class Running(Stack):
    """The project's published URLs, looked up again after every ``up`` (ports are ephemeral)."""

    def __init__(self, project: ComposeProject) -> None:
        self.project = project
        self.refresh()

    def refresh(self) -> None:
        self.trainer = self.project.url("trainer", 8003)
        self.ingest = self.project.url("ingest", 8001)
        self.predictor = self.project.url("predictor", 8002)
        self.webapp = self.project.url("webapp", 8000)


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
    running.check_learning_and_serving(DEADLINE_S)


def _end_offsets(project: ComposeProject) -> dict[str, int]:
    """``topic:partition -> end offset`` of the topics the trainer learns from, asked of the broker."""
    ends = {}
    for topic in EVENT_TOPICS:
        ends.update(parse_offsets(project.run("exec", "-T", "kafka", "/opt/kafka/bin/kafka-get-offsets.sh",
                                              "--bootstrap-server", "localhost:9092", "--topic", topic, timeout=120).stdout))
    return ends


def test_a_killed_trainer_resumes_exactly_once(project: ComposeProject, running: Running) -> None:
    """`kill trainer` then `start trainer`: the versions continue, and every event is learned once."""
    project.run("stop", "demo")
    before = wait_for(lambda: running.settled(_end_offsets(project)), DEADLINE_S, "the demo's events consumed")
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
    final = wait_for(lambda: running.settled(ends), DEADLINE_S, "every event consumed after the restart")
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
    try:
        again = wait_for(lambda: (s := running.served()) and s, DEADLINE_S, "the model served after up")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{project.logs(60, 'redis', 'trainer', 'predictor')}") from exc
    assert again["version"] >= served["version"], project.logs(60, "redis", "trainer")
    assert again["meta"]["examples_seen"] == served["meta"]["examples_seen"], "the trainer relearned or lost events"
    kept = {row["version"] for row in running.versions()}
    assert {row["version"] for row in rows} <= kept


STREAMWISE_JOBS = ("ingest", "trainer", "predictor", "webapp")
"""The scrape jobs of deploy/observability/prometheus.yml, one per service."""


def _prometheus(prometheus: str, path: str, **params: str) -> Any:
    """The ``data`` of a Prometheus API answer, or None."""
    found = get_json(f"{prometheus}{path}", params=params)
    return found["data"] if found and found.get("status") == "success" else None


def _targets_up(prometheus: str) -> dict[str, list[str]] | None:
    """{job: the scrape URLs of its targets} once every Streamwise job has targets, all healthy."""
    data = _prometheus(prometheus, "/api/v1/targets", state="active")
    if data is None:
        return None
    by_job: dict[str, list[dict[str, Any]]] = {}
    for target in data["activeTargets"]:
        by_job.setdefault(target["labels"]["job"], []).append(target)
    if not all(by_job.get(job) and all(t["health"] == "up" for t in by_job[job]) for job in STREAMWISE_JOBS):
        return None
    return {job: [t["scrapeUrl"] for t in by_job[job]] for job in STREAMWISE_JOBS}


def _by_job(prometheus: str, query: str) -> dict[str, float]:
    """An instant query's answer, {job: value}."""
    data = _prometheus(prometheus, "/api/v1/query", query=query)
    return {series["metric"].get("job", ""): float(series["value"][1]) for series in (data or {}).get("result", [])}


def test_the_observability_profile_scrapes_the_four_services(project: ComposeProject, running: Running) -> None:
    """`--profile observability up prometheus` beside the running stack (the local Prometheus,
    built from the Go module proxy; Grafana is not run: it has no local image): Prometheus finds
    each service through compose's DNS, every target is up, and PromQL answers with each
    service's own metrics and the version the predictor serves."""
    observability = project.with_profiles("observability")
    observability.run("up", "--detach", "--wait", "--wait-timeout", str(int(DEADLINE_S)), "prometheus", timeout=DEADLINE_S * 2)
    prometheus = observability.url("prometheus", 9090)
    assert httpx.get(f"{prometheus}/-/ready", timeout=10).status_code == 200
    targets = wait_for(lambda: _targets_up(prometheus), DEADLINE_S, "every Streamwise target up in Prometheus")
    jobs = (*STREAMWISE_JOBS, "prometheus")
    up = wait_for(lambda: (found := _by_job(prometheus, "up")) and all(found.get(job) == 1 for job in jobs) and found,
                  DEADLINE_S, "`up` = 1 for every job")
    assert set(up) == set(jobs), (up, targets)
    own = wait_for(lambda: (found := _by_job(prometheus, 'count by (job) ({__name__=~"streamwise_.+"})'))
                   and all(found.get(job, 0) > 0 for job in STREAMWISE_JOBS) and found,
                   DEADLINE_S, "streamwise_* series of every job")
    assert set(own) == set(STREAMWISE_JOBS), own
    served = wait_for(running.served, DEADLINE_S, "a served version")["version"]
    scraped = wait_for(lambda: (found := _by_job(prometheus, "max by (job) (streamwise_predictor_model_version)"))
                       and found.get("predictor", 0) >= served and found, DEADLINE_S, "the served version in Prometheus")
    assert set(scraped) == {"predictor"} and scraped["predictor"] >= 1, scraped
