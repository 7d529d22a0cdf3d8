"""Shadow scoring: a sample of requests is also scored by the challengers, in the background.

The champion answers as always; the request only puts its checked instances on a bounded
queue (no await, dropped when full), and a background task scores them with each challenger's
current version and records those predictions (``shadow: true``) on the predictions topic, so
outcomes can later be joined with labels for every model. Challengers' versions are loaded
with the champion's watcher (verified, paced, one load at a time) and refreshed every poll.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from typing import Protocol

from streamwise_core.contracts.appspec import AppSpec
from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_core.contracts.events import PredictionMade, utcnow
from streamwise_core.contracts.store_ports import Pointers

from .holder import ModelHolder, ServedModel
from .predictions import Answer, Checked, predict_checked
from .watcher import VersionWatcher

log = logging.getLogger(__name__)


class Recorder(Protocol):
    def add(self, records: list[tuple[bytes, bytes]]) -> None: ...


class ShadowModels:
    """The current version of every model on the roster but the champion."""

    def __init__(self, store: Pointers, watcher: VersionWatcher, holder: ModelHolder) -> None:
        self._store = store
        self._watcher = watcher
        self._holder = holder
        self.models: dict[str, ServedModel] = {}

    def _champion(self) -> str | None:
        return self._holder.current.meta.model if self._holder.current is not None else None

    def challengers(self) -> list[ServedModel]:
        """The loaded models but the one served now: between a promotion and the next refresh
        the new champion is still in ``models``, and must not shadow itself."""
        champion = self._champion()
        return [m for m in self.models.values() if m.meta.model != champion]

    async def refresh(self) -> None:
        champion = self._champion()
        names = [n for n in await self._store.roster() if n != champion]
        for gone in self.models.keys() - set(names):
            del self.models[gone]
        for name in names:
            pointer = await self._store.pointer(name)
            if pointer is None or self._watcher.is_refused(name, pointer.version):
                continue
            have = self.models.get(name)
            if have is not None and (have.generation, have.meta.version) >= (pointer.generation, pointer.version):
                continue
            loaded = await self._watcher.fetch(name, pointer.version)
            if loaded is not None:
                meta, model = loaded
                self.models[name] = ServedModel(meta, model, pointer.generation)

    async def poll(self, interval_s: float) -> None:
        while True:
            try:
                await self.refresh()
            except BackendUnavailable as exc:
                log.warning("shadow models not refreshed: %s", exc)
            except Exception:  # noqa: BLE001 - shadowing is optional: it must never stop
                log.exception("shadow models not refreshed")
            await asyncio.sleep(interval_s)


class ShadowScorer:
    def __init__(
        self, spec: AppSpec, models: Callable[[], Iterable[ServedModel]], recorder: Recorder, *,
        sample: float, queue_max: int = 1000, draw: Callable[[], float] = random.random,
    ) -> None:
        self.spec = spec
        self.models = models
        self.recorder = recorder
        self.sample = sample
        self.draw = draw
        self.queue: asyncio.Queue[list[Checked]] = asyncio.Queue(maxsize=queue_max)
        self.scored = 0
        self.dropped = 0

    def offer(self, items: list[Checked], answers: list[Answer]) -> None:
        """Called on the request path: costs one random draw unless the request is sampled."""
        if self.sample <= 0 or self.draw() >= self.sample:
            return
        try:
            # The champion's ids, so shadow and served predictions of one instance join.
            self.queue.put_nowait([Checked(a["id"], item.x) for item, a in zip(items, answers, strict=True)])
        except asyncio.QueueFull:
            self.dropped += 1

    def score(self, items: list[Checked]) -> int:
        """Score ``items`` with every shadow model and record the predictions; return how many."""
        made = 0
        made_at = utcnow()
        for served in list(self.models()):
            try:
                answers = predict_checked(self.spec, served, items)
            except Exception as exc:  # noqa: BLE001 - a challenger that cannot answer is skipped
                log.debug("shadow %s could not score: %r", served.meta.model, exc)
                continue
            # The bytes of ``PredictionMade(..., shadow=True).to_bytes()`` (tests/unit/test_event_encoding.py).
            self.recorder.add(PredictionMade.records(answers, served.meta.model, served.meta.version, made_at, shadow=True))
            made += len(answers)
        self.scored += made
        return made

    async def run(self) -> None:
        while True:
            items = await self.queue.get()
            self.score(items)
            await asyncio.sleep(0)  # requests first
