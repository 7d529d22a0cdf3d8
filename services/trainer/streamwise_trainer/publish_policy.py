"""When the trainer publishes a version: pure decisions on an injected clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

MAX_PUBLISH_BACKOFF_S = 2.0
"""Longest wait between two tries to publish while Redis is away."""


def smoothed(previous: float | None, latest: float, weight: float = 0.2) -> float:
    """An exponentially weighted mean of serialising times (the first one as is).

    >>> smoothed(None, 0.010)
    0.01
    >>> round(smoothed(0.010, 0.020), 6)
    0.012
    """
    return latest if previous is None else previous + weight * (latest - previous)


@dataclass
class PublishPolicy:
    """A version is due after ``every_n`` new examples or ``every_ms`` with anything new, and
    never sooner than serialising allows: serialising may take at most ``busy_max`` of the time.
    A failed publication is retried after a backoff that doubles up to ``MAX_PUBLISH_BACKOFF_S``.

    >>> now = [0.0]
    >>> policy = PublishPolicy(every_n=100, every_ms=1000, checkpoint_every_ms=60_000, busy_max=0.1, clock=lambda: now[0])
    >>> policy.due(unpublished=5, changed=True)
    False
    >>> now[0] = 1.0
    >>> policy.due(unpublished=5, changed=True), policy.checkpoint_due()
    (True, True)
    >>> policy.serialised(started=1.0, cost=0.2, checkpoint=True)  # 0.2 s at 10 %: not before 3.0
    >>> policy.published(begun=1.0, stored_from=1.0, checkpoint=True)
    >>> now[0] = 2.5
    >>> policy.due(unpublished=500, changed=True)
    False
    >>> now[0] = 3.0
    >>> policy.due(unpublished=500, changed=True), policy.checkpoint_due()
    (True, False)
    >>> policy.failed(), policy.failed(), policy.due(unpublished=500, changed=True, pending=True)
    (0.25, 0.5, False)
    >>> now[0] = 3.5
    >>> policy.due(unpublished=0, changed=False, pending=True)
    True
    """

    every_n: int
    every_ms: float
    checkpoint_every_ms: float
    busy_max: float
    clock: Callable[[], float]
    last_publish: float = field(init=False)
    """When the last version published began (versions start every ``every_ms``, however long
    each took to store)."""
    last_checkpoint: float = field(init=False, default=float("-inf"))
    """The first version always carries a checkpoint."""
    next_at: float = field(init=False, default=0.0)
    """When serialising again keeps the share of time spent on it under ``busy_max``."""
    serialise_s: float | None = field(init=False, default=None)
    """The CPU time serialising a version takes, smoothed over the versions without a checkpoint:
    a checkpoint now and then (a few ms for a linear model) must not hold the next version back."""
    retry_at: float = field(init=False, default=0.0)
    backoff_s: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.last_publish = self.clock()

    def due(self, *, unpublished: int, changed: bool, pending: bool = False) -> bool:
        """Whether to publish now: a failed publication once its backoff is over, or a new
        version when enough is new and serialising is within its budget."""
        now = self.clock()
        if now < self.retry_at:
            return False
        if pending:
            return True
        if not changed or now < self.next_at:
            return False
        return unpublished >= self.every_n or (now - self.last_publish) * 1000 >= self.every_ms

    def checkpoint_due(self) -> bool:
        return (self.clock() - self.last_checkpoint) * 1000 >= self.checkpoint_every_ms

    def serialised(self, *, started: float, cost: float, checkpoint: bool) -> None:
        """A snapshot begun at ``started`` took ``cost`` seconds of CPU to serialise."""
        if not checkpoint or self.serialise_s is None:  # what a version costs, not a checkpoint
            self.serialise_s = smoothed(self.serialise_s, cost)
        self.next_at = started + self.serialise_s / self.busy_max

    def failed(self) -> float:
        """A publication failed: the backoff before the next try, in seconds."""
        self.backoff_s = min(max(self.backoff_s * 2, 0.25), MAX_PUBLISH_BACKOFF_S)
        self.retry_at = self.clock() + self.backoff_s
        return self.backoff_s

    def published(self, *, begun: float, stored_from: float, checkpoint: bool) -> None:
        """A version is stored: its publication began at ``begun`` (serialising included) and
        its storing at ``stored_from``."""
        self.last_publish = begun
        if checkpoint:
            self.last_checkpoint = stored_from
        self.backoff_s = 0.0
        self.retry_at = 0.0
