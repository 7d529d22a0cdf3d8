"""A real redis-server on 127.0.0.1 (installed from Debian when missing)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from .packages import ensure_debian_packages
from .ports import ensure_port_free, free_port
from .process import LocalServer, ManagedProcess, log_tail

__all__ = ["ExternalRedis", "RedisServer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExternalRedis:
    """An already-running Redis the devstack did not start (cannot be stopped or killed)."""

    url: str
    external: bool = True


class RedisServer(LocalServer):
    """redis-server with RDB snapshots off; AOF optional; port and dir survive restart()."""

    host = "127.0.0.1"
    external = False

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        appendonly: bool = False,
        acl_file: Path | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.acl_file = acl_file
        """Users and their rules (``--aclfile``); its ``default`` user must be allowed PING."""
        self.start_timeout = start_timeout
        self.log_path = self.data_dir / "redis.log"
        self._process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        """Connection URL for database 0, e.g. 'redis://127.0.0.1:6390/0'."""
        return f"redis://{self.host}:{self.port}/0"

    def argv(self, binary: str) -> list[str]:
        """Return the redis-server command line."""
        return [
            binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--logfile", "",
            *(["--aclfile", str(self.acl_file)] if self.acl_file else []),
        ]

    def _ping(self) -> bool:
        """Whether the server answers; a refusal (a ``default`` user behind a password) is an answer."""
        client = redis.Redis(host=self.host, port=self.port, socket_timeout=1.0,
                             socket_connect_timeout=1.0)
        try:
            return bool(client.ping())
        except (redis.AuthenticationError, redis.exceptions.NoPermissionError):
            return True
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return False
        finally:
            client.close()

    def start(self) -> None:
        """Launch redis-server and wait until it answers PING."""
        if self._process is not None and self._process.alive():
            return
        binary = ensure_debian_packages({"redis-server": "redis-server"})["redis-server"]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ensure_port_free(self.host, self.port)
        started = time.monotonic()
        process = ManagedProcess("redis", self.argv(binary), self.log_path, cwd=self.data_dir)
        process.start()
        self._process = process
        deadline = started + self.start_timeout
        while not self._ping():
            if not process.alive() or time.monotonic() >= deadline:
                reason = ("exited" if not process.alive()
                          else f"no PING reply in {self.start_timeout:.0f}s")
                process.kill()
                self._process = None
                raise RuntimeError(
                    f"redis-server failed to start on port {self.port} ({reason})\n"
                    f"--- {self.log_path} (tail) ---\n{log_tail(self.log_path)}"
                )
            time.sleep(0.05)
        log.info("Redis ready on %s in %.2fs", self.url, time.monotonic() - started)
