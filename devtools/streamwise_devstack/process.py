"""A server child process in its own session, logging to a file, stopped only by its pid."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import threading
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

__all__ = ["ManagedProcess", "log_tail"]

log = logging.getLogger(__name__)

_running: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


def run_checked(
    argv: Sequence[str], *, timeout: float, cwd: Path | None = None, env: Mapping[str, str] | None = None,
    input: str | None = None, check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a short command to its end; with ``check``, a failure raises with its exit code and
    the tail of its output."""
    result = subprocess.run(list(argv), cwd=cwd, env=dict(env) if env is not None else None, input=input,
                            capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed (exit {result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-4000:]}")
    return result


def log_tail(path: Path, lines: int = 40) -> str:
    """Return the last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        data = path.read_bytes()[-64_000:]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


class ManagedProcess:
    """Run ``argv`` with ``start_new_session=True``, stdout+stderr appended to ``log_path``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.user = user
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Pid of the running child, None when not started or already reaped."""
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        """Return True while the child is running."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Spawn the child (its own session and process group)."""
        if self.alive():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                user=self.user,
                group=self.user,
                extra_groups=[] if self.user is not None else None,
            )
        _running.add(self)
        _exit_cleanly_on_sigterm()
        log.info("started %s pid=%d: %s", self.name, self._proc.pid, " ".join(self.argv))

    def stop(self, sig: int = signal.SIGTERM, grace: float = 15.0) -> int | None:
        """Send ``sig`` to the child, wait ``grace`` seconds, then SIGKILL its process group."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("%s pid=%d ignored signal %d for %.0fs; killing it",
                            self.name, proc.pid, sig, grace)
                self._killpg(proc)
        self._proc = None
        _running.discard(self)
        log.info("stopped %s pid=%d rc=%s", self.name, proc.pid, proc.returncode)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL the child and everything left in its process group (crash simulation)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._killpg(proc)
        self._proc = None
        _running.discard(self)
        log.info("killed %s pid=%d", self.name, proc.pid)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the child to exit by itself and return its exit code."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._proc.wait(timeout=timeout)

    @staticmethod
    def _killpg(proc: subprocess.Popen[bytes]) -> None:
        # The child is not reaped yet, so its pid (== our session's pgid) cannot be reused.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def tail(self, lines: int = 40) -> str:
        """Return the last lines of this process's log file."""
        return log_tail(self.log_path, lines)


def _exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit`` (unless someone else handles it), so a runner that is
    terminated (``timeout``, CI) still leaves its ``with`` blocks and stops its servers,
    instead of orphaning them."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_system_exit)


def _raise_system_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@atexit.register
def _kill_leftovers() -> None:
    """Safety net: never leave a devstack server running after the interpreter exits."""
    for managed in list(_running):
        managed.kill()


class LocalServer:
    """Lifecycle shared by the local servers: stop, kill, restart and use as a context.

    Subclasses implement ``start()`` and keep the running process in ``_process``.
    """

    stop_signal: int = signal.SIGTERM
    stop_grace: float = 10.0
    _process: ManagedProcess | None = None

    def start(self) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """Pid of the server, None when not running."""
        return self._process.pid if self._process else None

    def stop(self, grace: float | None = None) -> None:
        """Stop with ``stop_signal``; SIGKILL the process group after ``grace`` seconds."""
        if self._process is not None:
            self._process.stop(sig=self.stop_signal, grace=self.stop_grace if grace is None else grace)
            self._process = None

    def kill(self) -> None:
        """SIGKILL the server (crash simulation); what it wrote to disk is kept."""
        if self._process is not None:
            self._process.kill()
            self._process = None

    def restart(self) -> None:
        """Stop (if running) and start again on the same ports and data."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
