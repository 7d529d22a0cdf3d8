"""ModelStore and VersionWatcher against a real redis-server (no mocks)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.contracts.codec import ModelMeta, SignedBlob, pack, unpack, verify
from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_core.contracts.signing import Signer
from streamwise_devstack import ExternalRedis, RedisServer
from streamwise_predictor.holder import ModelHolder
from streamwise_predictor.watcher import VersionWatcher

pytestmark = pytest.mark.integration

MODEL = "fraud-lr"
KEYS = {"k1": b"integration-test-signing-key-1"}
SIGNER = Signer(KEYS)
DEADLINE_S = 30.0
"""How long a wait for something that happens in milliseconds may take before the test fails."""


def _meta(app: str, version: int, **extra: Any) -> ModelMeta:
    return ModelMeta(app=app, model=MODEL, version=version, task="binary", examples_seen=10 * version, **extra)


def _signed(app: str, version: int, signer: Signer = SIGNER, **extra: Any) -> SignedBlob:
    """A signed blob whose payload says which version it is."""
    return pack({"weights": [version, version + 0.5], "version": version}, _meta(app, version, **extra), signer)


async def _until(predicate: Callable[[], Awaitable[bool] | bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is true or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def app_name() -> str:
    return f"app-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def prefix() -> str:
    return f"it-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def store(redis_server: RedisServer | ExternalRedis, prefix: str, app_name: str) -> AsyncIterator[ModelStore]:
    s = ModelStore.from_url(redis_server.url, prefix, app_name)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def raw(redis_server: RedisServer | ExternalRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


def _watcher(store: ModelStore, holder: ModelHolder, *, signer: Signer = SIGNER, poll_s: float = 0.05) -> VersionWatcher:
    return VersionWatcher(store, signer, holder, MODEL, poll_s)


@contextlib.asynccontextmanager
async def _running(coro: Awaitable[Any]) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        task.cancel()
        # The task's own failure, if any, is for the test to assert on (task.done()/exception()).
        await asyncio.gather(task, return_exceptions=True)


async def _wait_subscribers(raw: aioredis.Redis, channel: str, count: int = 1, timeout: float = DEADLINE_S) -> None:
    async def subscribed() -> bool:
        try:
            [(_, n)] = await raw.pubsub_numsub(channel)
        except redis.exceptions.ConnectionError:  # a stale pooled connection after a restart
            return False
        return n >= count

    await _until(subscribed, timeout, f"{count} subscriber(s) on {channel}")


# --------------------------------------------------------------------------- ModelStore


async def test_publish_current_version_load_roundtrip_verifies(store: ModelStore, app_name: str) -> None:
    assert await store.current_version(MODEL) is None
    assert await store.load(MODEL, 1) is None

    signed = _signed(app_name, 1)
    await store.publish(MODEL, 1, signed)

    assert await store.current_version(MODEL) == 1
    loaded = await store.load(MODEL, 1)
    assert loaded == signed  # bytes, key id and digest all intact
    meta, model = unpack(loaded, SIGNER)
    assert (meta.app, meta.model, meta.version, meta.examples_seen) == (app_name, MODEL, 1, 10)
    assert model == {"weights": [1, 1.5], "version": 1}

    # A second version moves the pointer; the first one stays loadable.
    await store.publish(MODEL, 2, _signed(app_name, 2))
    assert await store.current_version(MODEL) == 2
    old = await store.load(MODEL, 1)
    assert old is not None and verify(old, SIGNER).version == 1


async def test_publish_without_make_current_keeps_pointer(store: ModelStore, app_name: str) -> None:
    await store.publish(MODEL, 1, _signed(app_name, 1))
    await store.publish(MODEL, 2, _signed(app_name, 2), make_current=False)
    assert await store.current_version(MODEL) == 1
    assert await store.load(MODEL, 2) is not None


async def test_checkpoint_written_in_the_same_transaction(
    store: ModelStore, redis_server: RedisServer | ExternalRedis, app_name: str
) -> None:
    signed = _signed(app_name, 3)
    checkpoint = pack({"state": "trainer", "offsets": {"t:0": 41}}, _meta(app_name, 3), SIGNER)

    # Watch the commands Redis executes while publishing.
    monitor_client = aioredis.from_url(redis_server.url)
    commands: list[str] = []
    try:
        async with monitor_client.monitor() as monitor:
            await store.publish(MODEL, 3, signed, checkpoint=checkpoint)
            deadline = time.monotonic() + DEADLINE_S
            while not commands or commands[-1].split()[0].upper() != "EXEC":
                assert time.monotonic() < deadline, f"no EXEC seen: {commands}"
                info = await asyncio.wait_for(monitor.next_command(), timeout=DEADLINE_S)
                command = info["command"]
                if app_name in command or command.upper().startswith(("MULTI", "EXEC")):
                    commands.append(command)
    finally:
        await monitor_client.aclose()

    verbs = [c.split()[0].upper() for c in commands]
    start = verbs.index("MULTI")
    inside = commands[start + 1 : -1]
    assert verbs[-1] == "EXEC"
    assert any(c.upper().startswith("HSET") and ":model:fraud-lr:version:3" in c for c in inside), commands
    assert any(c.upper().startswith("HSET") and ":trainer:fraud-lr:checkpoint" in c for c in inside), commands
    assert any(c.upper().startswith("SET") and ":model:fraud-lr:current" in c for c in inside), commands

    # ... and both are readable and verify.
    loaded_cp = await store.load_checkpoint(MODEL)
    assert loaded_cp == checkpoint
    meta, state = unpack(loaded_cp, SIGNER)
    assert meta.version == 3 and state == {"state": "trainer", "offsets": {"t:0": 41}}
    assert await store.current_version(MODEL) == 3


async def test_save_and_load_checkpoint(store: ModelStore, app_name: str) -> None:
    assert await store.load_checkpoint(MODEL) is None
    cp1 = pack({"n": 1}, _meta(app_name, 1), SIGNER)
    cp2 = pack({"n": 2}, _meta(app_name, 2), SIGNER)
    await store.save_checkpoint(MODEL, cp1)
    assert await store.load_checkpoint(MODEL) == cp1
    await store.save_checkpoint(MODEL, cp2)  # overwritten, not merged into a mix
    loaded = await store.load_checkpoint(MODEL)
    assert loaded == cp2
    assert unpack(loaded, SIGNER)[1] == {"n": 2}


async def test_announcements_arrive_after_publish(
    store: ModelStore, raw: aioredis.Redis, app_name: str
) -> None:
    received: list[dict[str, Any]] = []

    async def collect() -> None:
        async for note in store.announcements():
            received.append(note)

    async with _running(collect()):
        await _wait_subscribers(raw, store.channel)
        await store.publish(MODEL, 1, _signed(app_name, 1))
        await store.publish(MODEL, 2, _signed(app_name, 2), make_current=False)  # not announced
        await store.set_current(MODEL, 2)
        await raw.publish(store.channel, b"not json")  # skipped, does not end the stream
        await store.publish(MODEL, 3, _signed(app_name, 3))
        await _until(lambda: len(received) >= 3, DEADLINE_S, "three announcements")

    assert received == [
        {"model": MODEL, "version": 1, "generation": 1},
        {"model": MODEL, "version": 2, "generation": 2},
        {"model": MODEL, "version": 3, "generation": 3},
    ]


async def test_announcements_are_per_app(
    redis_server: RedisServer | ExternalRedis, raw: aioredis.Redis, store: ModelStore, prefix: str, app_name: str
) -> None:
    other = ModelStore.from_url(redis_server.url, prefix, f"{app_name}-other")
    received: list[dict[str, Any]] = []

    async def collect() -> None:
        async for note in store.announcements():
            received.append(note)

    try:
        async with _running(collect()):
            await _wait_subscribers(raw, store.channel)
            await other.publish(MODEL, 7, _signed(f"{app_name}-other", 7))
            await store.publish(MODEL, 1, _signed(app_name, 1))
            await _until(lambda: len(received) >= 1, DEADLINE_S, "own announcement")
        assert received == [{"model": MODEL, "version": 1, "generation": 1}]
        assert await store.current_version(MODEL) == 1
        assert await other.current_version(MODEL) == 7
    finally:
        await other.close()


# --------------------------------------------------------------------------- VersionWatcher


async def test_watcher_refuses_tampered_blob_and_keeps_older_version(store: ModelStore, app_name: str) -> None:
    holder = ModelHolder()
    watcher = _watcher(store, holder)
    await store.publish(MODEL, 1, _signed(app_name, 1))
    await watcher.check()
    assert holder.version == 1

    good = _signed(app_name, 2)
    blob = bytearray(good.blob)
    blob[len(blob) // 2] ^= 0xFF
    await store.put_raw(MODEL, 2, {
        "meta": good.meta, "blob": bytes(blob), "kid": good.signature.key_id, "sig": good.signature.digest,
    })
    await store.set_current(MODEL, 2)
    await watcher.check()

    assert holder.version == 1
    assert holder.current is not None and holder.current.model == {"weights": [1, 1.5], "version": 1}
    assert "bad signature" in watcher.refused[2]

    # Refused versions are not retried, and a later valid version is served.
    await watcher.check()
    assert holder.swaps == 1
    await store.publish(MODEL, 3, _signed(app_name, 3))
    await watcher.check()
    assert holder.version == 3 and set(watcher.refused) == {2}


async def test_watcher_refuses_tampered_metadata(store: ModelStore, app_name: str) -> None:
    holder = ModelHolder()
    watcher = _watcher(store, holder)
    await store.publish(MODEL, 1, _signed(app_name, 1))
    await watcher.check()

    good = _signed(app_name, 2)
    meta = good.meta.replace(b'"examples_seen":20', b'"examples_seen":99999')
    assert meta != good.meta
    await store.put_raw(MODEL, 2, {"meta": meta, "blob": good.blob, "kid": "k1", "sig": good.signature.digest})
    await store.set_current(MODEL, 2)
    await watcher.check()
    assert holder.version == 1
    assert "bad signature" in watcher.refused[2]


async def test_watcher_refuses_unknown_key_id(store: ModelStore, app_name: str) -> None:
    holder = ModelHolder()
    watcher = _watcher(store, holder)
    await store.publish(MODEL, 1, _signed(app_name, 1))
    await watcher.check()

    rogue = Signer({"rogue": b"a-key-the-predictor-does-not-know"})
    await store.publish(MODEL, 2, _signed(app_name, 2, signer=rogue))
    await watcher.check()

    assert holder.version == 1
    assert "unknown signing key id" in watcher.refused[2] and "rogue" in watcher.refused[2]


async def test_watcher_refuses_valid_blob_replayed_under_another_version(store: ModelStore, app_name: str) -> None:
    holder = ModelHolder()
    watcher = _watcher(store, holder)
    v1 = _signed(app_name, 1)
    await store.publish(MODEL, 1, v1)
    await watcher.check()
    # A correctly signed v1 copied under version 5 must not be served as v5.
    await store.publish(MODEL, 5, v1)
    await watcher.check()
    assert holder.version == 1
    assert "another model or version" in watcher.refused[5]


async def test_watcher_refuses_other_river_version(store: ModelStore, app_name: str) -> None:
    holder = ModelHolder()
    watcher = _watcher(store, holder)
    await store.publish(MODEL, 1, _signed(app_name, 1, river_version="0.0.1"))
    await watcher.check()
    assert holder.version is None
    assert "river version mismatch" in watcher.refused[1]


async def test_watcher_rotation_window_accepts_old_key(store: ModelStore, app_name: str) -> None:
    old = Signer({"k0": b"the-previous-signing-key-000"})
    rotated = Signer({"k1": KEYS["k1"], "k0": b"the-previous-signing-key-000"})
    holder = ModelHolder()
    watcher = _watcher(store, holder, signer=rotated)
    await store.publish(MODEL, 1, _signed(app_name, 1, signer=old))
    await watcher.check()
    assert holder.version == 1 and not watcher.refused


async def test_watcher_poll_picks_up_version_without_announcement(
    store: ModelStore, raw: aioredis.Redis, prefix: str, app_name: str
) -> None:
    holder = ModelHolder()
    watcher = _watcher(store, holder, poll_s=0.05)
    # Versions are stored and the pointer is moved without any announcement.
    await store.publish(MODEL, 1, _signed(app_name, 1), make_current=False)
    await store.publish(MODEL, 2, _signed(app_name, 2), make_current=False)
    current_key = f"{prefix}:{app_name}:model:{MODEL}:current"

    await watcher.check()
    assert holder.version is None  # no pointer yet

    await raw.set(current_key, 2)
    await watcher.check()
    assert holder.version == 2

    async with _running(watcher.poll()) as task:
        await store.publish(MODEL, 4, _signed(app_name, 4), make_current=False)
        await raw.set(current_key, 4)
        await _until(lambda: holder.version == 4, DEADLINE_S, "poll to load v4")
        # An older pointer (rollback by hand) never takes the served version back.
        await raw.set(current_key, 1)
        await watcher.check()
        assert holder.version == 4
        assert not task.done()


async def test_watcher_listen_swaps_on_announcement(
    store: ModelStore, raw: aioredis.Redis, app_name: str
) -> None:
    holder = ModelHolder()
    watcher = _watcher(store, holder, poll_s=3600)  # polling cannot help here
    async with _running(watcher.listen()):
        await _wait_subscribers(raw, store.channel)
        await store.publish(MODEL, 1, _signed(app_name, 1))
        await _until(lambda: holder.version == 1, DEADLINE_S, "listen to load v1")
        await store.publish(MODEL, 2, _signed(app_name, 2))
        await _until(lambda: holder.version == 2, DEADLINE_S, "listen to load v2")
    assert holder.swaps == 2


async def test_watcher_loads_only_the_newest_of_the_versions_announced_meanwhile(store: ModelStore, app_name: str) -> None:
    holder = ModelHolder()
    watcher = _watcher(store, holder)
    await store.publish(MODEL, 1, _signed(app_name, 1))
    await watcher.check()
    # v2..v4 are announced while a (slow) load goes on: the announcements are taken in order,
    # but the first of them already loads what the pointer names, v4; the others load nothing.
    for v in (2, 3, 4):
        await store.publish(MODEL, v, _signed(app_name, v))
    await watcher.check()
    assert (holder.version, holder.swaps) == (4, 2)
    await watcher.check()
    await watcher.check()
    assert (holder.version, holder.swaps) == (4, 2)
    # Only what the pointer names is served: an announced version the pointer never named
    # (e.g. held back by the gate) is not...
    await store.publish(MODEL, 5, _signed(app_name, 5), make_current=False)
    await watcher.check()
    assert holder.version == 4
    # ...a refused pointer keeps the verified version serving...
    good = _signed(app_name, 7)
    await store.publish(MODEL, 6, _signed(app_name, 6), make_current=False)
    await store.put_raw(MODEL, 7, {"meta": good.meta, "blob": good.blob + b".", "kid": "k1", "sig": good.signature.digest})
    await store.set_current(MODEL, 7)
    await watcher.check()
    assert holder.version == 4 and "bad signature" in watcher.refused[7]
    # ...until the pointer moves on to a valid one.
    await store.move_current(MODEL, 6)
    await watcher.check()
    assert holder.version == 6 and holder.swaps == 3


async def test_watcher_refuses_version_hash_with_missing_fields(store: ModelStore, app_name: str) -> None:
    holder = ModelHolder()
    watcher = _watcher(store, holder)
    await store.publish(MODEL, 1, _signed(app_name, 1))
    await watcher.check()
    good = _signed(app_name, 2)
    await store.put_raw(MODEL, 2, {"meta": good.meta, "blob": good.blob})  # no kid, no sig
    await store.set_current(MODEL, 2)
    await watcher.check()  # must not raise
    assert holder.version == 1
    assert 2 in watcher.refused


async def test_watcher_poll_survives_version_hash_with_missing_fields(
    store: ModelStore, raw: aioredis.Redis, prefix: str, app_name: str
) -> None:
    holder = ModelHolder()
    watcher = _watcher(store, holder, poll_s=0.05)
    await store.publish(MODEL, 1, _signed(app_name, 1))
    current_key = f"{prefix}:{app_name}:model:{MODEL}:current"
    async with _running(watcher.poll()) as task:
        await _until(lambda: holder.version == 1, DEADLINE_S, "poll to load v1")
        await store.put_raw(MODEL, 2, {"blob": b"garbage"})
        await raw.set(current_key, 2)
        await store.publish(MODEL, 3, _signed(app_name, 3), make_current=False)
        await _until(lambda: task.done() or 2 in watcher.refused, DEADLINE_S, "v2 refused or poll task ended")
        await raw.set(current_key, 3)
        await _until(lambda: holder.version == 3 or task.done(), DEADLINE_S, "poll to load v3")
        assert not task.done(), f"poll task ended: {task.exception()!r}"
        assert holder.version == 3


# --------------------------------------------------------------------------- Redis down


@pytest.fixture(scope="module")
def stopped_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a private Redis that was started and stopped; its port stays reserved (bound, not
    listening, so connections are refused) so no other server can take it meanwhile."""
    with RedisServer(tmp_path_factory.mktemp("redis-down")) as server:
        url, port = server.url, server.port
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    with contextlib.suppress(OSError):  # taken already: the tests below will say so
        holder.bind(("127.0.0.1", port))
    try:
        yield url
    finally:
        holder.close()


