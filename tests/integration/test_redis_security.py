"""Each service's Redis user on a real redis-server that speaks only TLS and only to ACL users
(``SecuredRedisServer``, rules from ``redis_access``): every ``ModelStore`` operation a service
uses works as that service's user; what belongs to another service, another application, or
nobody is refused; so are clients without credentials, with a wrong password, or in plaintext."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
import redis.exceptions

from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.adapters.redis_access import SERVICE_OPERATIONS, service_access
from streamwise_core.contracts.codec import ModelMeta, SignedBlob, pack, verify
from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_core.contracts.retention import Retention
from streamwise_core.contracts.signing import Signer
from streamwise_devstack.redis_secured import ADMIN, SecuredRedisServer

pytestmark = pytest.mark.integration

PREFIX = f"sec{uuid.uuid4().hex[:8]}"
APP = "fraud"
MODEL = "fraud-lr"
CHALLENGER = "fraud-tree"
SIGNER = Signer({"k1": b"redis-security-test-signing-key"})
DEADLINE_S = 30.0
"""How long a wait for something that happens in milliseconds may take before the test fails."""


def _signed(version: int, model: str = MODEL) -> SignedBlob:
    meta = ModelMeta(app=APP, model=model, version=version, task="binary", examples_seen=10 * version)
    return pack({"version": version}, meta, SIGNER)


async def _until(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {DEADLINE_S}s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredRedisServer]:
    with SecuredRedisServer(tmp_path_factory.mktemp("redis-secured")) as secured:
        for service in SERVICE_OPERATIONS:
            secured.grant(service, service, PREFIX, APP)
        yield secured


@contextlib.asynccontextmanager
async def _store(url: str, prefix: str = PREFIX, clock: Callable[[], float] = time.time) -> AsyncIterator[ModelStore]:
    store = ModelStore.from_url(url, prefix, APP, clock=clock)
    try:
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def _raw(url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    try:
        yield client
    finally:
        await client.aclose()


def _key(*parts: object) -> str:
    return ":".join([PREFIX, APP, *map(str, parts)])


async def test_every_service_does_its_own_work_as_its_own_user(server: SecuredRedisServer) -> None:
    done: dict[str, set[str]] = {service: set() for service in SERVICE_OPERATIONS}
    announced: list[dict[str, Any]] = []
    webapp_heard: list[dict[str, Any]] = []

    async def listen(store: ModelStore, into: list[dict[str, Any]]) -> None:
        async for note in store.announcements():
            into.append(note)

    ahead = [0.0]  # the trainer's clock goes an hour ahead before it prunes: every move is past the grace
    async with (_store(server.url_of("trainer"), clock=lambda: time.time() + ahead[0]) as trainer,
                _store(server.url_of("predictor")) as predictor,
                _store(server.url_of("webapp")) as webapp, _raw(server.url_of(ADMIN)) as admin):
        def did(service: str, *operations: str) -> None:
            done[service].update(operations)

        async def subscribers() -> bool:
            [(_, n)] = await admin.pubsub_numsub(trainer.channel)
            return int(n) >= 2

        listeners = [asyncio.ensure_future(listen(predictor, announced)), asyncio.ensure_future(listen(webapp, webapp_heard))]
        try:
            await _until(subscribers, "the predictor and the web app listening")
            did("predictor", "announcements")
            did("webapp", "announcements")

            # The trainer starts: its lease, the champion, the roster, an empty history.
            assert await trainer.claim_writer(MODEL, "t1", 30_000) == "t1"
            assert (await trainer.claim_champion(MODEL)).model == MODEL
            await trainer.set_roster([MODEL, CHALLENGER])
            assert await trainer.load_checkpoint(MODEL) is None
            assert await trainer.latest_version(MODEL) is None
            assert await trainer.index_versions(MODEL) == 0
            did("trainer", "claim_writer", "claim_champion", "set_roster", "load_checkpoint", "latest_version",
                "index_versions")

            # It publishes versions (with checkpoints), one through the gate, and prunes.
            checkpoint = pack({"offsets": {"t:0": 9}}, ModelMeta(app=APP, model=MODEL, version=1, task="binary", examples_seen=9), SIGNER)
            await trainer.publish(MODEL, 1, _signed(1), checkpoint=checkpoint)
            serve, record = await trainer.publish_gated(MODEL, 2, _signed(2), lambda current, meta: (
                current == 1 and meta is not None, {"status": "served"}))
            assert serve and record == {"status": "served"}
            await trainer.publish(MODEL, 3, _signed(3), make_current=False)
            await trainer.save_checkpoint(MODEL, checkpoint)
            assert await trainer.load_checkpoint(MODEL) == checkpoint
            assert await trainer.load_gate(MODEL, 2) == {"status": "served"}
            assert verify(await trainer.load(MODEL, 3), SIGNER).version == 3  # type: ignore[arg-type]
            assert await trainer.current_version(MODEL) == 2
            assert (await trainer.pointer(MODEL)).version == 2  # type: ignore[union-attr]
            assert await trainer.latest_version(MODEL) == 3
            assert await trainer.pinned(MODEL) == []
            await trainer.announce(MODEL, 2)
            await trainer.notify({"drift": MODEL})
            await trainer.publish(CHALLENGER, 1, _signed(1, CHALLENGER))
            did("trainer", "publish", "publish_gated", "save_checkpoint", "load_gate", "load", "current_version",
                "pointer", "pinned", "announce", "notify")

            # The predictor follows: the champion, the roster, the pointers, the blobs.
            assert (await predictor.champion()).model == MODEL  # type: ignore[union-attr]
            assert await predictor.roster() == sorted([MODEL, CHALLENGER])
            pointer = await predictor.pointer(MODEL)
            assert pointer is not None and pointer.version == 2
            loaded = await predictor.load(MODEL, pointer.version)
            assert loaded is not None and verify(loaded, SIGNER).version == 2
            did("predictor", "champion", "roster", "pointer", "load")

            # The web app shows the models and operators act: pin, roll back, promote, champion.
            assert (await webapp.champion()).model == MODEL  # type: ignore[union-attr]
            assert await webapp.current_version(MODEL) == 2
            assert (await webapp.pointer(MODEL)).version == 2  # type: ignore[union-attr]
            assert await webapp.stored_versions(MODEL) == [1, 2, 3]
            assert await webapp.load(MODEL, 1) is not None
            assert await webapp.pin(MODEL, 1)
            assert await webapp.pinned(MODEL) == [1]
            assert (await webapp.move_current(MODEL, 1, expect=2)).version == 1
            assert (await webapp.move_current(MODEL, 3, expect=1)).version == 3
            assert (await webapp.set_champion(CHALLENGER, expect=MODEL)).model == CHALLENGER
            await webapp.set_roster([CHALLENGER])
            assert await webapp.unpin(MODEL, 1)
            did("webapp", "champion", "current_version", "pointer", "stored_versions", "load", "pin", "pinned",
                "move_current", "set_champion", "set_roster", "unpin")

            # Back to the trainer: retention deletes old blobs, a retired model's checkpoint goes,
            # a challenger that won becomes champion, the lease is let go.
            ahead[0] = 3600.0
            assert await trainer.prune(MODEL, Retention(keep_last=1, rollback_window=0, grace_s=0)) == 2
            assert await admin.zrange(_key("model", MODEL, "versions"), 0, -1) == [b"3"]
            await trainer.forget_checkpoint(MODEL)
            assert await trainer.load_checkpoint(MODEL) is None
            assert (await trainer.champion()).model == CHALLENGER  # type: ignore[union-attr]
            assert (await trainer.set_champion(MODEL, expect=CHALLENGER)).model == MODEL
            await trainer.release_writer(MODEL, "t1")
            assert await trainer.claim_writer(MODEL, "t2", 30_000) == "t2"
            did("trainer", "prune", "forget_checkpoint", "champion", "set_champion", "release_writer")

            async def heard_all() -> bool:
                return any(n.get("champion") == MODEL for n in announced) and any(n.get("champion") == MODEL for n in webapp_heard)

            await _until(heard_all, "the announcements reaching the predictor and the web app")
            assert {"model": MODEL, "version": 3, "generation": 4} in announced  # the web app's promotion
            assert {"drift": MODEL} in announced
        finally:
            for task in listeners:
                task.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)
    for service, operations in SERVICE_OPERATIONS.items():
        assert done[service] == operations, f"{service}: exercised {sorted(done[service])}, granted for {sorted(operations)}"


async def _refused(call: Awaitable[Any]) -> str:
    """The store's error for a call Redis refuses for lack of permission."""
    with pytest.raises(BackendUnavailable) as caught:
        await call
    message = str(caught.value)
    assert "permission" in message.lower(), message
    return message


