"""Run an ASGI app under uvicorn in a background thread, shut down as production does."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from streamwise_devstack import free_port


@contextmanager
def serve(app: Any, name: str, *, start_timeout_s: float = 60.0) -> Iterator[str]:
    """Serve ``app`` (lifespan on) on a free 127.0.0.1 port; yield its URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            server.run()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"{name}-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if errors or not thread.is_alive():
            raise RuntimeError(f"{name} did not start: {errors!r}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{name} did not start within {start_timeout_s}s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)
        assert not thread.is_alive(), f"{name} did not shut down"