@pytest.fixture
async def down_store(stopped_redis: str, app_name: str) -> AsyncIterator[ModelStore]:
    s = ModelStore.from_url(stopped_redis, "it", app_name)
    try:
        yield s
    finally:
        await s.close()


_DOWN_CALLS: dict[str, Callable[[ModelStore, str], Awaitable[Any]]] = {
    "publish": lambda s, app: s.publish(MODEL, 1, _signed(app, 1), checkpoint=_signed(app, 1)),
    "current_version": lambda s, app: s.current_version(MODEL),
    "load": lambda s, app: s.load(MODEL, 1),
    "save_checkpoint": lambda s, app: s.save_checkpoint(MODEL, _signed(app, 1)),
    "load_checkpoint": lambda s, app: s.load_checkpoint(MODEL),
}


@pytest.mark.parametrize("method", list(_DOWN_CALLS))
async def test_redis_down_raises_backend_unavailable(down_store: ModelStore, app_name: str, method: str) -> None:
    async with asyncio.timeout(DEADLINE_S):  # a hang guard only
        with pytest.raises(BackendUnavailable) as info:
            await _DOWN_CALLS[method](down_store, app_name)
    assert info.value.retriable
    # Connection refused, not a hang: a connect or read that timed out would be a redis TimeoutError.
    assert isinstance(info.value.__cause__, redis.exceptions.ConnectionError), repr(info.value.__cause__)