async def test_the_predictor_only_reads(server: SecuredRedisServer) -> None:
    async with _store(server.url_of("trainer")) as trainer:
        await trainer.publish(MODEL, 10, _signed(10))
        await trainer.save_checkpoint(MODEL, _signed(10))
    async with _store(server.url_of("predictor")) as predictor, _raw(server.url_of("predictor")) as raw, \
            _raw(server.url_of(ADMIN)) as admin:
        assert await predictor.load(MODEL, 10) is not None
        # Redis itself says none of the predictor's commands writes.
        commands = service_access("predictor").commands
        info = await admin.execute_command("COMMAND", "INFO", *commands)
        assert {name for name, about in info.items() if "write" in about["flags"]} == set()
        assert set(info) == commands
        # no blob, no pointer, no checkpoint, no pin, no champion written; nothing pruned; no announcement
        await _refused(predictor.publish(MODEL, 11, _signed(11)))
        await _refused(predictor.put_raw(MODEL, 10, {"blob": b"forged"}))
        await _refused(predictor.save_checkpoint(MODEL, _signed(11)))
        await _refused(predictor.move_current(MODEL, 10))
        await _refused(predictor.set_current(MODEL, 10))
        await _refused(predictor.pin(MODEL, 10))
        await _refused(predictor.set_champion(MODEL))
        await _refused(predictor.prune(MODEL, Retention(keep_last=1)))
        await _refused(predictor.notify({"model": MODEL, "version": 99}))
        # nor its own reads beyond what it serves: checkpoints, the trainer's lease
        await _refused(predictor.load_checkpoint(MODEL))
        await _refused(predictor.claim_writer(MODEL, "predictor", 1000))
        for command in (("HSET", _key("model", MODEL, "version", 10), "blob", "forged"), ("DEL", _key("model", MODEL, "version", 10)),
                        ("UNLINK", _key("roster")), ("FLUSHALL",), ("KEYS", "*"), ("CONFIG", "GET", "*")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                await raw.execute_command(*command)
        assert await admin.hget(_key("model", MODEL, "version", 10), "blob") == _signed(10).blob
        assert not await admin.exists(_key("model", MODEL, "version", 11))


async def test_the_web_app_moves_pointers_but_writes_no_blob(server: SecuredRedisServer) -> None:
    async with _store(server.url_of("trainer")) as trainer:
        await trainer.publish(MODEL, 20, _signed(20))
    async with _store(server.url_of("webapp")) as webapp, _raw(server.url_of("webapp")) as raw:
        await _refused(webapp.publish(MODEL, 21, _signed(21)))
        await _refused(webapp.put_raw(MODEL, 20, {"blob": b"forged"}))
        await _refused(webapp.save_checkpoint(MODEL, _signed(21)))
        await _refused(webapp.prune(MODEL, Retention(keep_last=1)))
        await _refused(webapp.claim_writer(MODEL, "webapp", 1000))
        # Commands it has, on keys it may only read: refused for the key.
        for command in (("ZADD", _key("model", MODEL, "versions"), 21, 21), ("SET", _key("model", MODEL, "version", 20), "x")):
            with pytest.raises(redis.exceptions.NoPermissionError, match="key"):
                await raw.execute_command(*command)


async def test_no_user_reaches_another_application(server: SecuredRedisServer) -> None:
    for service in SERVICE_OPERATIONS:
        async with _store(server.url_of(service), prefix=f"other{PREFIX}") as elsewhere:
            await _refused(elsewhere.pointer(MODEL))
            await _refused(elsewhere.champion())
    async with _raw(server.url_of("trainer")) as raw:
        with pytest.raises(redis.exceptions.NoPermissionError):
            await raw.get("unrelated-key")
        with pytest.raises(redis.exceptions.NoPermissionError):
            await raw.publish(f"other{PREFIX}:{APP}:announcements", "{}")


@pytest.mark.parametrize("who", ["no credentials", "wrong password", "another service's password", "the default user"])
async def test_clients_without_their_credentials_are_refused(server: SecuredRedisServer, who: str) -> None:
    url = {
        "no credentials": server.url_of(None),
        "wrong password": server.url_of("predictor", password="not-the-password"),
        "another service's password": server.url_of("predictor", password=server.passwords["trainer"]),
        "the default user": server.url_of("default", password=""),
    }[who]
    async with _store(url) as store:
        with pytest.raises(BackendUnavailable) as caught:
            await store.pointer(MODEL)
    assert isinstance(caught.value.__cause__, redis.exceptions.AuthenticationError), repr(caught.value.__cause__)


async def test_plaintext_and_unverified_clients_are_refused(server: SecuredRedisServer) -> None:
    async with _store(server.url_of("trainer", tls=False)) as plaintext:
        with pytest.raises(BackendUnavailable) as caught:
            await plaintext.pointer(MODEL)
    assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError)
    # A client that does not trust the test CA refuses the server.
    untrusting = server.url_of("trainer").split("?")[0]
    async with _store(untrusting) as store:
        with pytest.raises(BackendUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await store.pointer(MODEL)


def test_client_certificates_from_the_url(tmp_path: Path) -> None:
    """``ssl_certfile``/``ssl_keyfile``/``ssl_cert_reqs`` work as ``STREAMWISE_REDIS_URL`` query
    parameters: a server that demands a client certificate accepts the URL with one only."""
    with SecuredRedisServer(tmp_path / "redis", client_certificates=True) as mutual:
        mutual.grant("predictor", "predictor", PREFIX, APP)

        async def pointer(url: str) -> Any:
            async with _store(url) as store:
                return await store.pointer(MODEL)

        assert asyncio.run(pointer(mutual.url_of("predictor", ssl_cert_reqs="required"))) is None
        without = mutual.url_of("predictor").split("&ssl_certfile=")[0]
        with pytest.raises(BackendUnavailable) as caught:
            asyncio.run(pointer(without))
        assert isinstance(caught.value.__cause__, (redis.exceptions.ConnectionError, ssl.SSLError, OSError))
