"""The metrics side of the deployment, offline: the compose profile with Prometheus and Grafana,
its scrape configuration and dashboard against what the services really export, and the optional
Kubernetes PodMonitor component against the rendered pods."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from streamwise_devstack.go_tools import PROMETHEUS_VERSION

from .support import (
    K8S,
    ROOT,
    SERVICES,
    _app,
    compose_environment,
    container_port,
    kustomize_argv,
    load_compose,
    pod_spec,
    render,
    serves,
    specs,
    workloads,
)

pytestmark = pytest.mark.deploy

OBSERVABILITY = ROOT / "deploy" / "observability"
PROMETHEUS_CONFIG = OBSERVABILITY / "prometheus.yml"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "streamwise.json"
DATASOURCES = OBSERVABILITY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = OBSERVABILITY / "grafana" / "provisioning" / "dashboards" / "streamwise.yml"
COMPONENT = K8S / "components" / "monitoring"
METRIC = re.compile(r"\b((?:streamwise|process|python)_[a-z0-9_]+)")
SUFFIXES = re.compile(r"_(bucket|sum|count|total|created)$")
LEARNING_METRICS = {
    "streamwise_trainer_examples_learned", "streamwise_trainer_progressive_metric", "streamwise_trainer_model_version",
    "streamwise_trainer_learned_to_published_seconds", "streamwise_trainer_consumer_lag", "streamwise_trainer_dead_letters",
    "streamwise_trainer_versions_published", "streamwise_predictor_model_version", "streamwise_predictor_swaps",
    "streamwise_predictor_swap_lag_seconds", "streamwise_predictor_refused_blobs", "streamwise_predictor_predictions",
    "streamwise_ingest_accepted", "streamwise_http_requests",
}
"""What issue 7 asks to see: the dashboard must show each of them."""


def base_name(name: str) -> str:
    return SUFFIXES.sub("", name)


@cache
def exported(service: str) -> frozenset[str]:
    """Metric names (without sample suffixes) in the service's own /metrics answer, in process."""
    if service == "trainer":
        from streamwise_core.adapters.telemetry import exposition
        from streamwise_trainer.observability import register_observability

        class Pages:
            def page(self, path: str) -> Any:
                return lambda handler: handler

        text = exposition(register_observability(Pages(), object()), None, all_workers=False)[0].decode()  # type: ignore[arg-type]
    else:
        async def scrape() -> str:
            transport = httpx.ASGITransport(app=_app(service))
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                response = await client.get("/metrics")
                assert response.status_code == 200
                return response.text

        text = asyncio.run(scrape())
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    return frozenset(base_name(n) for n in names)


# --- the compose profile ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def test_prometheus_and_grafana_are_an_optional_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["observability"], f"{name} runs only when asked for"
        image, _, tag = services[name]["image"].rpartition(":")
        assert image in ("prom/prometheus", "grafana/grafana") and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), "a pinned image"
    assert set(compose["volumes"]) >= {"prometheus-data", "grafana-data"}