async def test_redis_down_set_current_raises_backend_unavailable(down_store: ModelStore) -> None:
    with pytest.raises(BackendUnavailable):
        await down_store.set_current(MODEL, 1)


async def test_redis_down_put_raw_raises_backend_unavailable(down_store: ModelStore, app_name: str) -> None:
    signed = _signed(app_name, 1)
    with pytest.raises(BackendUnavailable):
        await down_store.put_raw(MODEL, 1, {"meta": signed.meta, "blob": signed.blob, "kid": "k1", "sig": "x"})


async def _publish_when_back(store: ModelStore, version: int, signed: SignedBlob, timeout: float = DEADLINE_S) -> int:
    """Publish, retrying BackendUnavailable like the trainer does; return the failures seen.

    A pooled connection opened before a Redis restart is stale; the client is expected to
    retry it on a fresh connection rather than fail the call.
    """
    failures = 0
    deadline = time.monotonic() + timeout
    while True:
        try:
            await store.publish(MODEL, version, signed)
            return failures
        except BackendUnavailable:
            failures += 1
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.05)


async def test_store_recovers_after_private_redis_restart(tmp_path: Path, app_name: str) -> None:
    """Down: BackendUnavailable; back up: the same ModelStore object works again."""
    with RedisServer(tmp_path / "redis") as server:
        store = ModelStore.from_url(server.url, "it", app_name)
        try:
            await store.publish(MODEL, 1, _signed(app_name, 1))
            server.stop()
            with pytest.raises(BackendUnavailable):
                await store.current_version(MODEL)
            with pytest.raises(BackendUnavailable):
                await store.publish(MODEL, 2, _signed(app_name, 2))
            server.start()  # no persistence: the data is gone, the client reconnects
            assert await store.current_version(MODEL) is None
            await store.publish(MODEL, 2, _signed(app_name, 2))
            assert await store.current_version(MODEL) == 2

            # Restarted while idle: the stale pooled connection is retried, no call fails.
            server.stop()
            server.start()
            assert await _publish_when_back(store, 3, _signed(app_name, 3)) == 0
            assert await store.current_version(MODEL) == 3
        finally:
            await store.close()


