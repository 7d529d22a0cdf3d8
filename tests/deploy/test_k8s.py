"""deploy/k8s: every overlay built by a real kustomize, validated against the Kubernetes schemas,
and consistent with the code (commands, ports, probe paths, settings) and with the design."""

from __future__ import annotations

import base64
import ipaddress
import re
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate.utils import latest_version

from streamwise_core.adapters.kafka_access import topic_acls
from streamwise_core.adapters.redis_access import SERVICE_OPERATIONS as REDIS_OPERATIONS
from streamwise_core.adapters.registry.access import SERVICE_ACCESS as REGISTRY_ACCESS
from streamwise_core.adapters.settings import DEV_API_KEY, DEV_SIGNING_KEY, Settings, Topics
from streamwise_core.contracts.appspec import load_app_spec

from . import strimzi_schemas
from .netpol import Endpoint, flows, selects
from .support import (
    APP_SPEC,
    DOCKERFILE,
    IMAGE_APP_SPEC,
    K8S,
    OVERLAYS,
    SERVICES,
    SETTINGS_CLASSES,
    all_containers,
    component,
    compose_command,
    container_env_names,
    generated,
    kustomize_version,
    load_compose,
    objects,
    one,
    pod_spec,
    render,
    serves,
    settings_env_names,
    settings_from_env,
    specs,
    streamwise_container,
    workload,
    workloads,
)

pytestmark = pytest.mark.deploy

NAME = {"app.kubernetes.io/name": "streamwise"}
NAMESPACES = {"dev": "streamwise-dev", "prod": "streamwise"}
SECRET_KEYS = {"signing-keys", "api-keys", "database-url", "redis-url"}
"""What the base reads from the Secret `streamwise-secrets` (dev: generated, shared by all services)."""
OWNER_KEY = "database-url-owner"
"""prod: the registry owner's URL, for the web app's init container ``migrate`` only."""
REGISTRY_ROLES = {"trainer": "streamwise_trainer", "webapp": "streamwise_webapp"}
"""prod: the fixed PostgreSQL role names `migrate` grants (deploy/README.md)."""


def _prod_secret_keys(name: str) -> set[str]:
    """The keys of `streamwise-secrets` a prod container needs: each service its own Redis user
    (``redis_access``) and registry role (``registry/access.py``), none for what it does not use."""
    keys = {"signing-keys", "api-keys"}  # production refuses the development ones (a Settings validator)
    if name == "migrate":
        return keys | {OWNER_KEY}
    if name in REDIS_OPERATIONS:
        keys.add(f"redis-url-{name}")
    if REGISTRY_ACCESS[name].connects:
        keys.add(f"database-url-{name}")
    return keys


PROD_SECRET_KEYS = set().union(*(_prod_secret_keys(n) for n in (*SERVICES, "migrate")))
"""What prod reads from the Secret `streamwise-secrets` you create."""
PROD_SECRETS = {
    "signing-keys": "k2025:0123456789abcdef0123456789", "api-keys": "a-real-key",
    OWNER_KEY: "postgresql+psycopg://streamwise_owner:pw@db.internal:5432/streamwise?sslmode=verify-full",
    **{f"database-url-{s}": f"postgresql+psycopg://{r}:pw@db.internal:5432/streamwise?sslmode=verify-full"
       for s, r in REGISTRY_ROLES.items()},
    **{f"redis-url-{s}": f"rediss://{s}:pw@redis.internal:6379/0" for s in REDIS_OPERATIONS},
}
"""Made-up production values of every prod key."""
STREAMWISE_CONTAINERS = (*SERVICES, "migrate")
"""Every container of ours: the four services and the web app's init container ``migrate``."""
STRIMZI_KINDS = strimzi_schemas.kinds()
K8S_VERSION = latest_version()


