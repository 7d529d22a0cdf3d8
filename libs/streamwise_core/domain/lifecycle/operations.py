"""Promote and roll back: move the current pointer to a stored version, audit-logged.

Both are the same operation in two directions. The blob is verified first (a pointer at a blob
predictors would refuse serves nothing new), the pointer moves with a new generation in one
Redis transaction (every predictor follows the newest generation, so a rollback is followed
although its version is lower), and the audit log records who, when, what and why.

Pin and unpin: retention keeps a pinned version's blob (something to roll back to) whatever
its age; unpinned, it may be deleted at the next pruning. Both are audit-logged too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal

from streamwise_core.adapters.registry import AuditEntry, Registry
from streamwise_core.contracts.codec import verify
from streamwise_core.contracts.errors import BlobRefused, StreamwiseError
from streamwise_core.contracts.signing import Signer
from streamwise_core.contracts.store_ports import VersionStore
from streamwise_core.contracts.store_types import PointerMoved

from .gate import HELD_BACK, SERVED

Action = Literal["promote", "rollback"]
PinAction = Literal["pin", "unpin"]


class LifecycleError(StreamwiseError):
    """An operation that cannot be done as asked; ``status`` is the HTTP status to answer."""

    status = 409


class VersionNotFound(LifecycleError):
    status = 404


class Conflict(LifecycleError):
    status = 409


@dataclass(frozen=True)
class Moved:
    model: str
    version_from: int | None
    version_to: int
    generation: int
    blob_sha256: str
    audit_id: int


async def move_current(
    store: VersionStore, registry: Registry, signer: Signer, *, app: str, model: str, version: int,
    action: Action, actor: str, reason: str,
) -> Moved:
    """Roll back to an earlier stored version, or promote a later one (e.g. held back)."""
    pointer = await store.pointer(model)
    current = pointer.version if pointer is not None else None
    if action == "rollback" and (current is None or version >= current):
        raise Conflict(f"rollback needs a version below the current one (v{current}), got v{version}")
    if action == "promote" and current is not None and version <= current:
        raise Conflict(f"promote needs a version above the current one (v{current}), got v{version}; roll back instead")
    signed = await store.load(model, version)
    if signed is None:
        raise VersionNotFound(await _not_stored(registry, app, model, version))
    try:
        meta = verify(signed, signer)
    except BlobRefused as exc:
        raise Conflict(f"{model} v{version} fails verification, predictors would refuse it: {exc}") from exc
    if meta.model != model or meta.version != version:
        raise Conflict(f"{model} v{version} holds metadata of {meta.model} v{meta.version}")
    row = await asyncio.to_thread(registry.version, app, model, version)  # also: the registry answers
    try:
        moved = await store.move_current(model, version, expect=current)
    except LookupError as exc:
        raise VersionNotFound(str(exc)) from exc
    except PointerMoved as exc:
        raise Conflict(f"the current version changed meanwhile ({exc}); try again") from exc
    if row is not None and row.status == HELD_BACK:
        await asyncio.to_thread(registry.set_status, app, model, version, SERVED)
    audit_id = await asyncio.to_thread(registry.record_audit, AuditEntry(
        app=app, actor=actor, action=action, model=model, version_from=current, version_to=version,
        reason=reason, details={
            "generation": moved.generation,
            "generation_from": pointer.generation if pointer is not None else None,
            "blob_sha256": meta.blob_sha256,
            "status_before": row.status if row is not None else None,
        },
    ))
    return Moved(model, current, version, moved.generation, meta.blob_sha256, audit_id)


@dataclass(frozen=True)
class PinChanged:
    model: str
    version: int
    pinned: bool
    audit_id: int


async def pin(
    store: VersionStore, registry: Registry, *, app: str, model: str, version: int, actor: str, reason: str,
) -> PinChanged:
    """Keep a stored version's blob whatever the retention."""
    try:
        if not await store.pin(model, version):
            raise Conflict(f"{model} v{version} is pinned already")
    except LookupError as exc:
        raise VersionNotFound(await _not_stored(registry, app, model, version)) from exc
    return PinChanged(model, version, True, await _audit_pin(registry, app, model, version, "pin", actor, reason))


async def unpin(
    store: VersionStore, registry: Registry, *, app: str, model: str, version: int, actor: str, reason: str,
) -> PinChanged:
    """Let retention delete a pinned version's blob again (not at once: at the next pruning)."""
    if not await store.unpin(model, version):
        raise Conflict(f"{model} v{version} is not pinned")
    return PinChanged(model, version, False, await _audit_pin(registry, app, model, version, "unpin", actor, reason))


async def _not_stored(registry: Registry, app: str, model: str, version: int) -> str:
    if await asyncio.to_thread(registry.version, app, model, version) is None:
        return f"{model} v{version} does not exist"
    return f"{model} v{version} was deleted by retention: its blob is no longer stored"


async def _audit_pin(
    registry: Registry, app: str, model: str, version: int, action: PinAction, actor: str, reason: str,
) -> int:
    row = await asyncio.to_thread(registry.version, app, model, version)
    return await asyncio.to_thread(registry.record_audit, AuditEntry(
        app=app, actor=actor, action=action, model=model, version_to=version, reason=reason,
        details={"blob_sha256": row.blob_sha256 if row is not None else None},
    ))