async def test_watcher_listen_resubscribes_after_private_redis_restart(tmp_path: Path, app_name: str) -> None:
    """The listener survives the connection dropping and hears announcements again."""
    with RedisServer(tmp_path / "redis") as server:
        store = ModelStore.from_url(server.url, "it", app_name)
        raw_client = aioredis.from_url(server.url)
        holder = ModelHolder()
        watcher = _watcher(store, holder, poll_s=0.1)  # only listen() runs: poll() is not started
        try:
            async with _running(watcher.listen()) as task:
                await _wait_subscribers(raw_client, store.channel)
                await store.publish(MODEL, 1, _signed(app_name, 1))
                await _until(lambda: holder.version == 1, DEADLINE_S, "listen to load v1")

                server.stop()
                server.start()  # same port; no persistence, so v1 is gone from Redis
                await _wait_subscribers(raw_client, store.channel)
                await _publish_when_back(store, 2, _signed(app_name, 2))
                await _until(lambda: holder.version == 2, DEADLINE_S, "listen to load v2 after the restart")
                assert not task.done()
        finally:
            await raw_client.aclose()
            await store.close()


# --------------------------------------------------------------------------- lifecycle: gate, rollback


async def test_pointer_generations_and_rollback_followed_by_the_watcher(store: ModelStore, raw: aioredis.Redis, prefix: str, app_name: str) -> None:
    holder = ModelHolder()
    watcher = _watcher(store, holder)
    assert await store.pointer(MODEL) is None
    for v in (1, 2, 3):
        await store.publish(MODEL, v, _signed(app_name, v))
    pointer = await store.pointer(MODEL)
    assert pointer is not None and (pointer.version, pointer.generation) == (3, 3)
    await watcher.check()
    assert (holder.version, holder.generation) == (3, 3)

    moved = await store.move_current(MODEL, 2, expect=3)
    assert (moved.version, moved.generation) == (2, 4)
    await watcher.check()
    assert (holder.version, holder.generation) == (2, 4)
    assert holder.current is not None and holder.current.model == {"weights": [2, 2.5], "version": 2}

    # A stale pointer write (no new generation) never takes it back.
    await raw.set(f"{prefix}:{app_name}:model:{MODEL}:current", 1)
    await watcher.check()
    assert holder.version == 2

    from streamwise_core.contracts.store_types import PointerMoved
    with pytest.raises(PointerMoved):
        await store.move_current(MODEL, 2, expect=3)
    with pytest.raises(LookupError):
        await store.move_current(MODEL, 99)
    assert await store.latest_version(MODEL) == 3


