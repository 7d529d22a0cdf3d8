"""The single-writer lease: one trainer per model, or none.

The trainer reads every partition itself, so nothing in Kafka stops a second trainer from
learning the same stream and publishing competing versions. A lease in Redis does: a trainer
claims it before restoring its checkpoint, renews it while it runs, and stops publishing and
exits if another trainer ever holds it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_core.contracts.store_ports import WriterLeases

log = logging.getLogger(__name__)


class WriterConflict(RuntimeError):
    """Another trainer holds the lease of this model."""


def writer_id() -> str:
    """Who this trainer is, in the lease and in logs: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def acquire(store: WriterLeases, model: str, holder: str, ttl_ms: int, *, wait_s: float | None = None) -> None:
    """Claim the lease, waiting up to ``wait_s`` (default: two lease periods, the time a
    trainer that was just stopped needs to lose it) before giving up with ``WriterConflict``."""
    deadline = time.monotonic() + (wait_s if wait_s is not None else 2 * ttl_ms / 1000)
    while True:
        current = await store.claim_writer(model, holder, ttl_ms)
        if current == holder:
            log.info("single-writer lease of %s taken by %s", model, holder)
            return
        if time.monotonic() >= deadline:
            raise WriterConflict(f"another trainer ({current}) is the writer of {model}; refusing to start")
        log.warning("waiting for the writer lease of %s, held by %s", model, current)
        await asyncio.sleep(min(ttl_ms / 1000 / 4, 1.0))


class WriterLease:
    """The lease a running trainer holds: renewed every third of its term; lost to another
    trainer, it fences this one (nothing more is published) and calls ``on_fenced``."""

    def __init__(
        self, leases: WriterLeases, model: str, holder: str, ttl_ms: int, *,
        on_fenced: Callable[[], None], clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._leases = leases
        self.model = model
        self.holder = holder
        self._ttl_ms = ttl_ms
        self._on_fenced = on_fenced
        self._clock = clock
        self._renewed = clock()
        self.fenced = False

    async def renew(self) -> None:
        """Renew the lease if a third of its term has passed; a Redis that is away leaves it as
        it is (nobody else can take it meanwhile)."""
        if self.fenced or self._clock() - self._renewed < self._ttl_ms / 3000:
            return
        try:
            current = await self._leases.claim_writer(self.model, self.holder, self._ttl_ms)
        except BackendUnavailable as exc:
            log.warning("could not renew the writer lease (nobody else can take it meanwhile): %s", exc)
            return
        if current == self.holder:
            self._renewed = self._clock()
            return
        self.fenced = True
        log.critical("the writer lease of %s is held by %s: this trainer stops publishing and exits", self.model, current)
        self._on_fenced()

    async def release(self) -> None:
        """Give the lease up, so the next trainer need not wait for it to expire."""
        if self.fenced:
            return
        try:
            await self._leases.release_writer(self.model, self.holder)
        except BackendUnavailable as exc:
            log.warning("writer lease not released (it expires by itself): %s", exc)
