"""Redis adapter: signed model blobs, the current-version pointer and swap announcements."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamwise_core.contracts.codec import SignedBlob
from streamwise_core.contracts.errors import BackendUnavailable, BlobRefused
from streamwise_core.contracts.retention import Retention
from streamwise_core.contracts.signing import Signature
from streamwise_core.contracts.store_types import Champion, GateCallback, Pointer, PointerMoved

_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if (not holder) or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return holder
"""
_PRUNE = """
-- KEYS: versions index, served index, pinned set, current pointer
-- ARGV: version key prefix, keep_last, rollback_window, served-since cutoff (ms), most deletions
local versions, served, pinned, current = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, keep_last, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local cutoff, most = ARGV[4], tonumber(ARGV[5])
-- the newest keep_last versions are never candidates
local newest = redis.call('ZREVRANGE', versions, keep_last - 1, keep_last - 1, 'WITHSCORES')
if #newest == 0 then return 0 end
local keep = {}
local pointer = redis.call('GET', current)
if pointer then keep[pointer] = true end
if window > 0 then
  for _, v in ipairs(redis.call('ZREVRANGE', served, 0, window - 1)) do keep[v] = true end
end
for _, v in ipairs(redis.call('ZRANGEBYSCORE', served, cutoff, '+inf')) do keep[v] = true end
-- and the one(s) current when the grace period began
local before = redis.call('ZREVRANGEBYSCORE', served, '(' .. cutoff, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
if #before > 0 then
  for _, v in ipairs(redis.call('ZRANGEBYSCORE', served, before[2], before[2])) do keep[v] = true end
end
for _, v in ipairs(redis.call('SMEMBERS', pinned)) do keep[v] = true end
local deleted = 0
for _, v in ipairs(redis.call('ZRANGEBYSCORE', versions, '-inf', '(' .. newest[2], 'LIMIT', 0, most)) do
  if not keep[v] then
    redis.call('UNLINK', prefix .. v)
    redis.call('ZREM', versions, v)
    redis.call('ZREM', served, v)
    deleted = deleted + 1
  end
end
return deleted
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ModelStore:
    """Keys live under ``{prefix}:{app}``; every write of a version is one transaction.

    Besides each version's hash, a model has an index of its stored versions (a sorted set), the
    versions made current with when (another), and the versions pinned by operators (a set):
    what ``prune`` reads to delete old blobs atomically.
    """

    def __init__(self, client: aioredis.Redis, prefix: str, app: str, *, clock: Callable[[], float] = time.time) -> None:
        self._r = client
        self._base = f"{prefix}:{app}"
        self.channel = f"{self._base}:announcements"
        self._clock = clock
        """Wall time, for when versions were made current (compared across services: the grace
        period is minutes, far above the skew of synchronised clocks)."""

    @classmethod
    def from_url(cls, url: str, prefix: str, app: str, *, clock: Callable[[], float] = time.time) -> ModelStore:
        # A restarted Redis leaves stale pooled connections: retry once on a fresh one.
        client = aioredis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=10,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        return cls(client, prefix, app, clock=clock)

    async def close(self) -> None:
        await self._r.aclose()

    def _version_key(self, model: str, version: int) -> str:
        return f"{self._base}:model:{model}:version:{version}"

    def _current_key(self, model: str) -> str:
        return f"{self._base}:model:{model}:current"

    def _checkpoint_key(self, model: str) -> str:
        return f"{self._base}:trainer:{model}:checkpoint"

    def _generation_key(self, model: str) -> str:
        return f"{self._base}:model:{model}:current:generation"

    def _latest_key(self, model: str) -> str:
        return f"{self._base}:model:{model}:latest"

    def _versions_key(self, model: str) -> str:
        return f"{self._base}:model:{model}:versions"

    def _served_key(self, model: str) -> str:
        return f"{self._base}:model:{model}:served"

    def _pinned_key(self, model: str) -> str:
        return f"{self._base}:model:{model}:pinned"

    def _writer_key(self, model: str) -> str:
        return f"{self._base}:trainer:{model}:writer"

    @property
    def _champion_key(self) -> str:
        return f"{self._base}:champion"

    @property
    def _roster_key(self) -> str:
        return f"{self._base}:roster"

    async def champion(self) -> Champion | None:
        try:
            name, generation = await self._r.mget(self._champion_key, f"{self._champion_key}:generation")
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc
        if name is None:
            return None
        return Champion(name.decode(), int(generation) if generation is not None else 0)  # type: ignore[union-attr]  # bytes: no decode_responses

    async def claim_champion(self, model: str) -> Champion:
        """Make ``model`` the champion unless one is set already; return the champion."""
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.set(self._champion_key, model, nx=True)
                pipe.setnx(f"{self._champion_key}:generation", 1)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc
        champion = await self.champion()
        assert champion is not None
        return champion

    async def set_champion(self, model: str, *, expect: str | None = None) -> Champion:
        """Make ``model`` the champion with a new generation, atomically, and announce it;
        ``expect``: fail with ``PointerMoved`` unless the champion is still that model."""
        key = self._champion_key

        async def write(pipe: Any) -> None:
            raw = await pipe.get(key)
            if expect is not None and (raw.decode() if raw is not None else None) != expect:
                raise PointerMoved(f"the champion is {raw and raw.decode()}, not {expect}")
            pipe.multi()
            pipe.set(key, model)
            pipe.incr(f"{key}:generation")

        _, results = await self._optimistic((key,), write)
        champion = Champion(model, int(results[-1]))
        try:
            await self._r.publish(self.channel, json.dumps({"champion": model, "champion_generation": champion.generation}))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc
        return champion

    async def set_roster(self, models: list[str]) -> None:
        """The models learning now (champion and challengers), for predictors that shadow them."""
        try:
            await self._r.set(self._roster_key, json.dumps(sorted(models)))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def roster(self) -> list[str]:
        try:
            raw = await self._r.get(self._roster_key)
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc
        try:
            names = json.loads(raw) if raw is not None else []
        except ValueError:
            return []
        return [n for n in names if isinstance(n, str)]

    async def claim_writer(self, model: str, holder: str, ttl_ms: int) -> str:
        """Take or renew the single-writer lease of ``model``; return who holds it now
        (``holder`` itself when the claim succeeded)."""
        try:
            result = await self._r.eval(_CLAIM, 1, self._writer_key(model), holder, ttl_ms)
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc
        return result.decode() if isinstance(result, bytes) else str(result)

    async def release_writer(self, model: str, holder: str) -> None:
        """Give the lease up, if ``holder`` still has it."""
        try:
            await self._r.eval(_RELEASE, 1, self._writer_key(model), holder)
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    @staticmethod
    def _fields(signed: SignedBlob) -> dict[str, Any]:
        return {
            "meta": signed.meta,
            "blob": signed.blob,
            "kid": signed.signature.key_id,
            "sig": signed.signature.digest,
        }

    @staticmethod
    def _signed(fields: dict[bytes, bytes]) -> SignedBlob | None:
        if not fields:
            return None
        if not {b"meta", b"blob", b"kid", b"sig"} <= fields.keys():
            raise BlobRefused("incomplete version entry")
        return SignedBlob(
            meta=fields[b"meta"],
            blob=fields[b"blob"],
            signature=Signature(fields[b"kid"].decode(), fields[b"sig"].decode()),
        )

    async def publish(
        self, model: str, version: int, signed: SignedBlob, *,
        checkpoint: SignedBlob | None = None, make_current: bool = True,
    ) -> None:
        """Store a version (and the trainer checkpoint that goes with it) in one transaction,
        point ``current`` at it, and announce it."""
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.hset(self._version_key(model, version), mapping=self._fields(signed))  # type: ignore[arg-type]  # redis-py's stubs type values narrower than it takes
                pipe.zadd(self._versions_key(model), {str(version): version})
                if checkpoint is not None:
                    pipe.hset(self._checkpoint_key(model), mapping=self._fields(checkpoint))  # type: ignore[arg-type]  # redis-py's stubs type values narrower than it takes
                pipe.set(self._latest_key(model), version)
                if make_current:
                    self._move_pointer(pipe, model, version)
                results = await pipe.execute()
            if make_current:
                await self.announce(model, version, int(results[-1]))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def publish_gated(
        self, model: str, version: int, signed: SignedBlob, gate: GateCallback, *,
        checkpoint: SignedBlob | None = None, read_served: bool = True,
    ) -> tuple[bool, dict[str, Any]]:
        """Like ``publish``, but ``gate`` decides, against the version current at that moment,
        whether the pointer moves. The decision and the write are one optimistic transaction:
        a rollback or promotion in between makes it decide again. The decision is stored in
        the version's ``gate`` field. Returns it; publishing the same version again is harmless
        (a version that is already current stays so without a new generation).
        ``read_served=False``: the gate decides without the served version's metadata (a
        disabled gate), so it is given ``None`` and a round trip is saved."""
        current_key = self._current_key(model)

        async def write(pipe: Any) -> tuple[bool, bool, dict[str, Any]]:
            raw = await pipe.get(current_key)
            current = int(raw) if raw is not None else None
            already = current == version
            served_meta = None
            if current is not None and not already and read_served:
                served_meta = await pipe.hget(self._version_key(model, current), "meta")
            serve, record = (True, {"status": "served", "reason": "already current"}) if already \
                else gate(current, served_meta)
            pipe.multi()
            pipe.hset(self._version_key(model, version), mapping={
                **self._fields(signed), "gate": json.dumps(record, default=str),
            })
            pipe.zadd(self._versions_key(model), {str(version): version})
            if checkpoint is not None:
                pipe.hset(self._checkpoint_key(model), mapping=self._fields(checkpoint))
            pipe.set(self._latest_key(model), version)
            moved = serve and not already
            if moved:
                self._move_pointer(pipe, model, version)
            return moved, serve, record

        (moved, serve, record), results = await self._optimistic((current_key,), write)
        if moved:
            try:
                await self.announce(model, version, int(results[-1]))
            except (RedisError, OSError) as exc:
                raise BackendUnavailable(f"redis: {exc}") from exc
        return serve, record

    def _move_pointer(self, pipe: Any, model: str, version: int) -> None:
        """Queue the pointer move, when it happened and its new generation (the last reply is
        the generation)."""
        pipe.zadd(self._served_key(model), {str(version): int(self._clock() * 1000)})
        pipe.set(self._current_key(model), version)
        pipe.incr(self._generation_key(model))

    async def _optimistic(self, watch: tuple[str, ...], write: Any) -> tuple[Any, list[Any]]:
        """Run ``write(pipe)`` (reads, then ``multi()`` and queued writes) under WATCH of
        ``watch`` until no watched key changed in between; its result and the replies."""
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(*watch)
                        outcome = await write(pipe)
                        return outcome, await pipe.execute()
                    except WatchError:
                        continue
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def announce(self, model: str, version: int, generation: int | None = None) -> None:
        note: dict[str, Any] = {"model": model, "version": version}
        if generation is not None:
            note["generation"] = generation
        await self._r.publish(self.channel, json.dumps(note))

    async def notify(self, note: dict[str, Any]) -> None:
        """Announce something other than a version (a drift) on the same channel."""
        try:
            await self._r.publish(self.channel, json.dumps(note, default=str))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def pointer(self, model: str) -> Pointer | None:
        """The current version and its generation, read together."""
        try:
            version, generation = await self._r.mget(self._current_key(model), self._generation_key(model))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc
        if version is None:
            return None
        return Pointer(int(version), int(generation) if generation is not None else 0)

    async def move_current(self, model: str, version: int, *, expect: int | None = None) -> Pointer:
        """Point ``current`` at a stored ``version`` (promotion, rollback) with a new
        generation, atomically, and announce it. ``expect``: fail with ``PointerMoved`` unless
        the current version is still that one. ``LookupError`` if the version is not stored."""
        current_key, version_key = self._current_key(model), self._version_key(model, version)

        async def write(pipe: Any) -> None:
            if not await pipe.exists(version_key):
                raise LookupError(f"{model} v{version} is not stored")
            raw = await pipe.get(current_key)
            if expect is not None and (int(raw) if raw is not None else None) != expect:
                raise PointerMoved(f"{model} current is v{raw and int(raw)}, not v{expect}")
            pipe.multi()
            self._move_pointer(pipe, model, version)

        _, results = await self._optimistic((current_key, version_key), write)
        pointer = Pointer(version, int(results[-1]))
        try:
            await self.announce(model, version, pointer.generation)
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc
        return pointer

    async def latest_version(self, model: str) -> int | None:
        """The highest version stored (served or held back); new versions are numbered above."""
        try:
            latest, current = await self._r.mget(self._latest_key(model), self._current_key(model))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc
        values = [int(v) for v in (latest, current) if v is not None]
        return max(values) if values else None

    async def load_gate(self, model: str, version: int) -> dict[str, Any] | None:
        """The gate's decision stored with a version, if any."""
        try:
            raw = await self._r.hget(self._version_key(model, version), "gate")
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc
        try:
            return json.loads(raw) if raw is not None else None
        except ValueError:
            return None

    async def current_version(self, model: str) -> int | None:
        try:
            value = await self._r.get(self._current_key(model))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc
        return int(value) if value is not None else None

    async def set_current(self, model: str, version: int) -> None:
        """Point ``current`` at ``version`` as is (a new generation; the version is not checked)."""
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                self._move_pointer(pipe, model, version)
                *_, generation = await pipe.execute()
            await self.announce(model, version, int(generation))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def load(self, model: str, version: int) -> SignedBlob | None:
        try:
            return self._signed(await self._r.hgetall(self._version_key(model, version)))  # type: ignore[arg-type]  # bytes keys and values: no decode_responses
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def put_raw(self, model: str, version: int, fields: dict[str, Any]) -> None:
        """Write version fields as given (operators' repair tool, and tamper tests)."""
        try:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.hset(self._version_key(model, version), mapping=fields)  # type: ignore[arg-type]  # redis-py's stubs type values narrower than it takes
                pipe.zadd(self._versions_key(model), {str(version): version})
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def pin(self, model: str, version: int) -> bool:
        """Keep ``version``'s blob whatever the retention; ``False`` if it was pinned already,
        ``LookupError`` if it is not stored."""
        version_key = self._version_key(model, version)

        async def write(pipe: Any) -> None:
            if not await pipe.exists(version_key):
                raise LookupError(f"{model} v{version} is not stored")
            pipe.multi()
            pipe.sadd(self._pinned_key(model), version)

        _, results = await self._optimistic((version_key,), write)
        return bool(results[-1])

    async def unpin(self, model: str, version: int) -> bool:
        """Let retention delete ``version`` again; ``False`` if it was not pinned."""
        try:
            return bool(await self._r.srem(self._pinned_key(model), version))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def pinned(self, model: str) -> list[int]:
        try:
            members = await self._r.smembers(self._pinned_key(model))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc
        return sorted(int(m) for m in members)

    async def stored_versions(self, model: str) -> list[int]:
        """The versions whose blobs are stored, oldest first."""
        try:
            members = await self._r.zrange(self._versions_key(model), 0, -1)
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc
        return [int(m) for m in members]  # type: ignore[arg-type]  # members are bytes

    async def index_versions(self, model: str) -> int:
        """Add the version hashes stored before there was an index (found with SCAN) to it, so
        retention reaches them; returns how many were added."""
        pattern = self._version_key(model, 0)[:-1] + "*"
        found: dict[str, int] = {}
        try:
            async for key in self._r.scan_iter(match=pattern, count=1000):
                tail = key.decode().rsplit(":", 1)[-1]
                if tail.isdigit():
                    found[tail] = int(tail)
            if not found:
                return 0
            return int(await self._r.zadd(self._versions_key(model), found, nx=True))  # type: ignore[arg-type]  # ZADD NX answers a count
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def prune(self, model: str, retention: Retention) -> int:
        """Delete the blobs ``retention`` does not keep, in one atomic step (no pointer can move
        to a version while it is being deleted); returns how many were deleted."""
        cutoff_ms = int((self._clock() - retention.grace_s) * 1000)
        keys = (self._versions_key(model), self._served_key(model), self._pinned_key(model), self._current_key(model))
        try:
            deleted = await self._r.eval(
                _PRUNE, len(keys), *keys, self._version_key(model, 0)[:-1],
                max(retention.keep_last, 1), max(retention.rollback_window, 0), cutoff_ms, retention.most_per_prune,
            )
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc
        return int(deleted)

    async def forget_checkpoint(self, model: str) -> None:
        """Delete ``model``'s checkpoint (a retired model no trainer resumes)."""
        try:
            await self._r.unlink(self._checkpoint_key(model))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def save_checkpoint(self, model: str, signed: SignedBlob) -> None:
        try:
            await self._r.hset(self._checkpoint_key(model), mapping=self._fields(signed))  # type: ignore[arg-type]  # redis-py's stubs type values narrower than it takes
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def load_checkpoint(self, model: str) -> SignedBlob | None:
        try:
            return self._signed(await self._r.hgetall(self._checkpoint_key(model)))  # type: ignore[arg-type]  # bytes keys and values: no decode_responses
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def announcements(self) -> AsyncIterator[dict[str, Any]]:
        """Yield announcements as they arrive; ends when the connection drops."""
        pubsub = self._r.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.channel)
        try:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    try:
                        yield json.loads(message["data"])
                    except (ValueError, TypeError):
                        continue
        finally:
            await pubsub.aclose()