async def test_publish_gated_holds_back_without_moving_the_pointer(store: ModelStore, app_name: str) -> None:
    seen: list[tuple[int | None, bytes | None]] = []

    def gate(current: int | None, meta: bytes | None) -> tuple[bool, dict[str, Any]]:
        seen.append((current, meta))
        return current is None, {"status": "served" if current is None else "held_back", "reason": "test"}

    assert (await store.publish_gated(MODEL, 1, _signed(app_name, 1), gate))[0] is True
    serve, record = await store.publish_gated(MODEL, 2, _signed(app_name, 2), gate)
    assert serve is False and record["status"] == "held_back"
    assert await store.current_version(MODEL) == 1
    assert await store.latest_version(MODEL) == 2
    assert await store.load_gate(MODEL, 2) == {"status": "held_back", "reason": "test"}
    assert seen[1][0] == 1 and seen[1][1] is not None and b'"version":1' in seen[1][1]
    # Republishing the current version (a retry) keeps it current without a new generation.
    before = await store.pointer(MODEL)
    assert (await store.publish_gated(MODEL, 1, _signed(app_name, 1), gate))[0] is True
    assert await store.pointer(MODEL) == before


async def test_a_gate_that_reads_nothing_is_given_no_served_metadata(store: ModelStore, app_name: str) -> None:
    seen: list[tuple[int | None, bytes | None]] = []

    def gate(current: int | None, meta: bytes | None) -> tuple[bool, dict[str, Any]]:
        seen.append((current, meta))
        return True, {"status": "served", "reason": "gate disabled"}

    for version in (1, 2):
        assert (await store.publish_gated(MODEL, version, _signed(app_name, version), gate, read_served=False))[0] is True
    assert seen == [(None, None), (1, None)]
    pointer = await store.pointer(MODEL)
    assert pointer is not None and pointer.version == 2
    assert await store.load_gate(MODEL, 2) == {"status": "served", "reason": "gate disabled"}
