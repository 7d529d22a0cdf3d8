"""Every kustomization against a real Kubernetes API server (v1.34, built from the Go module proxy)
with Strimzi 1.2.0's CRDs installed: ``kubectl apply --server-side --dry-run=server``, strict field
validation, the default admission plugins."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from streamwise_devstack.kube_apiserver import KubeApiServer
from tests.e2e.loop_client import wait_for

from ..strimzi_schemas import CRD_DIR
from ..support import K8S, render

pytestmark = [pytest.mark.real, pytest.mark.deploy, pytest.mark.timeout(3600)]

KUSTOMIZATIONS = {"dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod", "demo": K8S / "demo"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApiServer]:
    with KubeApiServer(tmp_path_factory.mktemp("kube-apiserver")) as server:
        server.kubectl("apply", "--server-side", "-f", str(CRD_DIR))
        # Not `kubectl wait`: it fails on a CRD whose status has no conditions yet.
        wait_for(lambda: _established(server), 120, "the Strimzi CRDs established")
        yield server


def _established(server: KubeApiServer) -> bool:
    items = json.loads(server.kubectl("get", "crd", "-o", "json").stdout)["items"]
    return len(items) == len(list(CRD_DIR.glob("*.yaml"))) and all(
        any(c["type"] == "Established" and c["status"] == "True" for c in (item.get("status", {}).get("conditions") or []))
        for item in items
    )


def _namespaces(name: str) -> set[str]:
    """A dry run creates no namespace, and objects in a missing one are refused: create them."""
    return {doc["metadata"].get("namespace") or doc["metadata"]["name"] for doc in render(name)
            if doc["kind"] == "Namespace" or doc["metadata"].get("namespace")}


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_server_side_dry_run_accepts_every_object(api: KubeApiServer, name: str) -> None:
    for namespace in _namespaces(name):
        api.kubectl("create", "namespace", namespace, check=False)
    result = api.kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=streamwise-test",
                         "-k", str(KUSTOMIZATIONS[name]), check=False)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr  # e.g. a Pod Security "would violate"
    applied = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(applied) == len(render(name)), result.stdout
    assert all(line.endswith("(server dry run)") for line in applied), result.stdout


def test_the_server_refuses_what_strimzi_1_no_longer_serves_and_unknown_fields(api: KubeApiServer, tmp_path: Path) -> None:
    """Guards that the run above checks something: Strimzi's retired v1beta2 API, and a field the
    CRD's schema does not have, are both refused."""
    api.kubectl("create", "namespace", "streamwise", check=False)
    [kafka] = [d for d in render("prod") if d["kind"] == "Kafka"]
    old = {**kafka, "apiVersion": "kafka.strimzi.io/v1beta2"}
    refused = api.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=yaml.safe_dump(old), check=False)
    assert refused.returncode != 0 and "v1beta2" in refused.stderr, refused.stderr
    [topic] = [d for d in render("prod") if d["kind"] == "KafkaTopic"][:1]
    unknown = {**topic, "spec": {**topic["spec"], "retentionDays": 7}}
    refused = api.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=yaml.safe_dump(unknown), check=False)
    assert refused.returncode != 0 and "retentionDays" in refused.stderr, refused.stderr
