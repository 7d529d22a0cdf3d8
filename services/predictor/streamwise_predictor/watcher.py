"""Follows the model store: loads each announced version off the serving path and swaps it in."""

from __future__ import annotations

import asyncio
import logging

from streamwise_core.errors import BackendUnavailable, BlobRefused
from streamwise_core.modelstore import ModelStore
from streamwise_core.signing import Signer

from .holder import ModelHolder, ServedModel
from .loading import ModelLoader

log = logging.getLogger(__name__)


class VersionWatcher:
    """Listens to pub/sub and polls the current pointer; refused blobs are never retried."""

    def __init__(
        self, store: ModelStore, signer: Signer, holder: ModelHolder, model: str, poll_interval_s: float,
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
        self.refused: dict[int, str] = {}

    async def check(self, version: int | None = None) -> None:
        """Load what the current pointer names if it is newer than what is served: a newer
        generation (a promotion or rollback moves to any stored version), or a higher version
        within the same generation. An announcement only triggers a look at the pointer, so
        versions announced while another one loaded are skipped once the pointer has moved on,
        and a version the pointer never named (held back by the gate) is never served."""
        async with self._lock:
            pointer = await self._store.pointer(self._model)
            if pointer is None or pointer.version in self.refused:
                return
            version, generation = pointer.version, pointer.generation
            served = self._holder.current
            if served is not None and (generation, version) <= (served.generation, served.meta.version):
                return
            if served is not None and version == served.meta.version:
                # The same version under a newer generation (e.g. rolled back to it): no reload.
                self._holder.offer(ServedModel(served.meta, served.model, generation))
                return
            try:
                signed = await self._store.load(self._model, version)
            except BackendUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - a hash that is no signed blob (fields missing or garbled)
                self.refused[version] = f"malformed version hash: {exc!r}"
                log.error("refused %s v%s: malformed (%r); still serving v%s", self._model, version, exc, self._holder.version)
                return
            if signed is None:
                return
            try:
                # Verifying and unpickling a large model takes time: keep it off the event loop.
                # ModelLoader verifies first, then unpickles gently (GIL, GC and CPU share: loading.py).
                meta, model = await asyncio.to_thread(self._loader.load, signed, self._signer)
            except BlobRefused as exc:
                self.refused[version] = str(exc)
                log.error("refused %s v%s: %s; still serving v%s", self._model, version, exc, self._holder.version)
                return
            if meta.model != self._model or meta.version != version:
                self.refused[version] = "metadata names another model or version"
                log.error("refused %s v%s: metadata says %s v%s", self._model, version, meta.model, meta.version)
                return
            previous = self._holder.current
            if self._holder.offer(ServedModel(meta, model, generation)):
                if previous is not None:
                    self._loader.retired(previous.model)
                if (took := self._loader.last).get("total", 0) > 0.1:
                    log.info("loaded %s v%s in %s", self._model, version, ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in took.items()))
                log.info("now serving %s v%s (generation %s)", self._model, version, generation)

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
                    if note.get("model") == self._model and isinstance(note.get("version"), int):
                        await self.check(note["version"])
            except (BackendUnavailable, OSError, ConnectionError) as exc:
                log.warning("announcements lost (%s); polling covers the gap", exc)
            except Exception as exc:  # redis raises its own ConnectionError family
                log.warning("announcements lost (%r); polling covers the gap", exc)
            await asyncio.sleep(self._poll_interval_s)
