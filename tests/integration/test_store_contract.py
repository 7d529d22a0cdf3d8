"""The ports of the model store, asked of Redis (``ModelStore``, a real redis-server) and of the
in-memory store unit tests use instead: both must answer the same."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from streamwise_core.adapters.memory_store import MemoryModelStore
from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.contracts.codec import ModelMeta, SignedBlob, pack
from streamwise_core.contracts.signing import Signer
from streamwise_core.contracts.store_types import Champion, Pointer, PointerMoved

pytestmark = pytest.mark.integration

MODEL = "fraud-lr"
SIGNER = Signer({"k1": b"integration-test-signing-key-1"})
DEADLINE_S = 30.0

Store = ModelStore | MemoryModelStore


@functools.cache
def signed(version: int) -> SignedBlob:
    """The same bytes each time for a version (its metadata holds the time it was made)."""
    meta = ModelMeta(app="contract", model=MODEL, version=version, task="binary", examples_seen=10 * version)
    return pack({"version": version}, meta, SIGNER)


@pytest.fixture(params=["redis", "memory"])
async def store(request: pytest.FixtureRequest, redis_server: Any) -> AsyncIterator[Store]:
    s: Store = MemoryModelStore() if request.param == "memory" else \
        ModelStore.from_url(redis_server.url, f"contract-{uuid.uuid4().hex[:8]}", "app")
    try:
        yield s
    finally:
        await s.close()


async def test_versions_pointers_and_generations(store: Store) -> None:
    assert await store.pointer(MODEL) is None and await store.latest_version(MODEL) is None
    await store.publish(MODEL, 1, signed(1))
    await store.publish(MODEL, 2, signed(2), make_current=False)
    assert await store.pointer(MODEL) == Pointer(1, 1)
    assert await store.latest_version(MODEL) == 2 and await store.stored_versions(MODEL) == [1, 2]
    assert await store.load(MODEL, 2) == signed(2) and await store.load(MODEL, 3) is None
    assert await store.move_current(MODEL, 2, expect=1) == Pointer(2, 2)
    with pytest.raises(PointerMoved):
        await store.move_current(MODEL, 1, expect=1)
    with pytest.raises(LookupError):
        await store.move_current(MODEL, 7)
    assert await store.current_version(MODEL) == 2


async def test_the_gate_decides_against_the_version_served_and_is_recorded(store: Store) -> None:
    seen: list[tuple[int | None, bytes | None]] = []

    def hold_back(current: int | None, served_meta: bytes | None) -> tuple[bool, dict[str, Any]]:
        seen.append((current, served_meta))
        return current is None, {"status": "served" if current is None else "held_back"}

    assert await store.publish_gated(MODEL, 1, signed(1), hold_back) == (True, {"status": "served"})
    assert await store.publish_gated(MODEL, 2, signed(2), hold_back) == (False, {"status": "held_back"})
    assert await store.latest_version(MODEL) == 2
    assert await store.publish_gated(MODEL, 1, signed(1), hold_back) == (True, {"status": "served", "reason": "already current"})
    assert seen == [(None, None), (1, signed(1).meta)]
    assert await store.pointer(MODEL) == Pointer(1, 1)
    assert await store.load_gate(MODEL, 2) == {"status": "held_back"}


async def test_checkpoints_go_with_a_version_or_alone(store: Store) -> None:
    assert await store.load_checkpoint(MODEL) is None
    await store.publish(MODEL, 1, signed(1), checkpoint=signed(101))
    assert await store.load_checkpoint(MODEL) == signed(101)
    await store.save_checkpoint(MODEL, signed(102))
    assert await store.load_checkpoint(MODEL) == signed(102)
    await store.forget_checkpoint(MODEL)
    assert await store.load_checkpoint(MODEL) is None


async def test_pins_need_a_stored_version(store: Store) -> None:
    await store.publish(MODEL, 1, signed(1))
    with pytest.raises(LookupError):
        await store.pin(MODEL, 2)
    assert await store.pin(MODEL, 1) and not await store.pin(MODEL, 1)
    assert await store.pinned(MODEL) == [1]
    assert await store.unpin(MODEL, 1) and not await store.unpin(MODEL, 1)


async def test_champion_and_roster(store: Store) -> None:
    assert await store.champion() is None and await store.roster() == []
    assert await store.claim_champion("a") == Champion("a", 1)
    assert await store.claim_champion("b") == Champion("a", 1)
    assert await store.set_champion("b", expect="a") == Champion("b", 2)
    with pytest.raises(PointerMoved):
        await store.set_champion("c", expect="a")
    await store.set_roster(["b", "a"])
    assert await store.roster() == ["a", "b"]


async def test_one_writer_lease_per_model(store: Store) -> None:
    assert await store.claim_writer(MODEL, "me", 60_000) == "me"
    assert await store.claim_writer(MODEL, "other", 60_000) == "me"
    assert await store.claim_writer("another-model", "other", 60_000) == "other"
    await store.release_writer(MODEL, "other")  # not its lease: nothing happens
    assert await store.claim_writer(MODEL, "other", 60_000) == "me"
    await store.release_writer(MODEL, "me")
    assert await store.claim_writer(MODEL, "other", 60_000) == "other"


async def test_announcements_of_pointer_moves_champions_and_notes(store: Store) -> None:
    received: list[dict[str, Any]] = []

    async def listen() -> None:
        async for note in store.announcements():
            received.append(note)

    listener = asyncio.ensure_future(listen())
    try:
        expected = [
            {"model": MODEL, "version": 1, "generation": 1},
            {"champion": "b", "champion_generation": 1},
            {"drift": MODEL},
        ]
        async with asyncio.timeout(DEADLINE_S):
            while not received:  # until the subscription is in place: an announcement gets through
                await store.notify({"ping": True})
                await asyncio.sleep(0.02)
            received.clear()
            await store.publish(MODEL, 1, signed(1))
            await store.set_champion("b")
            await store.notify({"drift": MODEL})
            while [n for n in received if "ping" not in n] != expected:
                await asyncio.sleep(0.01)
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
