"""Restart the processes ``streamwise up`` started when one exits, with exponential backoff.

``Backoff`` is the pure policy (an injected clock, no sleeping); ``Supervisor`` applies it to
``Child`` objects (a service of the ``Suite``, Kafka, Redis) in one non-blocking ``check()``
pass that the caller repeats, waiting at most ``next_check_in()`` seconds between passes.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Backoff", "BackoffPolicy", "Child", "Supervisor", "describe_exit"]

Clock = Callable[[], float]


@dataclass(frozen=True)
class BackoffPolicy:
    """Wait ``first_s`` before the first restart, ``factor`` times longer before each next one,
    at most ``max_s``; a child that stayed up ``reset_after_s`` starts again from ``first_s``."""

    first_s: float = 1.0
    factor: float = 2.0
    max_s: float = 30.0
    reset_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.first_s <= 0 or self.factor < 1 or self.max_s < self.first_s or self.reset_after_s < 0:
            raise ValueError(f"invalid backoff policy: {self}")


class Backoff:
    """The restart schedule of one child: call ``started()`` when it starts and ``exited()``
    when it exits, which returns how long to wait before starting it again."""

    def __init__(self, policy: BackoffPolicy, clock: Clock = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._next_delay = policy.first_s
        self._started_at: float | None = None
        self.restarts = 0
        """How many times ``exited()`` scheduled a restart."""

    def started(self) -> None:
        """The child (re)started now."""
        self._started_at = self._clock()

    def exited(self) -> float:
        """The child exited now: the seconds to wait before restarting it."""
        now = self._clock()
        if self._started_at is not None and now - self._started_at >= self.policy.reset_after_s:
            self._next_delay = self.policy.first_s  # it had been fine for a while: a fresh crash
        self._started_at = None
        delay = self._next_delay
        self._next_delay = min(delay * self.policy.factor, self.policy.max_s)
        self.restarts += 1
        return delay


class Child(Protocol):
    """A process the supervisor watches."""

    @property
    def name(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    def poll(self) -> int | None:
        """The exit code once the process has exited (and was reaped), None while it runs."""
        ...

    def restart(self) -> None:
        """Start the process again; raise when it cannot be started."""
        ...


def describe_exit(code: int) -> str:
    """``-9 (SIGKILL)`` for a signal, the number for an exit code."""
    if code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            return str(code)
    return str(code)


@dataclass
class _Watch:
    child: Child
    backoff: Backoff
    due: float | None = None
    """When the pending restart is due (monotonic seconds); None while the child runs."""


class Supervisor:
    """Restart each child that exits, after its backoff; report every step through ``report``."""

    def __init__(
        self, children: Sequence[Child], policy: BackoffPolicy | None = None, *,
        clock: Clock = time.monotonic, report: Callable[[str], None] = print,
    ) -> None:
        self.policy = policy or BackoffPolicy()
        self._clock = clock
        self._report = report
        self._watches = [_Watch(c, Backoff(self.policy, clock)) for c in children]
        for watch in self._watches:
            watch.backoff.started()

    @property
    def restarts(self) -> dict[str, int]:
        """Restarts scheduled so far, by child name."""
        return {w.child.name: w.backoff.restarts for w in self._watches}

    def pending(self) -> list[str]:
        """The children waiting for their restart."""
        return [w.child.name for w in self._watches if w.due is not None]

    def check(self) -> bool:
        """One pass: notice exits and schedule restarts, restart those due; True if any child
        was restarted or scheduled (its pid changed or will)."""
        changed = False
        for watch in self._watches:
            if watch.due is None:
                code = watch.child.poll()
                if code is None:
                    continue
                self._schedule(watch, f"{watch.child.name} exited with {describe_exit(code)}")
                changed = True
            if watch.due is not None and self._clock() >= watch.due:
                self._restart(watch)
                changed = True
        return changed

    def next_check_in(self, idle_s: float = 0.5) -> float:
        """Seconds until the next pass is needed: ``idle_s``, or sooner when a restart is due."""
        now = self._clock()
        dues = [w.due - now for w in self._watches if w.due is not None]
        return max(0.0, min([idle_s, *dues]))

    def _schedule(self, watch: _Watch, what: str) -> None:
        delay = watch.backoff.exited()
        watch.due = self._clock() + delay
        self._report(f"{what}; restarting in {delay:g}s (restart {watch.backoff.restarts})")

    def _restart(self, watch: _Watch) -> None:
        watch.due = None
        try:
            watch.child.restart()
        except Exception as exc:  # noqa: BLE001 - any failure to start is retried after the backoff
            first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._schedule(watch, f"{watch.child.name} did not start ({first_line})")
            return
        watch.backoff.started()
        self._report(f"{watch.child.name} restarted (pid {watch.child.pid})")
