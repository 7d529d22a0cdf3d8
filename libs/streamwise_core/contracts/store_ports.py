"""The model store as its users need it: a few small ports.

``modelstore.ModelStore`` (Redis) implements them all, ``memory_store.MemoryModelStore`` too
(for unit tests). A class or function that needs a little of the store names the port it uses,
so its tests can hand it the in-memory store, or a smaller stand-in of their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from streamwise_core.contracts.codec import SignedBlob
from streamwise_core.contracts.retention import Retention
from streamwise_core.contracts.store_types import Champion, GateCallback, Pointer


class Blobs(Protocol):
    """Signed versions: stored (with the pointer move and checkpoint that go with them, in one
    write), read, pinned and pruned."""

    async def publish(
        self, model: str, version: int, signed: SignedBlob, *,
        checkpoint: SignedBlob | None = None, make_current: bool = True,
    ) -> None: ...

    async def publish_gated(
        self, model: str, version: int, signed: SignedBlob, gate: GateCallback, *,
        checkpoint: SignedBlob | None = None, read_served: bool = True,
    ) -> tuple[bool, dict[str, Any]]: ...

    async def load(self, model: str, version: int) -> SignedBlob | None: ...

    async def load_gate(self, model: str, version: int) -> dict[str, Any] | None: ...

    async def stored_versions(self, model: str) -> list[int]: ...

    async def pin(self, model: str, version: int) -> bool: ...

    async def unpin(self, model: str, version: int) -> bool: ...

    async def pinned(self, model: str) -> list[int]: ...

    async def prune(self, model: str, retention: Retention) -> int: ...


class Pointers(Protocol):
    """Which version of each model is current, which model is the champion, which learn."""

    async def pointer(self, model: str) -> Pointer | None: ...

    async def current_version(self, model: str) -> int | None: ...

    async def latest_version(self, model: str) -> int | None: ...

    async def move_current(self, model: str, version: int, *, expect: int | None = None) -> Pointer: ...

    async def champion(self) -> Champion | None: ...

    async def claim_champion(self, model: str) -> Champion: ...

    async def set_champion(self, model: str, *, expect: str | None = None) -> Champion: ...

    async def roster(self) -> list[str]: ...

    async def set_roster(self, models: list[str]) -> None: ...


class Checkpoints(Protocol):
    """The trainer's whole state, one per model, to resume from."""

    async def save_checkpoint(self, model: str, signed: SignedBlob) -> None: ...

    async def load_checkpoint(self, model: str) -> SignedBlob | None: ...

    async def forget_checkpoint(self, model: str) -> None: ...


class Announcements(Protocol):
    """Notes to every predictor and web app: a pointer moved, a champion changed, a drift."""

    async def notify(self, note: dict[str, Any]) -> None: ...

    def announcements(self) -> AsyncIterator[dict[str, Any]]: ...


class WriterLeases(Protocol):
    """One trainer per model may publish: the holder of its lease."""

    async def claim_writer(self, model: str, holder: str, ttl_ms: int) -> str: ...

    async def release_writer(self, model: str, holder: str) -> None: ...


class VersionStore(Blobs, Pointers, Protocol):
    """Versions and the pointers at them: what publishing and the lifecycle operations use."""


class FollowedVersions(VersionStore, Announcements, Protocol):
    """Versions and pointers, and the announcements that say when they move: what predictors follow."""
