"""The web app's live model: reading, verifying, polling and fanning out, against an in-memory store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.contracts.codec import ModelMeta, SignedBlob, pack
from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_core.contracts.signing import Signer
from streamwise_webapp.live import CurrentReader, LiveModel, VersionUnreadable
from streamwise_webapp.views import LiveState, LiveStatus

SIGNER = Signer({"k": b"0123456789abcdef0123"})
MODEL = "fraud-lr"
DEADLINE_S = 5.0


def signed(version: int, model: str = MODEL, signer: Signer = SIGNER) -> SignedBlob:
    meta = ModelMeta(app="fraud", model=model, version=version, task="binary", examples_seen=version * 10,
                     metrics={"accuracy": 0.9, "accuracy_recent": 0.95})
    return pack({"weights": [version]}, meta, signer)


class FakeStore:
    """The part of ``ModelStore`` the web app uses."""

    def __init__(self) -> None:
        self.blobs: dict[int, SignedBlob] = {}
        self.current: int | None = None
        self.down = False
        self.loads = 0
        self.notes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def champion(self) -> None:
        """No champion set: the web app shows the configured model (the roster is tested on Redis)."""
        if self.down:
            raise BackendUnavailable("redis: down")
        return None

    async def current_version(self, model: str) -> int | None:
        if self.down:
            raise BackendUnavailable("redis: down")
        return self.current

    async def load(self, model: str, version: int) -> SignedBlob | None:
        self.loads += 1
        return self.blobs.get(version)

    async def announcements(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            yield await self.notes.get()

    def publish(self, version: int, *, announce: bool = True) -> None:
        self.blobs[version] = signed(version)
        self.current = version
        if announce:
            self.notes.put_nowait({"model": MODEL, "version": version})


def reader_for(store: FakeStore) -> CurrentReader:
    return CurrentReader(cast(ModelStore, store), SIGNER, MODEL)


def live_for(store: FakeStore, poll_interval_s: float) -> LiveModel:
    return LiveModel(reader_for(store), cast(ModelStore, store), MODEL, poll_interval_s)


@contextlib.asynccontextmanager
async def running(live: LiveModel) -> AsyncIterator[None]:
    task = asyncio.create_task(live.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def next_state(updates: AsyncIterator[LiveState | None]) -> LiveState:
    """The next real state, skipping keep-alives, within the deadline."""
    async with asyncio.timeout(DEADLINE_S):
        while True:
            state = await anext(updates)
            if state is not None:
                return state


class TestCurrentReader:
    async def test_none_before_the_first_version(self) -> None:
        assert await reader_for(FakeStore()).read() is None

    async def test_reads_verified_metadata_once_per_version(self) -> None:
        store = FakeStore()
        reader = reader_for(store)
        store.publish(1)
        first = await reader.read()
        again = await reader.read()
        assert first is not None and first.version == 1 and first.examples_seen == 10
        assert again == first
        assert store.loads == 1
        store.publish(2)
        second = await reader.read()
        assert second is not None and second.version == 2

    async def test_missing_blob_is_unreadable(self) -> None:
        store = FakeStore()
        store.current = 4
        with pytest.raises(VersionUnreadable, match="missing"):
            await reader_for(store).read()

    async def test_forged_blob_is_unreadable(self) -> None:
        store = FakeStore()
        store.blobs[1] = signed(1, signer=Signer({"k": b"another-secret-key-000"}))
        store.current = 1
        with pytest.raises(VersionUnreadable, match="refused"):
            await reader_for(store).read()

    async def test_a_refused_version_is_not_downloaded_again(self) -> None:
        store = FakeStore()
        store.blobs[1] = signed(1, signer=Signer({"k": b"another-secret-key-000"}))
        store.current = 1
        reader = reader_for(store)
        for _ in range(3):
            with pytest.raises(VersionUnreadable, match="refused"):
                await reader.read()
        assert store.loads == 1

    async def test_blob_of_another_version_is_unreadable(self) -> None:
        store = FakeStore()
        store.blobs[2] = signed(1)
        store.current = 2
        with pytest.raises(VersionUnreadable, match="names"):
            await reader_for(store).read()


class TestLiveModel:
    async def test_announcement_wakes_the_stream_without_waiting_for_a_poll(self) -> None:
        store = FakeStore()
        live = live_for(store, poll_interval_s=3600)
        async with running(live):
            updates = live.updates(keepalive_s=3600)
            assert (await next_state(updates)).status is LiveStatus.WAITING
            store.publish(1)
            state = await next_state(updates)
            assert state.status is LiveStatus.CURRENT
            assert state.current is not None and state.current.version == 1
            await updates.aclose()

    async def test_polling_covers_a_lost_announcement(self) -> None:
        store = FakeStore()
        store.publish(1, announce=False)
        live = live_for(store, poll_interval_s=0.05)
        async with running(live):
            updates = live.updates(keepalive_s=3600)
            first = await next_state(updates)
            assert first.current is not None and first.current.version == 1
            store.publish(2, announce=False)
            second = await next_state(updates)
            assert second.current is not None and second.current.version == 2
            await updates.aclose()

    async def test_keep_alive_when_nothing_changes(self) -> None:
        live = live_for(FakeStore(), poll_interval_s=3600)
        updates = live.updates(keepalive_s=0.05)
        assert (await anext(updates)) is not None
        async with asyncio.timeout(DEADLINE_S):
            assert (await anext(updates)) is None
        await updates.aclose()

    async def test_unavailable_store_keeps_the_last_version(self) -> None:
        store = FakeStore()
        store.publish(1)
        live = live_for(store, poll_interval_s=3600)
        await live.refresh()
        store.down = True
        state = await live.refresh()
        assert state.status is LiveStatus.UNAVAILABLE
        assert state.current is not None and state.current.version == 1
        store.down = False
        assert (await live.refresh()).status is LiveStatus.CURRENT

    async def test_closing_a_stream_unsubscribes_it(self) -> None:
        live = live_for(FakeStore(), poll_interval_s=3600)
        updates = live.updates(keepalive_s=3600)
        await anext(updates)
        assert live.subscribers == 1
        await updates.aclose()
        assert live.subscribers == 0