def test_kustomize_is_real_and_schemas_are_current() -> None:
    version = kustomize_version()
    assert re.search(r"v?5\.\d+", version), version
    major, minor = (int(x) for x in K8S_VERSION.split(".")[:2])
    assert (major, minor) >= (1, 33), f"kubernetes-validate ships schemas up to {K8S_VERSION} only"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds(overlay: str) -> None:
    docs = render(overlay)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy", "Ingress",
            "HorizontalPodAutoscaler", "PodDisruptionBudget", "Namespace"} <= kinds
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACES[overlay], doc["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_valid_against_the_kubernetes_schemas(overlay: str) -> None:
    checked = 0
    for doc in render(overlay):
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in STRIMZI_KINDS:
            errors = list(jsonschema.Draft7Validator(strimzi_schemas.schema(doc["kind"])).iter_errors(doc))
            assert not errors, f"{where}: " + "; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{overlay} {where} (Kubernetes {exc.version}): {'.'.join(map(str, exc.path))}: {exc.message}")
        checked += 1
    assert checked >= 25


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_name_end_to_end(overlay: str) -> None:
    for doc in render(overlay):
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == "streamwise", f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in ("Deployment", "StatefulSet", "Job", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress"):
            assert component(doc), f"{doc['kind']}/{doc['metadata']['name']} has no component label"
    for w in workloads(overlay):
        template = w["spec"]["template"]["metadata"]["labels"]
        assert template == {**NAME, "app.kubernetes.io/component": component(w)}
        if w["kind"] != "Job":
            assert w["spec"]["selector"]["matchLabels"] == template


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", SERVICES)
def test_command_and_port_are_service_specs(overlay: str, name: str) -> None:
    spec = specs()[name]
    [container] = pod_spec(workload(overlay, name))["containers"]
    assert container["command"] == list(spec.argv)
    assert "args" not in container
    assert [p["containerPort"] for p in container["ports"]] == [spec.port]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    for key, value in spec.env:
        assert env[key] == value, f"{name}: {key}"


def _probe_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", SERVICES)
def test_probes_ask_what_the_code_serves(overlay: str, name: str) -> None:
    [container] = pod_spec(workload(overlay, name))["containers"]
    expected = {"livenessProbe": "/healthz", "startupProbe": "/healthz", "readinessProbe": "/healthz" if name == "trainer" else "/readyz"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, f"{name} {probe}"
        assert _probe_port(container, get["port"]) == specs()[name].port
        assert serves(name, get["path"]), f"{name} serves no {get['path']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", STREAMWISE_CONTAINERS)
def test_every_variable_is_a_setting_of_that_service(overlay: str, name: str) -> None:
    container = streamwise_container(overlay, name)
    names = container_env_names(overlay, container)
    valid = settings_env_names(SETTINGS_CLASSES[name])
    unknown = sorted(set(names) - valid)
    assert not unknown, f"{name}: not settings of {SETTINGS_CLASSES[name].__name__}: {unknown}"
    # every service needs the secrets that the production check looks at
    assert {"STREAMWISE_SIGNING_KEYS", "STREAMWISE_API_KEYS"} <= set(names)
    # ... and a database URL where it has one (prod: only the services with a registry role)
    uses_registry = overlay == "dev" or name == "migrate" or REGISTRY_ACCESS[name].connects
    assert ("STREAMWISE_DATABASE_URL" in names) == uses_registry, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve(overlay: str) -> None:
    rendered = {(d["kind"], d["metadata"]["name"]) for d in render(overlay)}
    for w in workloads(overlay):
        spec = pod_spec(w)
        if "serviceAccountName" in spec:
            assert ("ServiceAccount", spec["serviceAccountName"]) in rendered
        for c in all_containers(spec):
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    assert ("ConfigMap", src["configMapRef"]["name"]) in rendered
            for var in c.get("env", []):
                ref = var.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    cm = one(overlay, "ConfigMap", ref["configMapKeyRef"]["name"])
                    assert ref["configMapKeyRef"]["key"] in cm["data"]
                if "secretKeyRef" in ref:
                    name, key = ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
                    if overlay == "prod":
                        # prod expects the Secrets to exist already: created by you, or by Strimzi's
                        # User Operator for a KafkaUser (key `password`), not by kustomize
                        optional = ref["secretKeyRef"].get("optional") is True  # e.g. the web app's first admin
                        kafka_user = name in _kafka_user_names() and key == "password"
                        assert (name == "streamwise-secrets" and (key in PROD_SECRET_KEYS or optional)) or kafka_user, f"{name}/{key}"
                    else:
                        assert key in one(overlay, "Secret", name)["data"], f"{w['metadata']['name']}: {name}/{key}"
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                if overlay == "prod":  # Strimzi's cluster CA certificate, the only Secret mounted
                    assert name == f"{_kafka()['metadata']['name']}-cluster-ca-cert", name
                else:
                    assert ("Secret", name) in rendered, name
    if overlay == "prod":
        assert not objects(overlay, "Secret"), "prod generates no Secret"


def _expanded_env(overlay: str, name: str, secrets: dict[str, str]) -> dict[str, str]:
    """The environment the kubelet would give a container, with ``secrets`` as the Secret's data."""
    container = streamwise_container(overlay, name)
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        env.update(one(overlay, "ConfigMap", src["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "configMapKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = one(overlay, "ConfigMap", ref["name"])["data"][ref["key"]]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            data = secrets if ref["name"] == "streamwise-secrets" else _user_operator_secret(overlay, ref["name"])
            if ref["key"] in data or not ref.get("optional"):  # an optional key may be absent
                env[var["name"]] = data[ref["key"]]
    return env


def _user_operator_secret(overlay: str, user: str) -> dict[str, str]:
    """The Secret Strimzi's User Operator creates for the KafkaUser ``user`` (a made-up password)."""
    one(overlay, "KafkaUser", user)
    return {"password": f"{user}-scram-password"}


def _dev_secrets() -> dict[str, str]:
    data = generated("dev", "Secret", "streamwise-secrets")["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


@pytest.mark.parametrize("name", STREAMWISE_CONTAINERS)
def test_settings_accept_the_environment(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dev = settings_from_env(monkeypatch, SETTINGS_CLASSES[name], _expanded_env("dev", name, _dev_secrets()))
    assert dev.environment == "development" and str(dev.app_spec) == IMAGE_APP_SPEC
    real = PROD_SECRETS
    prod = settings_from_env(monkeypatch, SETTINGS_CLASSES[name], _expanded_env("prod", name, real))
    assert prod.environment == "production"
    # the services reach Kafka as their own user over TLS; `migrate` does not use Kafka
    assert prod.kafka.security_protocol == ("PLAINTEXT" if name == "migrate" else "SASL_SSL")
    # ... and production refuses the development secrets.
    dev_in_prod = {**real, "signing-keys": DEV_SIGNING_KEY, "api-keys": DEV_API_KEY}
    with pytest.raises(ValueError, match="development signing key"):
        settings_from_env(monkeypatch, SETTINGS_CLASSES[name], _expanded_env("prod", name, dev_in_prod))


def test_dev_overlay_carries_development_values_only() -> None:
    secrets = _dev_secrets()
    assert secrets["signing-keys"] == DEV_SIGNING_KEY and secrets["api-keys"] == DEV_API_KEY
    assert "dev" in secrets["postgres-password"]
    assert "DEVELOPMENT VALUES ONLY" in (K8S / "overlays/dev/kustomization.yaml").read_text()
    assert "secretGenerator" not in (K8S / "base/kustomization.yaml").read_text()
    assert "secretGenerator" not in (K8S / "overlays/prod/kustomization.yaml").read_text()


def _uid_of_image() -> int:
    return int(re.search(r"^ARG UID=(\d+)$", DOCKERFILE.read_text(), re.M).group(1))  # type: ignore[union-attr]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_restricted_security_context(overlay: str) -> None:
    for w in workloads(overlay):
        where = f"{overlay} {w['kind']}/{w['metadata']['name']}"
        spec = pod_spec(w)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["enableServiceLinks"] is False, f"{where}: Services would inject *_PORT variables"
        ours = component(w) in SERVICES
        if ours:
            assert pod["runAsUser"] == _uid_of_image(), where
        for c in all_containers(spec):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where}: {kind}"
            if ours:
                assert sc["readOnlyRootFilesystem"] is True, where
                mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
                volumes = {v["name"]: v for v in spec["volumes"]}
                assert "emptyDir" in volumes[mounts["/tmp"]], where
    namespace = objects(overlay, "Namespace")[0]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_trainer_has_a_writable_working_directory() -> None:
    """faust writes '<app id>-data' in the working directory (the image's WORKDIR)."""
    workdir = re.findall(r"^WORKDIR (\S+)$", DOCKERFILE.read_text(), re.M)[-1]
    spec = pod_spec(workload("dev", "trainer"))
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    assert "emptyDir" in {v["name"]: v for v in spec["volumes"]}[mounts[workdir]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_trainer_is_the_single_writer(overlay: str) -> None:
    trainer = workload(overlay, "trainer")
    assert trainer["spec"]["replicas"] == 1
    assert trainer["spec"]["strategy"] == {"type": "Recreate"}
    targets = {h["spec"]["scaleTargetRef"]["name"] for h in objects(overlay, "HorizontalPodAutoscaler")}
    assert trainer["metadata"]["name"] not in targets
    assert "SINGLE WRITER" in (K8S / "base/trainer.yaml").read_text()


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", ["ingest", "predictor"])
def test_stateless_apis_scale_out(overlay: str, name: str) -> None:
    deployment = workload(overlay, name)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in deployment["spec"], "the HPA owns the count: a fixed one would reset it on every apply"
    [hpa] = [h for h in objects(overlay, "HorizontalPodAutoscaler") if h["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]]
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    [pdb] = [p for p in objects(overlay, "PodDisruptionBudget") if p["spec"]["selector"]["matchLabels"] == labels]
    assert pdb["spec"]["minAvailable"] >= 1


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", ["ingest", "predictor", "webapp"])
def test_serving_pods_drain_before_they_stop(overlay: str, name: str) -> None:
    """A terminating pod leaves its Service's endpoints while it is told to stop; it serves on
    through the preStop pause, then uvicorn's graceful shutdown, all within the grace period."""
    spec = pod_spec(workload(overlay, name))
    [container] = spec["containers"]
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    command = container["command"]
    graceful = int(command[command.index("--timeout-graceful-shutdown") + 1])
    assert pause >= 5
    assert spec["terminationGracePeriodSeconds"] > pause + graceful


def test_migrations_run_in_the_web_apps_init_container_as_in_compose() -> None:
    """No Job (a Job's pod template cannot change, so a second apply with a new image failed): the
    web app's pods migrate first; the trainer migrates at start; an advisory lock orders them.
    dev migrates as compose does; prod also grants the services' roles (the next test)."""
    for overlay in OVERLAYS:
        assert not objects(overlay, "Job"), overlay
        [init] = pod_spec(workload(overlay, "webapp"))["initContainers"]
        assert init["name"] == "migrate" and init["image"] == pod_spec(workload(overlay, "webapp"))["containers"][0]["image"]
    # the image's registry CLI, as compose runs it; compose also creates and grants the services' roles
    compose_migrate = compose_command(load_compose()["services"]["migrate"])
    assert streamwise_container("dev", "migrate")["command"] == compose_migrate[:5]


def _secret_keys(overlay: str, container: dict[str, Any]) -> set[str]:
    return {
        var["valueFrom"]["secretKeyRef"]["key"]
        for var in container.get("env", [])
        if var.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "streamwise-secrets"
        and not var["valueFrom"]["secretKeyRef"].get("optional")
    }


@pytest.mark.parametrize("name", STREAMWISE_CONTAINERS)
def test_prod_containers_read_exactly_their_services_credentials(name: str) -> None:
    """Each service its own Redis user and registry role, nothing for what it does not use (ingest:
    no Redis, no registry; the predictor: no registry); only `migrate` has the owner's URL."""
    container = streamwise_container("prod", name)
    assert _secret_keys("prod", container) == _prod_secret_keys(name)
    env = {e["name"]: e for e in container.get("env", [])}
    assert ("STREAMWISE_REDIS_URL" in env) == (name in REDIS_OPERATIONS)
    assert ("STREAMWISE_DATABASE_URL" in env) == (name == "migrate" or REGISTRY_ACCESS[name].connects)
    assert not any(src.get("secretRef") for src in container.get("envFrom", [])), "no whole Secret as variables"


def test_prod_migrate_runs_the_migration_and_the_grant_as_the_owner() -> None:
    """The owner migrates and grants each registry service's role its rights in one transaction
    (``streamwise registry migrate --grant``, the image's CLI), with the role names of the README."""
    migrate = streamwise_container("prod", "migrate")
    env = {e["name"]: e for e in migrate["env"]}
    assert env["STREAMWISE_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "streamwise-secrets", "key": OWNER_KEY}
    command = migrate["command"]
    assert command[:5] == ["python", "-m", "streamwise_devstack.cli", "registry", "migrate"] and "--grant" in command
    roles = dict(command[i + 1].split("=", 1) for i, arg in enumerate(command) if arg == "--role")
    assert roles == REGISTRY_ROLES
    assert set(roles) == {s for s, a in REGISTRY_ACCESS.items() if a.connects}, "every service with registry rights"
    readme = (K8S.parent / "README.md").read_text()
    assert all(f"`{role}`" in readme for role in roles.values()), "the role names are documented"
    # no other container runs as the owner
    for name in SERVICES:
        assert OWNER_KEY not in _secret_keys("prod", streamwise_container("prod", name)), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_select_their_pods(overlay: str) -> None:
    pods = {component(w): w for w in workloads(overlay)}
    for svc in objects(overlay, "Service"):
        selected = [w for w in pods.values() if all(w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in svc["spec"]["selector"].items())]
        assert len(selected) == 1, svc["metadata"]["name"]
        [container] = pod_spec(selected[0])["containers"][:1]
        for port in svc["spec"]["ports"]:
            assert _probe_port(container, port["targetPort"]) == port["port"], svc["metadata"]["name"]
        if component(svc) in SERVICES:
            assert svc["spec"]["ports"][0]["port"] == specs()[component(svc)].port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_reaches_the_webapp(overlay: str) -> None:
    [ingress] = objects(overlay, "Ingress")
    backends = [p["backend"]["service"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
    webapp = one(overlay, "Service", "streamwise-webapp")
    assert backends and all(b == {"name": "streamwise-webapp", "port": {"name": webapp["spec"]["ports"][0]["name"]}} for b in backends)
    if overlay == "prod":
        assert ingress["spec"]["tls"] and ingress["spec"]["rules"][0]["host"] == "streamwise.example.com"


INTERNAL_PATHS = {"/metrics", "/healthz", "/readyz"}
"""For Prometheus and the kubelet inside the cluster: never through the Ingress."""


def _ingress_matches(rule_path: str, kind: str, path: str) -> bool:
    """Kubernetes' Ingress matching: Exact is equality; Prefix matches whole path elements."""
    if kind == "Exact":
        return path == rule_path
    prefix = rule_path.rstrip("/").split("/")
    return path.rstrip("/").split("/")[: len(prefix)] == prefix


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_publishes_every_route_of_the_webapp_but_metrics_and_probes(overlay: str) -> None:
    from streamwise_webapp.app import create_app
    from streamwise_webapp.settings import WebappSettings

    app = create_app(WebappSettings(app_spec=APP_SPEC))
    routes = {r.path for r in app.routes if hasattr(r, "path") and r.path} | set(app.openapi()["paths"])
    assert routes >= INTERNAL_PATHS and "/api/v1/models/current" in routes
    [ingress] = objects(overlay, "Ingress")
    rules = [(p["path"], p["pathType"]) for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
    for route in sorted(routes):
        published = any(_ingress_matches(rule, kind, route) for rule, kind in rules)
        assert published == (route not in INTERNAL_PATHS), f"{overlay}: {route} {'is' if published else 'is not'} published"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", SERVICES)
def test_prometheus_scrape_annotations(overlay: str, name: str) -> None:
    annotations = workload(overlay, name)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == specs()[name].port


@pytest.mark.parametrize("name", SERVICES)
def test_scrape_path_is_served(name: str) -> None:
    path = workload("dev", name)["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
    assert serves(name, path)


# --- network policies ------------------------------------------------------------------------------

EXTERNAL_CLIENT = Endpoint("external-client", None, ip="203.0.113.7")
OTHER_NAMESPACE = Endpoint("other-namespace-pod", "monitoring", {"app": "prometheus"})
KUBE_DNS = Endpoint("kube-dns", "kube-system", {"k8s-app": "kube-dns"}, ports=(53,))
INTERNET = Endpoint("internet", None, ports=(80, 443), ip="198.51.100.9")

KAFKA_PORTS = {"dev": 9092, "prod": 9093}
"""The broker port the services reach: dev's plaintext listener, prod's TLS listener (Strimzi)."""
DESIGN = {
    ("external-client", "ingest", 8001), ("external-client", "predictor", 8002), ("external-client", "webapp", 8000),
    ("other-namespace-pod", "ingest", 8001), ("other-namespace-pod", "predictor", 8002),
    ("other-namespace-pod", "webapp", 8000), ("other-namespace-pod", "trainer", 8003),
    ("trainer", "redis", 6379), ("trainer", "postgres", 5432),
    ("predictor", "redis", 6379),
    ("webapp", "redis", 6379), ("webapp", "postgres", 5432),
    ("webapp", "ingest", 8001), ("webapp", "predictor", 8002), ("webapp", "trainer", 8003),
}
"""The flows besides Kafka, which every service reaches on its overlay's port (``_design``)."""


def _design(overlay: str) -> set[tuple[str, str, int]]:
    return DESIGN | {(name, "kafka", KAFKA_PORTS[overlay]) for name in SERVICES}


def _pods(overlay: str) -> list[Endpoint]:
    return [
        Endpoint(component(w), NAMESPACES[overlay], w["spec"]["template"]["metadata"]["labels"],
                 tuple(p["containerPort"] for c in pod_spec(w)["containers"] for p in c.get("ports", [])))
        for w in workloads(overlay)
    ]


def _cidr_host(overlay: str, policy: str) -> str:
    [rule] = one(overlay, "NetworkPolicy", policy)["spec"]["egress"]
    return str(next(ipaddress.ip_network(rule["to"][0]["ipBlock"]["cidr"]).hosts()))


def _allowed_flows(overlay: str) -> set[tuple[str, str, int]]:
    pods = _pods(overlay)
    destinations = [*pods, KUBE_DNS, INTERNET]
    if overlay == "prod":
        destinations += [
            Endpoint("kafka", "streamwise", {"strimzi.io/cluster": "streamwise", "strimzi.io/kind": "Kafka",
                                             "strimzi.io/broker-role": "true"}, ports=(9092, 9093)),
            Endpoint("redis", None, ports=(6379,), ip=_cidr_host(overlay, "streamwise-to-redis")),
            Endpoint("postgres", None, ports=(5432,), ip=_cidr_host(overlay, "streamwise-to-postgres")),
        ]
    return flows(objects(overlay, "NetworkPolicy"), [EXTERNAL_CLIENT, OTHER_NAMESPACE, *pods], destinations)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_allow_exactly_the_design(overlay: str) -> None:
    ours = {p.name for p in _pods(overlay)}
    # Flows between the pseudo endpoints (outside client, internet, Strimzi's own pods) are not ours to decide.
    allowed = {f for f in _allowed_flows(overlay) if f[0] in ours or f[1] in ours}
    dns = {(name, "kube-dns", 53) for name in ours}
    assert dns <= allowed, "every pod resolves names"
    assert allowed - dns == _design(overlay)


def test_network_policy_evaluator_sees_a_denial() -> None:
    """Guard: without policies everything is allowed; the default deny alone allows nothing."""
    pods = _pods("dev")
    assert ("trainer", "internet", 443) in flows([], pods, [INTERNET])
    assert ("trainer", "internet", 443) not in _allowed_flows("dev")
    deny = [one("dev", "NetworkPolicy", "streamwise-default-deny")]
    assert flows(deny, [EXTERNAL_CLIENT, OTHER_NAMESPACE, *pods], pods) == set()
    assert flows(deny, pods, [KUBE_DNS, INTERNET]) == set()


def test_the_demo_job_reaches_ingest_only() -> None:
    """deploy/k8s/demo beside the dev overlay: with the dev policies, the demo pod may call ingest
    and resolve names, nothing else."""
    [job] = objects("demo", "Job")
    demo = Endpoint("demo", NAMESPACES["dev"], job["spec"]["template"]["metadata"]["labels"])
    policies = [*objects("dev", "NetworkPolicy"), *objects("demo", "NetworkPolicy")]
    allowed = flows(policies, [demo], [*_pods("dev"), KUBE_DNS, INTERNET])
    assert allowed == {("demo", "ingest", 8001), ("demo", "kube-dns", 53)}


def test_the_demo_job_is_composes_demo_in_the_dev_namespace() -> None:
    [job] = objects("demo", "Job")
    assert job["metadata"]["namespace"] == NAMESPACES["dev"]
    spec = pod_spec(job)
    [container] = spec["containers"]
    assert container["image"] == pod_spec(workload("dev", "ingest"))["containers"][0]["image"]
    command = container["command"]
    compose = compose_command(load_compose()["services"]["demo"])
    assert command[:3] == compose[:3] == ["python", "-m", "streamwise_devstack.demo_stream"]
    ingest = one("dev", "Service", "streamwise-ingest")
    assert command[command.index("--ingest-url") + 1] == f"http://{ingest['metadata']['name']}:{ingest['spec']['ports'][0]['port']}"
    assert command[command.index("--rate") + 1] == compose[compose.index("--rate") + 1]
    [key] = container["env"]
    assert key["name"] == "STREAMWISE_API_KEY" and key["valueFrom"]["secretKeyRef"]["key"] in _dev_secrets()
    # Applied on its own, its reference is not rewritten by kustomize: the dev Secret's name is stable.
    [secret] = objects("dev", "Secret")
    assert key["valueFrom"]["secretKeyRef"]["name"] == secret["metadata"]["name"]
    for doc in render("demo"):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert spec["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]


# --- wiring of the overlays ------------------------------------------------------------------------


def _settings_cm(overlay: str) -> dict[str, str]:
    return generated(overlay, "ConfigMap", "streamwise-settings")["data"]


def test_dev_wiring_reaches_the_in_cluster_backing_services() -> None:
    secrets, cm = _dev_secrets(), _settings_cm("dev")
    services = {s["metadata"]["name"]: s for s in objects("dev", "Service")}

    def reachable(host: str, port: int, comp: str) -> None:
        svc = services[host]
        assert component(svc) == comp and port in [p["port"] for p in svc["spec"]["ports"]]

    host, port = cm["STREAMWISE_KAFKA__BOOTSTRAP"].split(":")
    reachable(host, int(port), "kafka")
    kafka_env = {e["name"]: e.get("value") for e in pod_spec(workload("dev", "kafka"))["containers"][0]["env"]}
    assert f"PLAINTEXT://{host}:{port}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    redis = urlsplit(secrets["redis-url"])
    reachable(redis.hostname, redis.port, "redis")
    db = urlsplit(secrets["database-url"])
    reachable(db.hostname, db.port, "postgres")
    pg_env = {e["name"]: e for e in pod_spec(workload("dev", "postgres"))["containers"][0]["env"]}
    assert db.username == pg_env["POSTGRES_USER"]["value"] and db.path == f"/{pg_env['POSTGRES_DB']['value']}"
    assert pg_env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "postgres-password"
    assert db.password == secrets["postgres-password"]
    assert cm["STREAMWISE_APP_SPEC"] == IMAGE_APP_SPEC


def test_prod_kafka_is_strimzi_with_the_five_topics() -> None:
    [kafka] = objects("prod", "Kafka")
    [pool] = objects("prod", "KafkaNodePool")
    cluster = kafka["metadata"]["name"]
    assert kafka["apiVersion"] == pool["apiVersion"] == "kafka.strimzi.io/v1", "Strimzi 1.0 serves only v1"
    assert not kafka["metadata"].get("annotations"), "KRaft and node pools need no annotation (ignored since Strimzi 0.48)"
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == cluster
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}
    cm = _settings_cm("prod")
    assert cm["STREAMWISE_ENVIRONMENT"] == "production"
    assert cm["STREAMWISE_KAFKA__BOOTSTRAP"] == f"{cluster}-kafka-bootstrap:{_services_listener()['port']}"
    spec = load_app_spec(APP_SPEC)
    expected = Topics.for_app(cm["STREAMWISE_TOPIC_PREFIX"], spec.name).all()
    assert expected == [f"streamwise.fraud.{k}" for k in ("events", "labels", "predictions", "models", "dead-letters")]
    topics = objects("prod", "KafkaTopic")
    assert sorted(t["spec"]["topicName"] for t in topics) == sorted(expected)
    min_isr = int(kafka["spec"]["kafka"]["config"]["min.insync.replicas"])
    for topic in topics:
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert topic["spec"]["partitions"] == int(cm["STREAMWISE_KAFKA__PARTITIONS"])
        assert min_isr < topic["spec"]["replicas"] <= pool["spec"]["replicas"]
    to_kafka = one("prod", "NetworkPolicy", "streamwise-to-kafka")
    assert to_kafka["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"]["strimzi.io/cluster"] == cluster
    assert not [w for w in workloads("prod") if component(w) in ("kafka", "redis", "postgres")]


def test_prod_image_is_a_pinned_registry_image() -> None:
    images = {c["image"] for w in workloads("prod") for c in pod_spec(w)["containers"]}
    [image] = images
    name, _, tag = image.rpartition(":")
    assert "/" in name and tag and tag not in ("latest", "local")


def test_topic_names_follow_the_settings() -> None:
    """The KafkaTopic names are what the services compute from the prod ConfigMap."""
    cm = _settings_cm("prod")
    settings = Settings(app_spec=APP_SPEC, topic_prefix=cm["STREAMWISE_TOPIC_PREFIX"], _env_file=None)  # type: ignore[call-arg]
    assert sorted(settings.topics.all()) == sorted(t["spec"]["topicName"] for t in objects("prod", "KafkaTopic"))


# --- Kafka security in prod: TLS, SCRAM-SHA-512, one user per service, least privilege -------------


def _kafka() -> dict[str, Any]:
    [kafka] = objects("prod", "Kafka")
    return kafka


def _kafka_user_names() -> set[str]:
    return {u["metadata"]["name"] for u in objects("prod", "KafkaUser")}


def _kafka_users() -> dict[str, dict[str, Any]]:
    """The prod KafkaUsers by the service (their component label) they are for."""
    users = {component(u): u for u in objects("prod", "KafkaUser")}
    assert len(users) == len(objects("prod", "KafkaUser")), "one KafkaUser per service"
    return users


def _services_listener() -> dict[str, Any]:
    """The Strimzi listener that STREAMWISE_KAFKA__BOOTSTRAP names."""
    host, _, port = _settings_cm("prod")["STREAMWISE_KAFKA__BOOTSTRAP"].rpartition(":")
    assert host == f"{_kafka()['metadata']['name']}-kafka-bootstrap"
    [listener] = [lst for lst in _kafka()["spec"]["kafka"]["listeners"] if lst["port"] == int(port)]
    return listener


def test_prod_kafka_listener_is_tls_with_scram_and_the_cluster_authorizes() -> None:
    listener = _services_listener()
    assert listener["type"] == "internal" and listener["tls"] is True
    assert listener["authentication"]["type"] == "scram-sha-512"
    assert listener["port"] == KAFKA_PORTS["prod"], "the port the NetworkPolicies open"
    for other in _kafka()["spec"]["kafka"]["listeners"]:
        assert other["tls"] is True and other.get("authentication"), f"listener {other['name']}: plaintext or anonymous"
    assert _kafka()["spec"]["kafka"]["authorization"]["type"] == "simple"
    assert "userOperator" in _kafka()["spec"]["entityOperator"], "the User Operator makes the KafkaUsers' Secrets"
    # Strimzi's own NetworkPolicy of the brokers admits the four services on the listener, no other pod.
    [peer] = listener["networkPolicyPeers"]
    assert set(peer) == {"podSelector"}
    admitted = {component(w) for w in workloads("prod") if selects(peer["podSelector"], w["spec"]["template"]["metadata"]["labels"])}
    assert admitted == set(SERVICES)


@pytest.mark.parametrize("service", SERVICES)
def test_each_kafka_user_has_exactly_its_services_acls(service: str) -> None:
    """The prod KafkaUser's ACLs are kafka_access.topic_acls for the topics the services compute."""
    users = _kafka_users()
    assert set(users) == set(SERVICES)
    user = users[service]
    assert user["metadata"]["labels"]["strimzi.io/cluster"] == _kafka()["metadata"]["name"]
    assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
    authorization = user["spec"]["authorization"]
    assert authorization["type"] == "simple"
    granted: list[tuple[str, str, str]] = []
    for acl in authorization["acls"]:
        assert acl.get("type", "allow") == "allow" and acl.get("host", "*") == "*"
        assert acl["resource"]["type"] == "topic"
        granted += [(acl["resource"]["name"], acl["resource"].get("patternType", "literal"), op) for op in acl["operations"]]
    cm = _settings_cm("prod")
    assert cm["STREAMWISE_APP_SPEC"] == IMAGE_APP_SPEC  # the image's copy of APP_SPEC
    topics = Topics.for_app(cm["STREAMWISE_TOPIC_PREFIX"], load_app_spec(APP_SPEC).name)
    expected = {(acl.topic, "prefix" if acl.prefixed else "literal", acl.operation) for acl in topic_acls(service, topics)}
    assert len(granted) == len(set(granted)), "an ACL listed twice"
    assert set(granted) == expected


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_connects_to_kafka_as_its_own_user_over_tls(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    user = _kafka_users()[service]["metadata"]["name"]
    spec = pod_spec(workload("prod", service))
    container = streamwise_container("prod", service)
    env = {e["name"]: e for e in container["env"]}
    assert env["STREAMWISE_KAFKA__SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["STREAMWISE_KAFKA__SASL_USERNAME"]["value"] == user, "Strimzi's SCRAM user name is the KafkaUser's"
    assert env["STREAMWISE_KAFKA__SASL_PASSWORD"]["valueFrom"] == {"secretKeyRef": {"name": user, "key": "password"}}
    # The CA file is a file of the mounted cluster CA Secret (a whole-folder mount: it follows renewals).
    cafile = PurePosixPath(env["STREAMWISE_KAFKA__SSL_CAFILE"]["value"])
    [mount] = [m for m in container["volumeMounts"] if cafile.is_relative_to(m["mountPath"])]
    assert mount.get("readOnly") is True and "subPath" not in mount
    secret = {v["name"]: v for v in spec["volumes"]}[mount["name"]]["secret"]
    assert secret["secretName"] == f"{_kafka()['metadata']['name']}-cluster-ca-cert"
    relative = cafile.relative_to(mount["mountPath"]).as_posix()
    key = {i["path"]: i["key"] for i in secret["items"]}.get(relative) if "items" in secret else relative
    assert key == "ca.crt"
    # ... and the service's settings read it so: SCRAM-SHA-512 as the listener, its bootstrap, hostname checked.
    kafka = settings_from_env(monkeypatch, SETTINGS_CLASSES[service], _expanded_env("prod", service, PROD_SECRETS)).kafka
    assert kafka.encrypted and kafka.authenticated and kafka.ssl_check_hostname
    assert kafka.sasl_mechanism.lower() == _services_listener()["authentication"]["type"]
    assert kafka.sasl_username == user and str(kafka.ssl_cafile) == str(cafile)


def test_the_migrate_init_container_gets_no_kafka_credentials() -> None:
    """Migrations touch PostgreSQL only: no Kafka user, password or CA in the init container."""
    migrate = streamwise_container("prod", "migrate")
    assert "kafka" not in " ".join(migrate["command"]).lower()
    # (nor in the shared ConfigMap, which it reads too: SASL_SSL without a user would not even start it)
    security = [n for n in container_env_names("prod", migrate) if re.match(r"STREAMWISE_KAFKA__(SECURITY_PROTOCOL|SASL_|SSL_)", n)]
    assert not security
    assert [m["name"] for m in migrate["volumeMounts"]] == ["tmp"]
