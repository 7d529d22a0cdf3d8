"""Publishes snapshots: Redis (blob, pointer, checkpoint, pub/sub), SQL registry, models topic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streamwise_core.adapters.registry import Lineage, Registry
from streamwise_core.contracts.codec import ModelMeta
from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_core.contracts.events import ModelPublished
from streamwise_core.contracts.retention import Retention
from streamwise_core.contracts.store_ports import VersionStore
from streamwise_core.domain.lifecycle import SERVED, GateDecision

from .learning import Snapshot

log = logging.getLogger(__name__)


COMPACT_EVERY = 100
"""Registry rows recorded between two compactions of a model's history."""


def _retrieve(future: asyncio.Future[object]) -> None:
    """Mark a fire-and-forget delivery's failure as seen (it was logged where it matters)."""
    if not future.cancelled():
        future.exception()


@dataclass(frozen=True)
class _Unrecorded:
    meta: ModelMeta
    key_id: str
    lineage: Lineage | None = None
    status: str = SERVED
    hold_reason: str | None = None
    gate: dict[str, object] | None = None


Decide = Callable[[ModelMeta, bytes | None], GateDecision]
"""The validation gate: the candidate's metadata and the served version's (``None``: none)."""


class Publisher:
    """Redis is written first and atomically; registry rows retry until they land.

    A version is published once Redis holds it. Its registry row and its announcement on the
    models topic follow, and neither can fail the publication or hold it up for long: rows
    wait in an in-order backlog written by a background task (retried with backoff while the
    database is away; a publication waits at most ``registry_wait_s`` for its row, and not at
    all while an earlier write hangs), announcements are best effort with a bound on how
    long they may wait.
    """

    def __init__(
        self, store: VersionStore, registry: Registry, producer: AIOKafkaProducer, models_topic: str, *,
        announce_timeout_s: float = 2.0, registry_wait_s: float = 1.0, max_backoff_s: float = 5.0,
        decide: Decide | None = None, lineage: Callable[[ModelMeta], Lineage] | None = None,
        decide_reads_served: bool = True, retention: Retention | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._producer = producer
        self._models_topic = models_topic
        self._announce_timeout_s = announce_timeout_s
        self._registry_wait_s = registry_wait_s
        self._max_backoff_s = max_backoff_s
        self._decide = decide
        self._decide_reads_served = decide_reads_served
        """``False``: ``decide`` is given no served metadata (it does not look at it)."""
        self._lineage = lineage
        self._retention = retention
        """What stays of older versions in Redis after each publication (``None``: everything)."""
        self.pruned = 0
        """Blobs deleted from Redis by the retention."""
        self.compacted = 0
        """Registry rows merged away by compaction."""
        self._recorded_since_compaction = 0
        self._compactor: asyncio.Task[None] | None = None
        self.held_back = 0
        self.last_decision: dict[str, object] | None = None
        self._unrecorded: deque[_Unrecorded] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._backoff_s = 0.0
        self._retry_at = 0.0
        self.registry_failures = 0

    async def deliver(self, snapshot: Snapshot) -> None:
        """Store ``snapshot`` in Redis, then queue its registry row and announce it.

        Raises ``BackendUnavailable`` when Redis is down. Whether or not that write landed,
        publishing the same snapshot again is harmless (same keys, same content), so the
        caller retries the same snapshot rather than a new version number.
        """
        meta = snapshot.meta
        status, reason, record = SERVED, None, None
        if self._decide is None:
            await self._store.publish(meta.model, meta.version, snapshot.model, checkpoint=snapshot.checkpoint)
        else:
            decide = self._decide

            def gate(current: int | None, served_meta: bytes | None) -> tuple[bool, dict[str, object]]:
                decision = decide(meta, served_meta)
                return decision.serve, {**decision.as_dict(), "served_version": current}

            serve, record = await self._store.publish_gated(
                meta.model, meta.version, snapshot.model, gate, checkpoint=snapshot.checkpoint,
                read_served=self._decide_reads_served,
            )
            self.last_decision = record
            if not serve:
                status, reason = str(record.get("status")), str(record.get("reason"))
                self.held_back += 1
                log.warning("held back %s v%s: %s", meta.model, meta.version, reason)
        if all(queued.meta.version != meta.version for queued in self._unrecorded):
            lineage = self._lineage(meta) if self._lineage is not None else None
            self._unrecorded.append(_Unrecorded(
                meta, snapshot.model.signature.key_id, lineage, status, reason, record,
            ))
        flusher = self.schedule_flush()
        if flusher is not None:
            # Usually the row lands in milliseconds; a database that hangs delays this once.
            await asyncio.wait({flusher}, timeout=self._registry_wait_s)
        await self._announce(meta)
        await self._prune(meta.model)

    async def _prune(self, model: str) -> None:
        """Delete the blobs the retention no longer keeps; a failure only leaves them for the next time."""
        if self._retention is None:
            return
        try:
            self.pruned += await self._store.prune(model, self._retention)
        except BackendUnavailable as exc:
            log.warning("pruning old versions of %s deferred: %s", model, exc)

    async def _announce(self, meta: ModelMeta) -> None:
        event = ModelPublished(
            app=meta.app, model=meta.model, version=meta.version,
            examples_seen=meta.examples_seen, metrics=dict(meta.metrics),
        )
        try:
            async with asyncio.timeout(self._announce_timeout_s):
                delivery = await self._producer.send(self._models_topic, event.to_bytes(), key=meta.model.encode())
            delivery.add_done_callback(_retrieve)
        except (KafkaError, TimeoutError) as exc:
            log.warning("models topic announcement of v%s failed: %r", meta.version, exc)

    def schedule_flush(self, *, now: bool = False) -> asyncio.Task[None] | None:
        """Start writing the registry backlog in the background unless a write is under way
        (or, unless ``now``, the last failure asks to wait a little longer); return the task
        started, if any."""
        if not self._unrecorded or (self._flusher is not None and not self._flusher.done()):
            return None
        if not now and time.monotonic() < self._retry_at:
            return None
        self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return self._flusher

    async def flush_registry(self) -> int:
        """Write the backlog now (after a write under way) and return how many rows are left."""
        if self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        self.schedule_flush(now=True)
        if self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        return len(self._unrecorded)

    async def _flush(self) -> None:
        while self._unrecorded:
            row = self._unrecorded[0]
            meta = row.meta
            try:
                await asyncio.to_thread(
                    self._registry.record_version, meta, row.key_id, lineage=row.lineage,
                    status=row.status, hold_reason=row.hold_reason, gate=row.gate,
                )
            except Exception as exc:  # noqa: BLE001 - any database failure only defers the row
                self.registry_failures += 1
                self._backoff_s = min(max(self._backoff_s * 2, 0.2), self._max_backoff_s)
                self._retry_at = time.monotonic() + self._backoff_s
                log.warning(
                    "registry write of v%s deferred (%s rows waiting, next try in %.1fs): %s",
                    meta.version, len(self._unrecorded), self._backoff_s, exc,
                )
                return
            self._unrecorded.popleft()
            self._recorded_since_compaction += 1
        self._backoff_s = 0.0
        self._retry_at = 0.0
        due = self._retention is not None and self._recorded_since_compaction >= COMPACT_EVERY
        if due and (self._compactor is None or self._compactor.done()):
            self._compactor = asyncio.get_running_loop().create_task(self._compact(meta.app, meta.model))

    async def _compact(self, app: str, model: str) -> None:
        """Bound the model's registry rows (in the background: a first compaction of a large
        table takes a while, and new rows go on being recorded meanwhile)."""
        assert self._retention is not None
        r = self._retention
        try:
            keep = set(await self._store.pinned(model))
            if (current := await self._store.current_version(model)) is not None:
                keep.add(current)
            self._recorded_since_compaction = 0
            deleted = await asyncio.to_thread(
                self._registry.compact_versions, app, model,
                keep_full=r.registry_full, keep_sampled=r.registry_sampled, keep=keep,
            )
        except Exception as exc:  # noqa: BLE001 - compaction is housekeeping: tried again after more rows
            log.warning("registry compaction of %s deferred: %r", model, exc)
            return
        self.compacted += deleted
        if deleted:
            log.info("registry of %s compacted: %s older rows merged into their neighbours", model, deleted)

    async def idle(self) -> None:
        """Wait for the registry write and the compaction under way, if any."""
        for task in (self._flusher, self._compactor):
            if task is not None and not task.done():
                await asyncio.shield(task)

    @property
    def registry_backlog(self) -> int:
        return len(self._unrecorded)

    async def close(self) -> None:
        """Stop a background write or compaction in progress (rows not written stay in the backlog)."""
        for task in (self._flusher, self._compactor):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
