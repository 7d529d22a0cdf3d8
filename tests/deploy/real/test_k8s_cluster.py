"""``kubectl apply -k`` for real: the dev overlay on a single-node Kubernetes cluster built from the
Go module proxy (:mod:`streamwise_devstack.kube_cluster`), through the test overlay ``k8s/``
(local images, pre-made volumes, CPU requests that fit on 2 cores).

One deployment for the module, in steps that build on each other: every workload rolls out and
the demo Job trains versions served through the predictor's Service; a new image tag rolls out
while clients call, without a failed request; a deleted trainer pod resumes exactly once, and
both predictor replicas serve the last version.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamwise_devstack.docker_engine import DockerEngine
from streamwise_devstack.fraud import FraudStream
from streamwise_devstack.kube_cluster import KubeCluster
from tests.e2e.loop_client import API_KEY, LoopClient, wait_for

from .compose_project import ROOT, ComposeProject
from .stack import EVENT_TOPICS, Stack, parse_offsets

pytestmark = [pytest.mark.real, pytest.mark.deploy, pytest.mark.timeout(3600)]

NAMESPACE = "streamwise-dev"
IMAGE = "streamwise-test/k8s"
TEST_OVERLAY = Path(__file__).with_name("k8s")
DEMO = ROOT / "deploy" / "k8s" / "demo"
DEADLINE_S = 600.0
"""A hang guard for a step that normally takes seconds to a minute (pods on a shared 2-core node)."""
DEPLOYMENTS = ("streamwise-ingest", "streamwise-trainer", "streamwise-webapp", "streamwise-predictor")
STATEFULSETS = ("streamwise-kafka", "streamwise-redis", "streamwise-postgres")


@pytest.fixture(scope="module")
def images(docker_engine: DockerEngine, compose_binary: Path, local_images: dict[str, str], build_env: dict[str, str]) -> Iterator[list[str]]:
    """The Streamwise image as compose builds it, under two tags (the second for a rollout), and
    the local third-party images."""
    first, second = f"{IMAGE}:v1", f"{IMAGE}:v2"
    build = ComposeProject(docker_engine, compose_binary, f"swk8s{uuid.uuid4().hex[:8]}",
                           {**local_images, **build_env, "STREAMWISE_IMAGE": first})
    try:
        build.run("build", "migrate", timeout=3000)
        docker_engine.docker("tag", first, second)
        yield [first, second, *(local_images[v] for v in ("KAFKA_IMAGE", "REDIS_IMAGE", "POSTGRES_IMAGE"))]
    finally:
        docker_engine.docker("image", "rm", "--force", first, second, check=False)


@pytest.fixture(scope="module")
def cluster(docker_engine: DockerEngine, images: list[str]) -> Iterator[KubeCluster]:
    with KubeCluster() as node:
        node.load_images(docker_engine, images)
        node.make_volumes(4)
        yield node


def _kustomization(cluster: KubeCluster, base: Path, tag: str) -> Path:
    """A kustomization of ``base`` with the Streamwise image at ``tag`` (``kubectl apply -k`` it)."""
    folder = cluster.work / "apply" / f"{base.name}-{tag}"
    folder.mkdir(parents=True)
    (folder / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(base, folder)}\n"
        f"images:\n  - name: streamwise\n    newName: {IMAGE}\n    newTag: {tag}\n"
    )
    return folder


def _rollout(cluster: KubeCluster, *workloads: str) -> None:
    for workload in workloads:
        done = cluster.kubectl("rollout", "status", workload, "-n", NAMESPACE, f"--timeout={int(DEADLINE_S)}s",
                               check=False, timeout=DEADLINE_S + 60)
        assert done.returncode == 0, f"{workload} did not roll out: {done.stdout}{done.stderr}\n{_describe(cluster)}"


def _describe(cluster: KubeCluster) -> str:
    pods = cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "wide", check=False).stdout
    events = cluster.kubectl("get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp", check=False).stdout
    return f"{pods}\n{events[-6000:]}\n{cluster.logs(15)}"


def _pods(cluster: KubeCluster, component: str) -> list[dict[str, Any]]:
    """The running, ready pods of ``component``."""
    found = json.loads(cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/component={component}",
                                       "-o", "json").stdout)["items"]
    return [p for p in found if p["metadata"].get("deletionTimestamp") is None
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


@pytest.fixture(scope="module")
def stack(cluster: KubeCluster) -> Stack:
    cluster.kubectl("apply", "-k", str(_kustomization(cluster, TEST_OVERLAY, "v1")))
    _rollout(cluster, *(f"statefulset/{s}" for s in STATEFULSETS),
             *(f"deployment/{d}" for d in DEPLOYMENTS if d != "streamwise-predictor"))
    # Predictors are ready once they serve a model: the demo stream makes the first one.
    cluster.kubectl("apply", "-k", str(_kustomization(cluster, DEMO, "v1")))
    _rollout(cluster, "deployment/streamwise-predictor")
    return Stack(*(cluster.service_url(NAMESPACE, f"streamwise-{name}", "http") for name in ("trainer", "ingest", "predictor", "webapp")))


def test_every_workload_rolls_out_and_the_demo_job_trains_versions_served_through_the_service(cluster: KubeCluster, stack: Stack) -> None:
    _rollout(cluster, *(f"deployment/{d}" for d in DEPLOYMENTS), *(f"statefulset/{s}" for s in STATEFULSETS))
    stack.check_learning_and_serving(DEADLINE_S)
    # The HorizontalPodAutoscalers own the replica counts: two predictors, two ingests.
    for component in ("predictor", "ingest"):
        assert wait_for(lambda: len(_pods(cluster, component)) == 2, DEADLINE_S, f"two {component} replicas")


class Callers:
    """Clients that call the predictor and ingest Services back to back, one connection per call,
    and count every answer that is not a 200."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.calls = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._predict, daemon=True), threading.Thread(target=self._ingest, daemon=True)]

    def __enter__(self) -> Callers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _call(self, method: str, url: str, body: Any) -> None:
        try:
            response = httpx.request(method, url, json=body, headers={**API_KEY, "Connection": "close"}, timeout=30)
            if response.status_code not in (200, 202):
                self.failures.append(f"{method} {url}: {response.status_code} {response.text[:200]}")
        except httpx.HTTPError as exc:
            self.failures.append(f"{method} {url}: {exc!r}")
        self.calls += 1

    def _predict(self) -> None:
        stream = FraudStream(seed=5)
        while not self._stop.is_set():
            self._call("POST", f"{self.stack.predictor}/v1/predict", {"features": stream.take(1)[0].features})

    def _ingest(self) -> None:
        stream = FraudStream(seed=6, run_id=f"rollout-{uuid.uuid4().hex[:6]}")
        while not self._stop.is_set():
            body = [{"id": e.id, "features": e.features, "label": e.label} for e in stream.take(10)]
            self._call("POST", f"{self.stack.ingest}/v1/events", body)


