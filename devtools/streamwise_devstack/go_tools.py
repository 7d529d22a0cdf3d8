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
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .kafka import cache_root
from .packages import MissingDependency

__all__ = ["COMPOSE_VERSION", "ensure_compose", "go_env", "go_module_dir"]

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
    result = subprocess.run(argv, cwd=cwd, env=env or go_env(), capture_output=True, text=True, timeout=GO_TIMEOUT, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed (exit {result.returncode}):\n{result.stderr[-4000:]}")
    log.info("%s: %.0f s", " ".join(argv[:3]), time.monotonic() - started)
    return result.stdout


def go_module_dir(module: str, version: str) -> Path:
    """Download ``module@version`` and return a writable copy of it (read-only in the module cache)."""
    info = json.loads(_run([_go(), "mod", "download", "-json", f"{module}@{version}"]))
    work = Path(tempfile.mkdtemp(prefix="sw-go-"))
    copy = work / "src"
    shutil.copytree(info["Dir"], copy)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    return copy


def _build_once(name: str, build: Callable[[Path], None]) -> Path:
    out = cache_root() / "bin" / name
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.is_file():
            log.info("building %s from the Go module proxy (minutes, once per machine)", name)
            partial = out.with_suffix(".partial")
            build(partial)
            partial.rename(out)
    return out


def ensure_compose(version: str = COMPOSE_VERSION) -> Path:
    """Docker Compose v2 (standalone binary: ``docker-compose``; as a plugin: ``docker compose``)."""

    def build(out: Path) -> None:
        src = go_module_dir("github.com/docker/compose/v2", version)
        try:
            _run([_go(), "build", "-trimpath", "-ldflags", f"-s -w -X github.com/docker/compose/v2/internal.Version={version}",
                  "-o", str(out), "./cmd"], cwd=src)
        finally:
            shutil.rmtree(src.parent, ignore_errors=True)

    return _build_once(f"docker-compose-{version}", build)
