"""Run a serialisation in a forked child, so learning goes on while a large model is pickled.

Pickling holds the GIL, so a worker thread does not let learning continue: a Hoeffding tree of
a few MB stopped it ~40 ms per version, a forest for seconds. ``fork`` gives the child a
copy-on-write image of the state at that instant (as Redis does for its snapshots); the
parent learns on at once, and reads the bytes back through a pipe. Linux and macOS only; the
runtime falls back to a thread where ``os.fork`` is missing or the child fails.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

AVAILABLE = hasattr(os, "fork")
CHILD_TIMEOUT_S = 120.0
"""A child that has not delivered by then is killed and the serialisation is done in a thread."""
_HEADER = 8


class ChildFailed(RuntimeError):
    """The forked child exited without delivering its bytes (or took too long)."""


@dataclass(frozen=True)
class ForkedJob:
    pid: int
    fd: int
    started: float


def start(work: Callable[[], bytes]) -> ForkedJob:
    """Fork; the child writes ``work()``'s bytes to a pipe and exits at once.

    The child runs nothing of the parent's but ``work``: no signal handlers, no garbage
    collection (it would touch every object and copy their pages), no ``atexit`` handlers,
    no flushing of the parent's buffers (``os._exit``).
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which coverage does not follow
        status = 1
        try:
            os.close(read_fd)
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            gc.disable()
            data = work()
            view = memoryview(len(data).to_bytes(_HEADER, "big") + data)
            while view:
                view = view[os.write(write_fd, view):]
            status = 0
        except BaseException:  # noqa: BLE001 - report whatever it was, then exit
            os.write(2, traceback.format_exc().encode(errors="replace"))
        finally:
            os._exit(status)
    os.close(write_fd)
    return ForkedJob(pid, read_fd, time.monotonic())


def collect(job: ForkedJob, timeout_s: float = CHILD_TIMEOUT_S) -> bytes:
    """The child's bytes (blocking: call it from a worker thread). Raises ``ChildFailed``."""
    chunks: list[bytes] = []
    deadline = job.started + timeout_s
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([job.fd], [], [], remaining)[0]:
                os.kill(job.pid, signal.SIGKILL)
                raise ChildFailed(f"serialising child {job.pid} took longer than {timeout_s:.0f}s")
            chunk = os.read(job.fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(job.fd)
        _, status = os.waitpid(job.pid, 0)
    data = b"".join(chunks)
    if status != 0 or len(data) < _HEADER or int.from_bytes(data[:_HEADER], "big") != len(data) - _HEADER:
        raise ChildFailed(f"serialising child {job.pid} failed (wait status {status}, {len(data)} bytes)")
    return data[_HEADER:]


def run(work: Callable[[], bytes], timeout_s: float = CHILD_TIMEOUT_S) -> bytes:
    """``work()`` in a forked child, from start to finish (blocking)."""
    return collect(start(work), timeout_s)
