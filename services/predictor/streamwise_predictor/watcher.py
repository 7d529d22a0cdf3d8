"""Follows the model store: loads each announced version off the serving path and swaps it in."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from streamwise_core.contracts.codec import ModelMeta
from streamwise_core.contracts.errors import BackendUnavailable, BlobRefused
from streamwise_core.contracts.signing import Signer
from streamwise_core.contracts.store_ports import FollowedVersions
from streamwise_core.contracts.store_types import serving

from .holder import ModelHolder, ServedModel
from .loading import ModelLoader

log = logging.getLogger(__name__)


class VersionWatcher:
    """Listens to pub/sub and polls the current pointer; refused blobs are never retried."""

    def __init__(
        self, store: FollowedVersions, signer: Signer, holder: ModelHolder, model: str, poll_interval_s: float,
        *, loader: ModelLoader | None = None,
    ) -> None:
        self._store = store
        self._signer = signer
        self._holder = holder
        self._model = model
        self._poll_interval_s = poll_interval_s
        self._lock = asyncio.Lock()
        """One load at a time: a large model's load must not share the CPU with another's."""
        self._loader = loader or ModelLoader()
        self._load_lock = asyncio.Lock()
        """Loads of the champion and of shadowed challengers never share the CPU."""
        self.refused: dict[int, str] = {}
        """Versions of the configured model refused, and why (never retried)."""
        self.refused_elsewhere: dict[str, dict[int, str]] = {}
        """The same for other models (challengers that became champion)."""
        self.missing = 0
        """Versions a pointer named that were gone when fetched (retention must never allow it)."""

    async def target(self) -> tuple[str, int]:
        """The model to serve (the champion, or the configured one before any champion is set)
        and the generation of that choice."""
        served = serving(await self._store.champion(), self._model)
        return served.model, served.generation

    def is_refused(self, model: str, version: int) -> bool:
        refused = self.refused if model == self._model else self.refused_elsewhere.get(model, {})
        return version in refused

    def _refuse(self, model: str, version: int, reason: str) -> None:
        if model == self._model:
            self.refused[version] = reason
        else:
            self.refused_elsewhere.setdefault(model, {})[version] = reason
        log.error("refused %s v%s: %s; still serving v%s", model, version, reason, self._holder.version)

    async def check(self) -> None:
        """Load what the champion's current pointer names if it is newer than what is served: a
        new champion, a newer generation (a promotion or rollback moves to any stored version),
        or a higher version within the same generation. An announcement only triggers a look at
        the pointer, so versions announced while another one loaded are skipped once the pointer
        has moved on, and a version the pointer never named (held back by the gate) is never served."""
        async with self._lock:
            model, champion_generation = await self.target()
            pointer = await self._store.pointer(model)
            if pointer is None or self.is_refused(model, pointer.version):
                return
            found = await self.load(model, pointer.version, pointer.generation, champion_generation)
            if found is None:
                return
            previous = self._holder.current
            if self._holder.offer(found):
                if previous is not None and previous.model is not found.model:
                    self._loader.retired(previous.model)
                if (took := self._loader.last).get("total", 0) > 0.1:
                    log.info("loaded %s v%s in %s", model, found.meta.version, ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in took.items()))
                log.info("now serving %s v%s (generation %s, champion generation %s)", model, found.meta.version, pointer.generation, champion_generation)

    async def load(self, model: str, version: int, generation: int, champion_generation: int) -> ServedModel | None:
        """``model`` ``version`` verified and unpickled off the event loop, unless it is older
        than what is served (then ``None``); the served object itself when only the generation is new."""
        candidate_order = (champion_generation, generation, version)
        served = self._holder.current
        if served is not None and candidate_order <= served.order:
            return None
        if served is not None and served.meta.model == model and version == served.meta.version:
            # The same version under a newer generation (e.g. rolled back to it): no reload.
            return ServedModel(served.meta, served.model, generation, champion_generation)
        fetched = await self.fetch(model, version)
        if fetched is None:
            return None
        meta, loaded = fetched
        return ServedModel(meta, loaded, generation, champion_generation)

    async def fetch(self, model: str, version: int) -> tuple[ModelMeta, Any] | None:
        """``model`` ``version`` verified and unpickled off the event loop (one load at a time
        with every other: see ``loading.py``), or ``None`` if it is missing or refused."""
        async with self._load_lock:
            try:
                signed = await self._store.load(model, version)
            except BackendUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - a hash that is no signed blob (fields missing or garbled)
                self._refuse(model, version, f"malformed version hash: {exc!r}")
                return None
            if signed is None:
                self.missing += 1
                log.warning("%s v%s is not in the model store (deleted?); the next check reads the pointer again", model, version)
                return None
            try:
                meta, loaded = await asyncio.to_thread(self._loader.load, signed, self._signer)
            except BlobRefused as exc:
                self._refuse(model, version, str(exc))
                return None
        if meta.model != model or meta.version != version:
            self._refuse(model, version, "metadata names another model or version")
            return None
        return meta, loaded

    async def poll(self) -> None:
        """Check the current pointer every interval; nothing that goes wrong stops polling."""
        while True:
            try:
                await self.check()
            except BackendUnavailable as exc:
                log.warning("poll failed: %s", exc)
            except Exception as exc:  # noqa: BLE001 - polling is the fallback of pub/sub: it must outlive any error
                log.exception("poll failed unexpectedly: %r", exc)
            await asyncio.sleep(self._poll_interval_s)

    async def listen(self) -> None:
        while True:
            try:
                async for note in self._store.announcements():
                    if "champion" in note or isinstance(note.get("version"), int):
                        await self.check()
            except (BackendUnavailable, OSError, ConnectionError) as exc:
                log.warning("announcements lost (%s); polling covers the gap", exc)
            except Exception as exc:  # redis raises its own ConnectionError family
                log.warning("announcements lost (%r); polling covers the gap", exc)
            await asyncio.sleep(self._poll_interval_s)
