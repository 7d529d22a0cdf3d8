"""The model store in memory: every port of ``store_ports``, for unit tests and one-process demos.

It answers as ``modelstore.ModelStore`` does over Redis (tests/integration/test_store_contract.py
holds the two to the same behaviour), on an injected clock; nothing survives the process.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from streamwise_core.contracts.codec import SignedBlob
from streamwise_core.contracts.retention import Retention
from streamwise_core.contracts.store_types import Champion, GateCallback, Pointer, PointerMoved


@dataclass
class _Model:
    blobs: dict[int, SignedBlob] = field(default_factory=dict)
    gates: dict[int, dict[str, Any]] = field(default_factory=dict)
    served_at_ms: dict[int, int] = field(default_factory=dict)
    """When each version was last made current."""
    pinned: set[int] = field(default_factory=set)
    current: int | None = None
    generation: int = 0
    latest: int | None = None
    checkpoint: SignedBlob | None = None
    writer: tuple[str, float] | None = None
    """The lease's holder and when it expires, on the clock."""


class MemoryModelStore:
    """Blobs, pointers, checkpoints, announcements and writer leases of one application."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._models: dict[str, _Model] = {}
        self._champion: Champion | None = None
        self._roster: list[str] = []
        self._listeners: list[asyncio.Queue[dict[str, Any]]] = []
        self.notes: list[dict[str, Any]] = []
        """Every announcement made, in order (for tests)."""

    def _model(self, model: str) -> _Model:
        return self._models.setdefault(model, _Model())

    async def close(self) -> None:
        return None

    # Blobs

    async def publish(
        self, model: str, version: int, signed: SignedBlob, *,
        checkpoint: SignedBlob | None = None, make_current: bool = True,
    ) -> None:
        m = self._store(model, version, signed, checkpoint)
        if make_current:
            self._move(model, m, version)

    async def publish_gated(
        self, model: str, version: int, signed: SignedBlob, gate: GateCallback, *,
        checkpoint: SignedBlob | None = None, read_served: bool = True,
    ) -> tuple[bool, dict[str, Any]]:
        m = self._model(model)
        already = m.current == version
        if already:
            serve, record = True, {"status": "served", "reason": "already current"}
        else:
            served = m.blobs.get(m.current) if m.current is not None and read_served else None
            serve, record = gate(m.current, served.meta if served is not None else None)
        self._store(model, version, signed, checkpoint)
        m.gates[version] = json.loads(json.dumps(record, default=str))
        if serve and not already:
            self._move(model, m, version)
        return serve, record

    def _store(self, model: str, version: int, signed: SignedBlob, checkpoint: SignedBlob | None) -> _Model:
        m = self._model(model)
        m.blobs[version] = signed
        if checkpoint is not None:
            m.checkpoint = checkpoint
        m.latest = version
        return m

    def _move(self, model: str, m: _Model, version: int) -> None:
        m.current = version
        m.generation += 1
        m.served_at_ms[version] = int(self._clock() * 1000)
        self._announce({"model": model, "version": version, "generation": m.generation})

    async def load(self, model: str, version: int) -> SignedBlob | None:
        return self._model(model).blobs.get(version)

    async def load_gate(self, model: str, version: int) -> dict[str, Any] | None:
        return self._model(model).gates.get(version)

    async def stored_versions(self, model: str) -> list[int]:
        return sorted(self._model(model).blobs)

    async def pin(self, model: str, version: int) -> bool:
        m = self._model(model)
        if version not in m.blobs:
            raise LookupError(f"{model} v{version} is not stored")
        added = version not in m.pinned
        m.pinned.add(version)
        return added

    async def unpin(self, model: str, version: int) -> bool:
        m = self._model(model)
        removed = version in m.pinned
        m.pinned.discard(version)
        return removed

    async def pinned(self, model: str) -> list[int]:
        return sorted(self._model(model).pinned)

    async def prune(self, model: str, retention: Retention) -> int:
        """What ``ModelStore.prune`` deletes: none of the newest ``keep_last``, the current one,
        the last ``rollback_window`` made current, those made current within the grace period
        and the one(s) current when it began, the pinned ones."""
        m = self._model(model)
        stored = sorted(m.blobs)
        keep_last = max(retention.keep_last, 1)
        if len(stored) < keep_last:
            return 0
        keep = set(m.pinned) | ({m.current} if m.current is not None else set())
        by_time = sorted(m.served_at_ms.items(), key=lambda item: (item[1], item[0]), reverse=True)
        keep |= {v for v, _ in by_time[:max(retention.rollback_window, 0)]}
        cutoff = int((self._clock() - retention.grace_s) * 1000)
        keep |= {v for v, at in by_time if at >= cutoff}
        before = [at for _, at in by_time if at < cutoff]
        if before:
            keep |= {v for v, at in by_time if at == before[0]}
        candidates = [v for v in stored if v < stored[-keep_last]][:retention.most_per_prune]
        deleted = [v for v in candidates if v not in keep]
        for v in deleted:
            del m.blobs[v]
            m.gates.pop(v, None)
            m.served_at_ms.pop(v, None)
        return len(deleted)

    # Pointers

    async def pointer(self, model: str) -> Pointer | None:
        m = self._model(model)
        return Pointer(m.current, m.generation) if m.current is not None else None

    async def current_version(self, model: str) -> int | None:
        return self._model(model).current

    async def latest_version(self, model: str) -> int | None:
        m = self._model(model)
        values = [v for v in (m.latest, m.current) if v is not None]
        return max(values) if values else None

    async def move_current(self, model: str, version: int, *, expect: int | None = None) -> Pointer:
        m = self._model(model)
        if version not in m.blobs:
            raise LookupError(f"{model} v{version} is not stored")
        if expect is not None and m.current != expect:
            raise PointerMoved(f"{model} current is v{m.current}, not v{expect}")
        self._move(model, m, version)
        return Pointer(version, m.generation)

    async def champion(self) -> Champion | None:
        return self._champion

    async def claim_champion(self, model: str) -> Champion:
        if self._champion is None:
            self._champion = Champion(model, 1)
        return self._champion

    async def set_champion(self, model: str, *, expect: str | None = None) -> Champion:
        current = self._champion.model if self._champion is not None else None
        if expect is not None and current != expect:
            raise PointerMoved(f"the champion is {current}, not {expect}")
        self._champion = Champion(model, (self._champion.generation if self._champion is not None else 0) + 1)
        self._announce({"champion": model, "champion_generation": self._champion.generation})
        return self._champion

    async def roster(self) -> list[str]:
        return list(self._roster)

    async def set_roster(self, models: list[str]) -> None:
        self._roster = sorted(models)

    # Checkpoints

    async def save_checkpoint(self, model: str, signed: SignedBlob) -> None:
        self._model(model).checkpoint = signed

    async def load_checkpoint(self, model: str) -> SignedBlob | None:
        return self._model(model).checkpoint

    async def forget_checkpoint(self, model: str) -> None:
        self._model(model).checkpoint = None

    # Announcements

    async def notify(self, note: dict[str, Any]) -> None:
        self._announce(json.loads(json.dumps(note, default=str)))

    def _announce(self, note: dict[str, Any]) -> None:
        self.notes.append(note)
        for queue in self._listeners:
            queue.put_nowait(note)

    async def announcements(self) -> AsyncIterator[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._listeners.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._listeners.remove(queue)

    # Writer leases

    async def claim_writer(self, model: str, holder: str, ttl_ms: int) -> str:
        m = self._model(model)
        now = self._clock()
        if m.writer is None or m.writer[0] == holder or m.writer[1] <= now:
            m.writer = (holder, now + ttl_ms / 1000)
            return holder
        return m.writer[0]

    async def release_writer(self, model: str, holder: str) -> None:
        m = self._model(model)
        if m.writer is not None and m.writer[0] == holder:
            m.writer = None