def test_the_local_prometheus_is_the_release_compose_pins(compose: dict[str, Any]) -> None:
    """The real tier runs ``streamwise-local/prometheus``, built from the Go module of this release."""
    assert compose["services"]["prometheus"]["image"] == f"prom/prometheus:{PROMETHEUS_VERSION}"


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Bind mounts of a compose service: container path -> file or folder in the repository."""
    out = {}
    for mount in service["volumes"]:
        source, target = mount.split(":")[:2]
        if source.startswith("./"):
            out[target] = ROOT / source
    return out


def test_prometheus_scrapes_every_service_where_it_serves_metrics(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    mounts = _mounts(prometheus)
    config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    assert mounts[config_flag.split("=", 1)[1]] == PROMETHEUS_CONFIG
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name in SERVICES:
        job = jobs[name]
        path = job.get("metrics_path", "/metrics")
        assert serves(name, path), f"{name} serves no {path}"
        [sd] = job["dns_sd_configs"]
        assert sd["names"] == [name] and sd["type"] == "A", "every replica of a scaled service"
        assert sd["port"] == container_port(compose["services"][name]["ports"][0]) == specs()[name].port
    assert config["global"]["scrape_timeout"] < config["global"]["scrape_interval"]


def test_grafana_is_provisioned_with_the_prometheus_and_the_dashboard(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = _mounts(grafana)
    provisioning = mounts["/etc/grafana/provisioning"]
    assert DATASOURCES.parent.parent == provisioning and DASHBOARD_PROVIDERS.parent.parent == provisioning
    [datasource] = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    prometheus_port = container_port(compose["services"]["prometheus"]["ports"][0])
    assert datasource["type"] == "prometheus" and datasource["url"] == f"http://prometheus:{prometheus_port}"
    [provider] = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"]
    assert mounts[provider["options"]["path"]] == DASHBOARD.parent
    home = compose_environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert mounts[str(Path(home).parent)] / Path(home).name == DASHBOARD
    assert grafana["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    dashboard = json.loads(DASHBOARD.read_text())
    sources = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert sources == {datasource["uid"]}


def _dashboard_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs, "a dashboard without queries"
    return {base_name(m) for expr in exprs for m in METRIC.findall(expr)}


def test_every_metric_on_the_dashboard_is_exported_by_a_service() -> None:
    everything = set().union(*(exported(name) for name in SERVICES))
    unknown = _dashboard_metrics() - everything
    assert not unknown, f"the dashboard queries metrics no service exports: {sorted(unknown)}"


def test_the_dashboard_shows_the_learning() -> None:
    missing = LEARNING_METRICS - _dashboard_metrics()
    assert not missing, sorted(missing)


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_exports_its_own_metrics(name: str) -> None:
    ours = {m for m in exported(name) if m.startswith(f"streamwise_{name}_")}
    assert ours or name == "webapp", f"{name} exports no metric of its own"
    if name != "trainer":
        assert {"streamwise_http_requests", "streamwise_http_request_duration_seconds"} <= exported(name)


# --- Kubernetes ------------------------------------------------------------------------------------


@cache
def _with_component(overlay: str) -> tuple[dict[str, Any], ...]:
    """``overlay`` with the monitoring component added, as its README says to."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        overlay_dir = os.path.relpath(K8S / "overlays" / overlay, root)
        namespace = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())["namespace"]
        (root / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": namespace,
            "resources": [overlay_dir], "components": [os.path.relpath(COMPONENT, root)],
        }))
        result = subprocess.run([*kustomize_argv(), str(root)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] in ("In", "NotIn", "Exists", "DoesNotExist"), expr
        present, value = expr["key"] in labels, labels.get(expr["key"])
        ok = {"In": present and value in expr.get("values", []), "NotIn": not present or value not in expr.get("values", []),
              "Exists": present, "DoesNotExist": not present}[expr["operator"]]
        if not ok:
            return False
    return True


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_pod_monitor_scrapes_exactly_the_service_pods(overlay: str) -> None:
    docs = _with_component(overlay)
    [monitor] = [d for d in docs if d["kind"] == "PodMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    namespace = next(d for d in docs if d["kind"] == "Namespace")["metadata"]["name"]
    assert monitor["metadata"]["namespace"] == namespace
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    selected = {}
    for w in workloads(overlay):
        if w["kind"] != "Job" and _selects(monitor["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"]):
            selected[w["metadata"]["labels"]["app.kubernetes.io/component"]] = w
    assert set(selected) == set(SERVICES), "the four services, not Kafka, Redis or PostgreSQL"
    for name, w in selected.items():
        [container] = pod_spec(w)["containers"]
        ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
        assert ports[endpoint["port"]] == specs()[name].port
        assert serves(name, endpoint["path"])
    # The component adds the PodMonitor and changes nothing else.
    assert [d for d in docs if d["kind"] != "PodMonitor"] == list(render(overlay))


def test_the_component_is_opt_in() -> None:
    for overlay in ("dev", "prod"):
        kustomization = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
        assert "components" not in kustomization, "a cluster without the Prometheus Operator CRDs must still apply"
        assert not [d for d in render(overlay) if d["apiVersion"].startswith("monitoring.coreos.com/")]
