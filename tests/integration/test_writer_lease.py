"""The single-writer lease on a real Redis: one trainer per model."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamwise_core.adapters.modelstore import ModelStore
from streamwise_devstack import RedisServer
from streamwise_trainer.lease import WriterConflict, acquire


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with RedisServer(Path(tmp_path_factory.mktemp("lease-redis"))) as server:
        yield server.url


LONG_MS = 120_000
"""A lease no test outlives: it ends only when released, however slow the machine."""


def test_second_writer_is_refused_until_the_first_lets_go(redis_url: str) -> None:
    async def go() -> None:
        store = ModelStore.from_url(redis_url, "lease", "app")
        try:
            await acquire(store, "m", "first", LONG_MS)
            assert await store.claim_writer("m", "first", LONG_MS) == "first"  # renewal
            with pytest.raises(WriterConflict, match="first"):
                await acquire(store, "m", "second", LONG_MS, wait_s=0.3)
            await store.release_writer("m", "second")  # not the holder: nothing happens
            assert await store.claim_writer("m", "second", LONG_MS) == "first"
            await store.release_writer("m", "first")
            await acquire(store, "m", "second", LONG_MS, wait_s=0)
            assert await store.claim_writer("m", "first", LONG_MS) == "second"
        finally:
            await store.close()

    asyncio.run(go())


def test_an_expired_lease_goes_to_the_next_trainer(redis_url: str) -> None:
    async def go() -> None:
        store = ModelStore.from_url(redis_url, "lease", "app")
        try:
            await acquire(store, "x", "crashed", 300)  # never renewed nor released
            await acquire(store, "x", "successor", LONG_MS, wait_s=60)  # waits out the expiry
            assert await store.claim_writer("x", "crashed", 300) == "successor"
        finally:
            await store.close()

    asyncio.run(go())
