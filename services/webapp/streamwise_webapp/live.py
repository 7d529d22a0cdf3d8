"""The live view of the current version: one poller and one pub/sub listener shared by all clients."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from datetime import datetime

from redis.exceptions import RedisError

from streamwise_core.contracts.codec import verify
from streamwise_core.contracts.errors import BackendUnavailable, BlobRefused, StreamwiseError
from streamwise_core.contracts.events import utcnow
from streamwise_core.contracts.signing import Signer
from streamwise_core.contracts.store_ports import Announcements, VersionStore
from streamwise_core.contracts.store_types import serving

from .views import CurrentModel, LiveState, LiveStatus, current_view, live_state, state_key

log = logging.getLogger(__name__)

LISTEN_BACKOFF_S = (0.5, 30.0)
"""First and longest pause before subscribing again after the pub/sub connection drops."""


class VersionUnreadable(StreamwiseError):
    """The current pointer names a version whose blob is missing or fails verification."""


class CurrentReader:
    """Reads the current version's metadata, verified; blobs are fetched once per version."""

    def __init__(self, store: VersionStore, signer: Signer, model: str) -> None:
        self._store = store
        self._signer = signer
        self._model = model
        self._cached: CurrentModel | None = None
        self._refused: dict[tuple[str, int], str] = {}
        """Versions that failed verification; a signed blob never changes, so they are not re-read."""

    async def read(self) -> CurrentModel | None:
        """The champion's current version (the configured model's before a champion is set);
        ``None`` until a first version is published; raises ``BackendUnavailable``, ``VersionUnreadable``."""
        model = serving(await self._store.champion(), self._model).model
        version = await self._store.current_version(model)
        if version is None:
            return None
        cached = self._cached
        if cached is not None and (cached.model, cached.version) == (model, version):
            return cached
        if (model, version) in self._refused:
            raise VersionUnreadable(self._refused[(model, version)])
        signed = await self._store.load(model, version)
        if signed is None:
            raise VersionUnreadable(f"{model} v{version} is current but its blob is missing")
        try:
            meta = verify(signed, self._signer)
        except BlobRefused as exc:
            raise self._refuse(model, version, f"refused: {exc}") from exc
        if meta.model != model or meta.version != version:
            raise self._refuse(model, version, f"metadata names {meta.model} v{meta.version}")
        self._cached = current_view(meta)
        return self._cached

    def _refuse(self, model: str, version: int, reason: str) -> VersionUnreadable:
        message = f"{model} v{version} {reason}"
        self._refused[(model, version)] = message
        return VersionUnreadable(message)


class LiveModel:
    """Keeps the latest state in memory and wakes every subscribed stream when it changes."""

    def __init__(
        self, reader: CurrentReader, store: Announcements, model: str, poll_interval_s: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._reader = reader
        self._store = store
        self._model = model
        self._poll_interval_s = poll_interval_s
        self._clock = clock
        self._state: LiveState | None = None
        self._problem: str | None = None
        self._lock = asyncio.Lock()
        self._waiters: set[asyncio.Event] = set()
        self._listeners: list[Callable[[LiveState], None]] = []

    def add_listener(self, listener: Callable[[LiveState], None]) -> None:
        """Call ``listener`` (without blocking) with every state that differs from the one before."""
        self._listeners.append(listener)

    @property
    def state(self) -> LiveState | None:
        return self._state

    @property
    def subscribers(self) -> int:
        """Open live streams."""
        return len(self._waiters)

    async def refresh(self) -> LiveState:
        """Read the current version now; wake subscribers if status or version changed."""
        async with self._lock:
            previous = self._state
            try:
                current = await self._reader.read()
                status = LiveStatus.CURRENT if current else LiveStatus.WAITING
                self._problem = None
            except (BackendUnavailable, VersionUnreadable) as exc:
                # Keep showing the last version we know of, flagged as stale.
                current = previous.current if previous else None
                status = LiveStatus.UNAVAILABLE
                if str(exc) != self._problem:
                    log.warning("current version unreadable: %s", exc)
                    self._problem = str(exc)
            state = live_state(status, current, self._clock())
            self._state = state
            if previous is None or state_key(previous) != state_key(state):
                for waiter in self._waiters:
                    waiter.set()
                for listener in self._listeners:
                    try:
                        listener(state)
                    except Exception:  # one broken listener must not stop the others
                        log.exception("live state listener failed")
            return state

    async def run(self) -> None:
        """Poll and listen until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._poll())
            group.create_task(self._listen())

    async def _poll(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a bug here must not stop the page from updating
                log.exception("refreshing the current version failed")
            await asyncio.sleep(self._poll_interval_s)

    async def _listen(self) -> None:
        backoff = LISTEN_BACKOFF_S[0]
        while True:
            try:
                async for note in self._store.announcements():
                    backoff = LISTEN_BACKOFF_S[0]
                    if "champion" in note or isinstance(note.get("version"), int):
                        await self.refresh()
            except (RedisError, OSError, BackendUnavailable) as exc:
                log.debug("announcements lost (%s); polling covers the gap", exc)
            except Exception:
                log.exception("announcement listener failed; polling covers the gap")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, LISTEN_BACKOFF_S[1])

    async def updates(self, keepalive_s: float) -> AsyncGenerator[LiveState | None, None]:
        """The state now, then each change; ``None`` after ``keepalive_s`` of silence."""
        wake = asyncio.Event()
        self._waiters.add(wake)
        try:
            sent: LiveState | None = None
            while True:
                state = self._state or await self.refresh()
                if sent is None or state_key(sent) != state_key(state):
                    sent = state
                    yield state
                try:
                    await asyncio.wait_for(wake.wait(), keepalive_s)
                    wake.clear()
                except TimeoutError:
                    yield None
        finally:
            self._waiters.discard(wake)
