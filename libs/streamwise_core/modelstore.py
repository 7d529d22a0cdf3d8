"""Redis adapter: signed model blobs, the current-version pointer and swap announcements."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .codec import SignedBlob
from .errors import BackendUnavailable, BlobRefused
from .signing import Signature


class ModelStore:
    """Keys live under ``{prefix}:{app}``; every write of a version is one transaction."""

    def __init__(self, client: aioredis.Redis, prefix: str, app: str) -> None:
        self._r = client
        self._base = f"{prefix}:{app}"
        self.channel = f"{self._base}:announcements"

    @classmethod
    def from_url(cls, url: str, prefix: str, app: str) -> ModelStore:
        # A restarted Redis leaves stale pooled connections: retry once on a fresh one.
        client = aioredis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=10,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        return cls(client, prefix, app)

    async def close(self) -> None:
        await self._r.aclose()

    def _version_key(self, model: str, version: int) -> str:
        return f"{self._base}:model:{model}:version:{version}"

    def _current_key(self, model: str) -> str:
        return f"{self._base}:model:{model}:current"

    def _checkpoint_key(self, model: str) -> str:
        return f"{self._base}:trainer:{model}:checkpoint"

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
                pipe.hset(self._version_key(model, version), mapping=self._fields(signed))
                if checkpoint is not None:
                    pipe.hset(self._checkpoint_key(model), mapping=self._fields(checkpoint))
                if make_current:
                    pipe.set(self._current_key(model), version)
                await pipe.execute()
            if make_current:
                await self.announce(model, version)
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def announce(self, model: str, version: int) -> None:
        await self._r.publish(self.channel, json.dumps({"model": model, "version": version}))

    async def current_version(self, model: str) -> int | None:
        try:
            value = await self._r.get(self._current_key(model))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc
        return int(value) if value is not None else None

    async def set_current(self, model: str, version: int) -> None:
        try:
            await self._r.set(self._current_key(model), version)
            await self.announce(model, version)
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def load(self, model: str, version: int) -> SignedBlob | None:
        try:
            return self._signed(await self._r.hgetall(self._version_key(model, version)))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def put_raw(self, model: str, version: int, fields: dict[str, Any]) -> None:
        """Write version fields as given (operators' repair tool, and tamper tests)."""
        try:
            await self._r.hset(self._version_key(model, version), mapping=fields)
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def save_checkpoint(self, model: str, signed: SignedBlob) -> None:
        try:
            await self._r.hset(self._checkpoint_key(model), mapping=self._fields(signed))
        except (RedisError, OSError) as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    async def load_checkpoint(self, model: str) -> SignedBlob | None:
        try:
            return self._signed(await self._r.hgetall(self._checkpoint_key(model)))
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
