"""Binaries built from the Go module proxy, once per machine (cached under ``<cache>/bin``).

``go install module@version`` refuses modules whose go.mod has replace or exclude directives
(Docker Compose, etcd, Kubernetes): the module is downloaded, copied somewhere writable and built
inside it, with the Go caches under ``<cache>/go``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .kafka import cache_root
from .packages import MissingDependency
from .process import run_checked

__all__ = [
    "COMPOSE_VERSION", "COREDNS_VERSION", "ETCD_VERSION", "KUBERNETES_VERSION", "PROMETHEUS_VERSION", "ensure_compose", "ensure_coredns",
    "ensure_etcd", "ensure_kubernetes", "ensure_prometheus", "go_env", "go_module_dir", "module_source", "prometheus_module_version",
]

log = logging.getLogger(__name__)

COMPOSE_VERSION = "v2.40.3"
GO_TIMEOUT = 1800


def _go() -> str:
    found = shutil.which("go") or next((p for p in ("/usr/local/go/bin/go",) if os.access(p, os.X_OK)), None)
    if found is None:
        raise MissingDependency("building the deployment tools needs Go 1.24 or newer on PATH (https://go.dev/dl/)")
    return found


def go_env(**extra: str) -> dict[str, str]:
    """The environment of every go command here: caches under ``<cache>/go``, modules as published."""
    root = cache_root() / "go"
    return {
        **os.environ,
        "GOMODCACHE": str(root / "mod"),
        "GOCACHE": str(root / "build"),
        "GOWORK": "off",
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
        **extra,
    }


def _run(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    started = time.monotonic()
    result = run_checked(argv, cwd=cwd, env=env or go_env(), timeout=GO_TIMEOUT)
    log.info("%s: %.0f s", " ".join(argv[:3]), time.monotonic() - started)
    return result.stdout


def module_source(module: str, version: str) -> Path:
    """The folder of ``module@version`` in the module cache, downloaded if missing (read-only)."""
    return Path(json.loads(_run([_go(), "mod", "download", "-json", f"{module}@{version}"]))["Dir"])


def go_module_dir(module: str, version: str) -> Path:
    """Download ``module@version`` and return a writable copy of it (read-only in the module cache)."""
    work = Path(tempfile.mkdtemp(prefix="sw-go-"))
    copy = work / "src"
    shutil.copytree(module_source(module, version), copy)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    return copy


def _build_once(names: Sequence[str], build: Callable[[list[str], Path], None], folder: Path | None = None) -> dict[str, Path]:
    """The binaries ``names`` in ``folder`` (``<cache>/bin`` by default): those missing are built by
    ``build(missing, staging folder)``, under a lock, and moved in once all are there."""
    folder = folder or cache_root() / "bin"
    wanted = {name: folder / name for name in names}

    def missing() -> list[str]:
        return [name for name, path in wanted.items() if not path.is_file()]

    if missing():
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f".{'+'.join(sorted(names))}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            todo = missing()
            if todo:
                log.info("building %s from the Go module proxy (minutes, once per machine)", ", ".join(todo))
                staging = folder / f".partial-{os.getpid()}"
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir()
                try:
                    build(todo, staging)
                    for name in todo:
                        (staging / name).rename(wanted[name])
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
    return wanted


def ensure_compose(version: str = COMPOSE_VERSION) -> Path:
    """Docker Compose v2 (standalone binary: ``docker-compose``; as a plugin: ``docker compose``)."""

    name = f"docker-compose-{version}"

    def build(_: list[str], out: Path) -> None:
        src = go_module_dir("github.com/docker/compose/v2", version)
        try:
            _run([_go(), "build", "-trimpath", "-ldflags", f"-s -w -X github.com/docker/compose/v2/internal.Version={version}",
                  "-o", str(out / name), "./cmd"], cwd=src)
        finally:
            shutil.rmtree(src.parent, ignore_errors=True)

    return _build_once([name], build)[name]


ETCD_VERSION = "v3.6.17"
KUBERNETES_VERSION = "v1.34.4"
KUBERNETES_UNSERVED = ("k8s.io/sample-controller", "k8s.io/sample-cli-plugin")
"""Staging modules the proxy does not serve: their replace directives are dropped, nothing else."""

_ETCD_MAIN = """package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""


def ensure_etcd(version: str = ETCD_VERSION) -> Path:
    """etcd's server (``go install`` refuses its module: a tiny main module calls etcdmain)."""

    name = f"etcd-{version}"

    def build(_: list[str], out: Path) -> None:
        work = Path(tempfile.mkdtemp(prefix="sw-etcd-"))
        try:
            (work / "go.mod").write_text("module streamwise.dev/etcd\n\ngo 1.24\n")
            (work / "main.go").write_text(_ETCD_MAIN)
            _run([_go(), "get", f"go.etcd.io/etcd/server/v3@{version}"], cwd=work)
            _run([_go(), "mod", "tidy"], cwd=work)
            _run([_go(), "build", "-trimpath", "-o", str(out / name), "."], cwd=work)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return _build_once([name], build)[name]


def staging_edits(go_mod: str, library: str) -> list[str]:
    """``go mod edit`` flags that turn each ``k8s.io/x => ./staging/...`` replace into a
    requirement of the published ``k8s.io/x@library`` (unserved ones: the replace goes only)."""
    edits = []
    for line in go_mod.splitlines():
        words = line.split("//")[0].split()
        if words[:1] == ["replace"]:
            words = words[1:]
        if len(words) == 3 and words[1] == "=>" and words[2].startswith("./staging/"):
            edits.append(f"-dropreplace={words[0]}")
            if words[0] not in KUBERNETES_UNSERVED:
                edits.append(f"-require={words[0]}@{library}")
    return edits


