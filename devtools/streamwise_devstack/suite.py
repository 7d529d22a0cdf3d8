"""Run the four Streamwise services as local processes, exactly as compose runs them."""

from __future__ import annotations

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
            spec = self.specs[name]
            out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
            self.procs[name] = subprocess.Popen(
                _resolve(spec.argv), env={**os.environ, **self.env, **dict(spec.env)}, stdout=out, stderr=subprocess.STDOUT,
                cwd=self.cwd, start_new_session=True,
            )
        for name in names or tuple(self.specs):
            self.wait_healthy(name, timeout_s)

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
        for name in names or tuple(self.procs):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
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
