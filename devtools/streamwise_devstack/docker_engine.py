"""A Docker engine for the real-deployment tests: the host's own if one answers, else a private
``dockerd`` from Debian's ``docker.io`` that this process starts, and stops again.

The private engine keeps its images under the cache (``<cache>/docker``), so a second run on
the same machine builds nothing again; its socket, pid file and execution state live in a
temporary folder. What dockerd changes in the host's network (iptables, ``ip_forward``, the
``docker0`` bridge) is put back when it stops (:mod:`.host_network`). One private engine per
machine at a time: a lock file serialises runs that would share the data root.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import IO

from .host_network import HostNetworkState
from .kafka import cache_root
from .packages import MissingDependency, ensure_debian_packages
from .process import LocalServer, ManagedProcess, log_tail, run_checked

__all__ = ["DockerEngine", "docker_cli"]

log = logging.getLogger(__name__)

HOST_SOCKET = Path("/var/run/docker.sock")


@cache
def docker_cli() -> str:
    """The ``docker`` client: the one on PATH (any recent version talks to a 20.10 engine)."""
    return ensure_debian_packages({"docker": "docker.io"})["docker"]


def _answers(host: str) -> bool:
    result = run_checked([docker_cli(), "--host", host, "version", "--format", "{{.Server.Version}}"], timeout=30, check=False)
    return result.returncode == 0 and bool(result.stdout.strip())


class DockerEngine(LocalServer):
    """``with DockerEngine() as engine:`` then pass ``engine.env()`` to docker and compose."""

    def __init__(self, *, data_root: Path | None = None, start_timeout: float = 180.0, use_host_engine: bool = True) -> None:
        self.data_root = data_root or cache_root() / "docker"
        self.start_timeout = start_timeout
        self.use_host_engine = use_host_engine
        self.host = ""
        self.external = False
        self._run_dir: Path | None = None
        self._process: ManagedProcess | None = None
        self._network: HostNetworkState | None = None
        self._lock: IO[str] | None = None

    def env(self) -> dict[str, str]:
        """The environment for docker and compose commands against this engine."""
        return {**os.environ, "DOCKER_HOST": self.host}

    def start(self) -> None:
        if self.host:
            return
        if self.use_host_engine:
            for host in filter(None, (os.environ.get("DOCKER_HOST"), f"unix://{HOST_SOCKET}" if HOST_SOCKET.exists() else None)):
                if _answers(host):
                    log.info("using the Docker engine at %s", host)
                    self.host, self.external = host, True
                    return
        if os.geteuid() != 0:
            raise MissingDependency("no Docker engine answers, and starting one needs root")
        binaries = ensure_debian_packages({"dockerd": "docker.io", "iptables": "iptables", "ip": "iproute2"})
        self.data_root.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.data_root.parent / "docker.lock", "w")  # noqa: SIM115 - held until stop()
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self._run_dir = Path(tempfile.mkdtemp(prefix="sw-docker-"))
        socket = self._run_dir / "docker.sock"
        self._network = HostNetworkState.capture()
        self._process = ManagedProcess(
            "dockerd",
            [binaries["dockerd"], "--host", f"unix://{socket}", "--data-root", str(self.data_root),
             "--exec-root", str(self._run_dir / "exec"), "--pidfile", str(self._run_dir / "dockerd.pid")],
            self._run_dir / "dockerd.log",
        )
        self._process.start()
        host = f"unix://{socket}"
        deadline = time.monotonic() + self.start_timeout
        while not (socket.exists() and _answers(host)):
            if not self._process.alive() or time.monotonic() > deadline:
                tail = log_tail(self._run_dir / "dockerd.log")
                self.stop()
                raise RuntimeError(f"dockerd did not start:\n{tail}")
            time.sleep(0.5)
        self.host = host
        log.info("started dockerd (pid %s) at %s, data in %s", self._process.pid, host, self.data_root)

    stop_grace = 60.0

    def stop(self, grace: float | None = None) -> None:
        """Stop a private engine (its containers stop with it) and restore the host's network."""
        try:
            super().stop(grace)
        finally:
            if self._network is not None:
                self._network.restore()
                self._network = None
            if self._run_dir is not None:
                shutil.rmtree(self._run_dir, ignore_errors=True)
                self._run_dir = None
            if self._lock is not None:
                self._lock.close()
                self._lock = None
            self.host = ""

    def kill(self) -> None:
        self.stop(grace=0.1)

    def docker(self, *args: str, timeout: float = 600, check: bool = True, input: str | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``docker <args>`` against this engine (``env``: extra variables)."""
        return run_checked([docker_cli(), *args], env={**self.env(), **(env or {})}, timeout=timeout, input=input, check=check)

    def has_image(self, name: str) -> bool:
        return self.docker("image", "inspect", name, check=False, timeout=60).returncode == 0