def ensure_kubernetes(components: tuple[str, ...] = ("kube-apiserver",), version: str = KUBERNETES_VERSION) -> dict[str, Path]:
    """Kubernetes binaries (``cmd/<component>``) from ``k8s.io/kubernetes@version``: its go.mod
    points every ``k8s.io/*`` library at ``./staging`` folders the module zip leaves out, so each
    replace becomes a requirement of the published library of the same release (v0.x.y)."""
    library = "v0." + version.removeprefix("v1.")
    major, minor = version.removeprefix("v").split(".")[:2]
    ldflags = ["-s", "-w"] + [
        f"-X {pkg}.{name}={value}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for name, value in (("gitVersion", version), ("gitMajor", major), ("gitMinor", minor), ("gitTreeState", "clean"))
    ]

    def build_all(missing: list[str], outdir: Path) -> None:
        src = go_module_dir("k8s.io/kubernetes", version)
        try:
            for leftover in ("vendor", "go.work", "go.work.sum"):
                path = src / leftover
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            _run([_go(), "mod", "edit", *staging_edits((src / "go.mod").read_text(), library)], cwd=src)
            _run([_go(), "build", "-trimpath", "-ldflags", " ".join(ldflags), "-o", str(outdir) + "/",
                  *(f"./cmd/{name}" for name in missing)], cwd=src)
        finally:
            shutil.rmtree(src.parent, ignore_errors=True)

    return _build_once(components, build_all, cache_root() / "bin" / f"kubernetes-{version}")


COREDNS_VERSION = "v1.14.7"
COREDNS_PLUGINS = ("bind", "cache", "errors", "kubernetes")
"""The plugins the test cluster's Corefile uses: the others (cloud DNS services and their SDKs)
are left out of the build, which takes a third of the time."""


def keep_plugins(registry: Path, keep: Sequence[str]) -> None:
    """Rewrite a Go file of blank imports that registers plugins (CoreDNS's ``zplugin.go``,
    Prometheus's ``plugins.go``) so that only the plugins named ``keep`` stay."""
    lines = registry.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.strip().startswith('_ "') or line.strip().split('"')[1].rsplit("/", 1)[-1] in keep]
    registry.write_text("".join(kept))


def ensure_coredns(version: str = COREDNS_VERSION) -> Path:
    """CoreDNS with only :data:`COREDNS_PLUGINS`, the cluster DNS of the test cluster."""

    name = f"coredns-{version}-{'-'.join(COREDNS_PLUGINS)}"

    def build(_: list[str], out: Path) -> None:
        src = go_module_dir("github.com/coredns/coredns", version)
        try:
            keep_plugins(src / "core" / "plugin" / "zplugin.go", COREDNS_PLUGINS)
            _run([_go(), "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / name), "."], cwd=src, env=go_env(CGO_ENABLED="0"))
        finally:
            shutil.rmtree(src.parent, ignore_errors=True)

    return _build_once([name], build)[name]


PROMETHEUS_VERSION = "v3.5.0"
"""The release docker-compose.yml runs (``prom/prometheus:v3.5.0``)."""


def prometheus_module_version(version: str) -> str:
    """Prometheus 3.x.y is tagged as the Go module version v0.(300+x).y: v3.5.0 is v0.305.0."""
    major, minor, patch = version.removeprefix("v").split(".")
    if major != "3":
        raise ValueError(f"only Prometheus 3 releases are mapped to module versions, not {version}")
    return f"v0.{300 + int(minor)}.{patch}"


PROMETHEUS_DISCOVERY = ("dns",)
"""The service discovery compose's prometheus.yml uses (``dns_sd_configs``; static, file and
HTTP discovery are always built in): the cloud ones and their SDKs are left out of the build."""


def ensure_prometheus(version: str = PROMETHEUS_VERSION) -> Path:
    """The Prometheus server (``cmd/prometheus``; ``go install`` refuses its module: go.mod has
    replace and exclude directives), with :data:`PROMETHEUS_DISCOVERY` only. Built without the
    ``builtinassets`` tag, so without the web UI (an npm build): the HTTP API, ``/metrics`` and
    ``/-/ready`` are all there."""

    name = f"prometheus-{version}-sd-{'-'.join(PROMETHEUS_DISCOVERY)}"
    ldflags = ["-s", "-w"] + [
        f"-X github.com/prometheus/common/version.{key}={value}"
        for key, value in (("Version", version.removeprefix("v")), ("Revision", prometheus_module_version(version)), ("Branch", "HEAD"))
    ]

    def build(_: list[str], out: Path) -> None:
        src = go_module_dir("github.com/prometheus/prometheus", prometheus_module_version(version))
        try:
            keep_plugins(src / "plugins" / "plugins.go", PROMETHEUS_DISCOVERY)
            _run([_go(), "build", "-trimpath", "-tags", "netgo", "-ldflags", " ".join(ldflags), "-o", str(out / name), "./cmd/prometheus"],
                 cwd=src, env=go_env(CGO_ENABLED="0"))
        finally:
            shutil.rmtree(src.parent, ignore_errors=True)

    return _build_once([name], build)[name]
