"""Retention of version blobs in a real redis-server: what is kept, what goes, and the race
with predictors fetching a version they were told about. What is kept is asked of the
in-memory store too: it must answer as Redis does."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from streamwise_core.adapters.memory_store import MemoryModelStore
from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.contracts.codec import ModelMeta, SignedBlob, pack
from streamwise_core.contracts.retention import Retention
from streamwise_core.contracts.signing import Signer

pytestmark = pytest.mark.integration

MODEL = "fraud-lr"
SIGNER = Signer({"k1": b"integration-test-signing-key-1"})


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def signed(app: str, version: int) -> SignedBlob:
    meta = ModelMeta(app=app, model=MODEL, version=version, task="binary", examples_seen=10 * version)
    return pack({"version": version}, meta, SIGNER)


@pytest.fixture
def app() -> str:
    return f"app-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(redis_server: Any, app: str, clock: Clock) -> ModelStore:
    return ModelStore.from_url(redis_server.url, "sw-test", app, clock=clock)


@pytest.fixture(params=["redis", "memory"])
def any_store(request: pytest.FixtureRequest, redis_server: Any, app: str, clock: Clock) -> ModelStore | MemoryModelStore:
    if request.param == "memory":
        return MemoryModelStore(clock=clock)
    return ModelStore.from_url(redis_server.url, "sw-test", app, clock=clock)


def test_prune_keeps_the_newest_the_served_window_the_grace_period_and_pins(
    any_store: ModelStore | MemoryModelStore, clock: Clock, app: str,
) -> None:
    store = any_store
    retention = Retention(keep_last=5, rollback_window=1, grace_s=60)

    async def go() -> None:
        for v in range(1, 41):
            current = v % 4 == 0  # every fourth version was served, the others held back
            await store.publish(MODEL, v, signed(app, v), make_current=current)
            clock.now += 10
        await store.pin(MODEL, 2)
        # now = 1,000,400: v40 became current at 1,000,390 and v36 at 1,000,350, inside the 60 s
        # grace; v32 at 1,000,310, current until 1,000,350: inside it too; v28 was replaced before.
        deleted = await store.prune(MODEL, retention)
        kept = await store.stored_versions(MODEL)
        assert kept == [2, 32, 36, 37, 38, 39, 40]
        assert deleted == 40 - len(kept)
        for v in range(1, 41):
            assert (await store.load(MODEL, v) is not None) == (v in kept), v
        assert await store.prune(MODEL, retention) == 0
        clock.now += 3600  # an hour later only the current version is left of the served ones
        await store.publish(MODEL, 41, signed(app, 41), make_current=False)
        await store.prune(MODEL, retention)
        assert await store.stored_versions(MODEL) == [2, 37, 38, 39, 40, 41]
        assert await store.pinned(MODEL) == [2]
        assert await store.unpin(MODEL, 2) and not await store.unpin(MODEL, 2)
        await store.prune(MODEL, retention)
        assert await store.stored_versions(MODEL) == [37, 38, 39, 40, 41]
        await store.close()

    asyncio.run(go())


def test_a_pin_needs_a_stored_version_and_a_rollback_target_stays(
    any_store: ModelStore | MemoryModelStore, clock: Clock, app: str,
) -> None:
    store = any_store

    async def go() -> None:
        for v in range(1, 11):
            await store.publish(MODEL, v, signed(app, v))
            clock.now += 1000
        await store.move_current(MODEL, 3)  # rolled back to v3: it is current, then served most recently
        await store.prune(MODEL, Retention(keep_last=2, rollback_window=2, grace_s=0))
        assert await store.stored_versions(MODEL) == [3, 9, 10]
        with pytest.raises(LookupError):
            await store.pin(MODEL, 5)
        assert await store.pinned(MODEL) == []
        assert await store.pin(MODEL, 9) and not await store.pin(MODEL, 9)
        await store.prune(MODEL, Retention(keep_last=1, rollback_window=0, grace_s=0))
        assert await store.stored_versions(MODEL) == [3, 9, 10], "no rollback window: the current, the pinned and the newest"
        await store.close()

    asyncio.run(go())


def test_versions_stored_before_the_index_are_found_and_pruned(store: ModelStore, clock: Clock, app: str) -> None:

    async def go() -> None:
        for v in range(1, 31):
            await store.publish(MODEL, v, signed(app, v))
            clock.now += 1
        await store._r.delete(store._versions_key(MODEL))  # as written by an older release
        assert await store.prune(MODEL, Retention(keep_last=5, rollback_window=1, grace_s=0)) == 0
        assert await store.index_versions(MODEL) == 30
        assert await store.prune(MODEL, Retention(keep_last=5, rollback_window=1, grace_s=0)) == 25
        assert await store.stored_versions(MODEL) == [26, 27, 28, 29, 30]
        await store.close()

    asyncio.run(go())


def test_no_reader_misses_a_version_it_was_told_about_while_versions_are_published_and_pruned(
    store: ModelStore, clock: Clock, app: str,
) -> None:
    """Readers do what a predictor does (read the pointer, then fetch that version) as fast as
    they can while a writer publishes and prunes after every version."""
    retention = Retention(keep_last=2, rollback_window=1, grace_s=5)
    versions = 400
    misses: list[int] = []
    fetched: list[int] = []
    deleted = 0

    async def writer() -> None:
        nonlocal deleted
        for v in range(1, versions + 1):
            await store.publish(MODEL, v, signed(app, v))
            clock.now += 1  # a version a second: the grace period holds the last five
            deleted += await store.prune(MODEL, retention)

    async def reader() -> None:
        while True:
            pointer = await store.pointer(MODEL)
            if pointer is not None:
                blob = await store.load(MODEL, pointer.version)
                (fetched if blob is not None else misses).append(pointer.version)
                if pointer.version == versions:
                    return
            await asyncio.sleep(0)

    async def go() -> list[int]:
        await asyncio.gather(writer(), *(reader() for _ in range(4)))
        return await store.stored_versions(MODEL)

    stored = asyncio.run(go())
    assert misses == [], "a reader was told of a version that was deleted before it fetched it"
    assert len(set(fetched)) > 1
    assert deleted >= versions - 10 and len(stored) <= 6
