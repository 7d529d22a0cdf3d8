"""``docker compose`` on a private project: run commands, find published ports, collect logs."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from streamwise_devstack.docker_engine import DockerEngine

ROOT = Path(__file__).resolve().parents[3]
TEST_PORTS = Path(__file__).with_name("compose.test-ports.yml")


class ComposeProject:
    def __init__(self, engine: DockerEngine, binary: Path, name: str, env: Mapping[str, str], profiles: Sequence[str] = ()) -> None:
        self.engine = engine
        self.binary = binary
        self.name = name
        self.env = {**engine.env(), **env}
        self.profiles = list(profiles)

    def with_profiles(self, *profiles: str) -> ComposeProject:
        """The same project with ``profiles`` enabled too (its services started beside the others)."""
        return ComposeProject(self.engine, self.binary, self.name, self.env, [*self.profiles, *profiles])

    def argv(self, *args: str) -> list[str]:
        files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(TEST_PORTS)]
        profiles = [arg for profile in self.profiles for arg in ("--profile", profile)]
        return [str(self.binary), "--project-name", self.name, "--project-directory", str(ROOT), *files, *profiles, *args]

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.argv(*args), env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(
                f"`docker compose {' '.join(args)}` failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}\n"
                f"--- logs ---\n{self.logs()}"
            )
        return result

    def port(self, service: str, container_port: int) -> int:
        out = self.run("port", service, str(container_port), timeout=60).stdout.strip()
        return int(out.rsplit(":", 1)[1])

    def url(self, service: str, container_port: int) -> str:
        return f"http://127.0.0.1:{self.port(service, container_port)}"

    def logs(self, tail: int = 40, *services: str) -> str:
        result = subprocess.run(self.argv("logs", "--no-color", "--tail", str(tail), *services), env=self.env, cwd=ROOT,
                                capture_output=True, text=True, timeout=120, check=False)
        return result.stdout[-8000:] + result.stderr[-2000:]

    def down(self, *, volumes: bool = False) -> None:
        """Every container of the project, those of every profile too (``down`` leaves the services of
        profiles it was not given running, and cannot remove their network then)."""
        self.run("--profile", "*", "down", "--remove-orphans", "--timeout", "20", *(["--volumes"] if volumes else []),
                 timeout=300, check=False)
