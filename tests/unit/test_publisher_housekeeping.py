"""After publishing, the publisher prunes old blobs and, every so many rows, compacts the
registry, keeping the pinned and current versions; neither can fail a publication."""

from __future__ import annotations

import asyncio
from typing import Any

from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_core.contracts.retention import Retention
from streamwise_trainer import publisher as publisher_module
from streamwise_trainer.publisher import Publisher

from .trainer_support import SIGNER, records, runtime_without_clients


class Store:
    def __init__(self, *, failing: bool = False) -> None:
        self.failing = failing
        self.pruned_with: list[Retention] = []

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def prune(self, model: str, retention: Retention) -> int:
        if self.failing:
            raise BackendUnavailable("redis: down")
        self.pruned_with.append(retention)
        return 2

    async def pinned(self, model: str) -> list[int]:
        return [3]

    async def current_version(self, model: str) -> int | None:
        return 7


class Registry:
    def __init__(self) -> None:
        self.rows: list[int] = []
        self.compactions: list[dict[str, Any]] = []

    def record_version(self, meta: Any, key_id: str, **kwargs: Any) -> bool:
        self.rows.append(meta.version)
        return True

    def compact_versions(self, app: str, model: str, **kwargs: Any) -> int:
        self.compactions.append({"rows": len(self.rows), **kwargs})
        return 5


class Producer:
    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def test_every_publication_prunes_and_every_hundred_rows_compact_the_registry(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(publisher_module, "COMPACT_EVERY", 10)
    retention = Retention(keep_last=4, registry_full=50, registry_sampled=20)
    store, registry = Store(), Registry()
    runtime = runtime_without_clients()
    trainer = runtime.trainer

    async def go() -> Publisher:
        publisher = Publisher(store, registry, Producer(), "models", retention=retention)  # type: ignore[arg-type]
        for i in range(25):
            trainer.handle_many(records(runtime, 1, start=i))
            await publisher.deliver(trainer.snapshot(SIGNER, checkpoint=False))
            await publisher.flush_registry()
            await publisher.idle()
        return publisher

    publisher = asyncio.run(go())
    assert len(store.pruned_with) == 25 and store.pruned_with[0] == retention
    assert publisher.pruned == 50
    assert [c["rows"] for c in registry.compactions] == [10, 20]
    assert registry.compactions[0] | {"rows": 0} == {"rows": 0, "keep_full": 50, "keep_sampled": 20, "keep": {3, 7}}
    assert publisher.compacted == 10


def test_a_failing_prune_leaves_the_blobs_for_next_time_and_the_version_published() -> None:
    store, registry = Store(failing=True), Registry()
    runtime = runtime_without_clients()

    async def go() -> None:
        publisher = Publisher(store, registry, Producer(), "models", retention=Retention())  # type: ignore[arg-type]
        runtime.trainer.handle_many(records(runtime, 3))
        await publisher.deliver(runtime.trainer.snapshot(SIGNER, checkpoint=False))
        await publisher.flush_registry()

    asyncio.run(go())
    assert registry.rows == [1]
