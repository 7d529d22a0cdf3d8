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

from streamwise_core.modelstore import ModelStore

log = logging.getLogger(__name__)


class WriterConflict(RuntimeError):
    """Another trainer holds the lease of this model."""


def writer_id() -> str:
    """Who this trainer is, in the lease and in logs: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def acquire(store: ModelStore, model: str, holder: str, ttl_ms: int, *, wait_s: float | None = None) -> None:
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
