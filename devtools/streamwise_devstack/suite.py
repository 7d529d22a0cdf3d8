"""Run the four Streamwise services as local processes, exactly as compose runs them."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceSpec:
    """How one service is started; docker-compose.yml and deploy/k8s use the same commands."""

    name: str
    argv: tuple[str, ...]
    port: int
    health: str = "/healthz"
    env: tuple[tuple[str, str], ...] = ()


def service_specs(ports: dict[str, int] | None = None, host: str = "127.0.0.1") -> list[ServiceSpec]:
    ports = {"webapp": 8000, "ingest": 8001, "predictor": 8002, "trainer": 8003, **(ports or {})}

    def uvicorn(module: str, port: int) -> tuple[str, ...]:
        return (
            "uvicorn", f"{module}:create_app", "--factory", "--host", host, "--port", str(port),
            "--no-access-log", "--timeout-graceful-shutdown", "5",
        )

    return [
        ServiceSpec(
            "trainer", ("python", "-m", "streamwise_trainer", "worker"), ports["trainer"],
            env=(("STREAMWISE_HTTP_HOST", host), ("STREAMWISE_HTTP_PORT", str(ports["trainer"]))),
        ),
        ServiceSpec("ingest", uvicorn("streamwise_ingest.app", ports["ingest"]), ports["ingest"]),
        ServiceSpec("predictor", uvicorn("streamwise_predictor.app", ports["predictor"]), ports["predictor"]),
        ServiceSpec("webapp", uvicorn("streamwise_webapp.app", ports["webapp"]), ports["webapp"]),
    ]


def _resolve(argv: tuple[str, ...]) -> list[str]:
    """Run console scripts and python from this interpreter's environment."""
    bin_dir = Path(sys.executable).parent
    head = sys.executable if argv[0] == "python" else str(bin_dir / argv[0])
    return [head, *argv[1:]]


class Suite:
    """Starts, watches and stops the services it started, by process id."""

    def __init__(self, env: dict[str, str], log_dir: Path, specs: list[ServiceSpec], cwd: Path | None = None) -> None:
        self.env = env
        self.log_dir = log_dir
        self.specs = {s.name: s for s in specs}
        self.cwd = cwd
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.specs[name].port}"

    def start(self, *names: str, timeout_s: float = 90.0) -> None:
        """Start ``names`` (default: all) and wait until each answers its health check."""
        for name in names or tuple(self.specs):
            self.spawn(name)
        for name in names or tuple(self.specs):
            self.wait_healthy(name, timeout_s)

    def spawn(self, name: str) -> subprocess.Popen[bytes]:
        """Start ``name`` without waiting for its health check (its log file is appended to)."""
        spec = self.specs[name]
        with open(self.log_dir / f"{name}.log", "ab") as out:  # the child keeps its own copy
            proc = subprocess.Popen(
                _resolve(spec.argv), env={**os.environ, **self.env, **dict(spec.env)}, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.cwd, start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def poll(self, name: str) -> int | None:
        """The exit code of ``name`` once it exited (reaping it), None while it runs."""
        return self.procs[name].poll()

    def pid(self, name: str) -> int | None:
        proc = self.procs.get(name)
        return proc.pid if proc is not None else None

    def wait_healthy(self, name: str, timeout_s: float) -> None:
        spec, proc = self.specs[name], self.procs[name]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                if httpx.get(f"{self.url(name)}{spec.health}", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{name} not healthy after {timeout_s}s:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash would."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self, *names: str, grace_s: float = 10.0) -> None:
        """SIGTERM ``names`` (default: all) at once, then SIGKILL those still running after
        ``grace_s``."""
        stopping = []
        for name in names or tuple(self.procs):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):  # it exited just now
                os.killpg(proc.pid, signal.SIGTERM)
            stopping.append(proc)
        deadline = time.monotonic() + grace_s
        for proc in stopping:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def suite_env(
    *, bootstrap: str, idempotence: bool, redis_url: str, database_url: str, app_spec: Path,
    topic_prefix: str = "streamwise", extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment every service reads (the same variables compose and Kubernetes set)."""
    return {
        "STREAMWISE_KAFKA__BOOTSTRAP": bootstrap,
        "STREAMWISE_KAFKA__IDEMPOTENCE": "true" if idempotence else "false",
        "STREAMWISE_REDIS_URL": redis_url,
        "STREAMWISE_DATABASE_URL": database_url,
        "STREAMWISE_APP_SPEC": str(app_spec),
        "STREAMWISE_TOPIC_PREFIX": topic_prefix,
        # A trainer killed here (tests, Ctrl-C) is restarted at once: a short writer lease
        # spares the wait for the old one to expire.
        "STREAMWISE_WRITER_LEASE_MS": "3000",
        **(extra or {}),
    }
