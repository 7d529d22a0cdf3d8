"""Loopback port helpers: pick a free port and wait until a server listens on one."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

__all__ = ["ensure_port_free", "free_port", "port_is_open", "wait_for_port"]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Return True if a TCP connect to ``host:port`` succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_port_free(host: str, port: int) -> None:
    """Raise RuntimeError if something already listens on ``host:port`` (not our server)."""
    if port_is_open(host, port):
        raise RuntimeError(f"{host}:{port} is already in use by another process")


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 30.0,
    *,
    alive: Callable[[], bool] | None = None,
    interval: float = 0.1,
) -> None:
    """Poll until ``host:port`` accepts TCP connections; raise TimeoutError past ``timeout``.

    ``alive`` (optional) is checked on every poll; when it returns False the wait stops
    early with RuntimeError (the server process died).
    """
    deadline = time.monotonic() + timeout
    while True:
        if port_is_open(host, port):
            return
        if alive is not None and not alive():
            raise RuntimeError(f"process exited before {host}:{port} accepted connections")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} did not accept connections within {timeout:.1f}s")
        time.sleep(interval)