def _images_in_use(cluster: KubeCluster) -> set[str]:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component!=demo", "-o", "json").stdout)
    return {c["image"] for p in pods["items"] for c in p["spec"]["containers"] if c["image"].startswith(IMAGE)}


def test_a_new_image_tag_rolls_out_without_a_failed_request(cluster: KubeCluster, stack: Stack) -> None:
    """A second ``kubectl apply -k`` with the image at a new tag: every Deployment rolls out (the
    predictors and ingests one pod at a time, each drained by its preStop delay) while clients
    call the Services, and not one call fails."""
    assert _images_in_use(cluster) == {f"{IMAGE}:v1"}
    with Callers(stack) as callers:
        wait_for(lambda: callers.calls >= 20, DEADLINE_S, "clients calling")
        cluster.kubectl("apply", "-k", str(_kustomization(cluster, TEST_OVERLAY, "v2")))
        _rollout(cluster, *(f"deployment/{d}" for d in DEPLOYMENTS))
        wait_for(lambda: _images_in_use(cluster) == {f"{IMAGE}:v2"}, DEADLINE_S, "only the new image running")
        calls = callers.calls
        wait_for(lambda: callers.calls >= calls + 20, DEADLINE_S, "clients calling the new pods")
    print(f"\nrollout to a new tag: {callers.calls} calls, {len(callers.failures)} failed")
    assert callers.failures == [], callers.failures[:10]


def _end_offsets(cluster: KubeCluster) -> dict[str, int]:
    """``topic:partition -> end offset`` of the topics the trainer learns from, asked of the broker."""
    ends = {}
    for topic in EVENT_TOPICS:
        ends.update(parse_offsets(cluster.kubectl(
            "exec", "-n", NAMESPACE, "streamwise-kafka-0", "--", "/opt/kafka/bin/kafka-get-offsets.sh",
            "--bootstrap-server", "localhost:9092", "--topic", topic, timeout=120).stdout))
    return ends


def test_a_deleted_trainer_pod_resumes_exactly_once_and_both_predictors_serve_the_last_version(cluster: KubeCluster, stack: Stack) -> None:
    # Foreground: the Job is gone once its pod is, so the stream has stopped.
    cluster.kubectl("delete", "job", "streamwise-demo", "-n", NAMESPACE, "--cascade=foreground", "--wait=true",
                    f"--timeout={int(DEADLINE_S)}s", timeout=DEADLINE_S + 60)
    assert cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=demo", "-o", "name").stdout == ""
    before = wait_for(lambda: stack.settled(_end_offsets(cluster)), DEADLINE_S, "the demo's events consumed")
    before_version = wait_for(stack.served, DEADLINE_S, "a served version")["version"]
    events = FraudStream(seed=11, run_id=f"resume-{uuid.uuid4().hex[:6]}").take(3_000)
    client = LoopClient(stack.ingest, stack.predictor)
    client.send(events[:1_500], batch=500)
    wait_for(lambda: (s := stack.status()) and s["examples_seen"] > before["examples_seen"], DEADLINE_S, "the trainer learning")
    [trainer] = _pods(cluster, "trainer")
    cluster.kubectl("delete", "pod", trainer["metadata"]["name"], "-n", NAMESPACE, "--wait=false")
    client.send(events[1_500:], batch=500)
    _rollout(cluster, "deployment/streamwise-trainer")
    ends = _end_offsets(cluster)
    final = wait_for(lambda: stack.settled(ends), DEADLINE_S, "every event consumed after the restart")
    [again] = _pods(cluster, "trainer")
    assert again["metadata"]["name"] != trainer["metadata"]["name"]
    assert final["examples_seen"] == before["examples_seen"] + len(events), "an event was learned twice, or lost"
    assert final["duplicates_ignored"] == before["duplicates_ignored"]
    # Both replicas, each asked directly at its pod address, serve the last version.
    predictors = [f"http://{p['status']['podIP']}:8002" for p in _pods(cluster, "predictor")]
    assert len(predictors) == 2
    served = wait_for(
        lambda: (s := [stack.served(url) for url in predictors]) and all(x and x["meta"]["examples_seen"] == final["examples_seen"] for x in s) and s,
        DEADLINE_S, "both predictors serving the final version",
    )
    assert served[0]["version"] == served[1]["version"] > before_version
    numbers = [row["version"] for row in stack.versions()]
    assert len(numbers) == len(set(numbers)), "a version number was published twice"
