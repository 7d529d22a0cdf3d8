"""One learner per model of the roster: the champion and its challengers on the same stream.

The registry's roster says which models learn; the supervisor starts a ``TrainerRuntime`` for
each (its own consumer, checkpoint, versions and writer lease), stops the ones retired, and
polls for changes, so challengers come and go without a restart. Every model scores each
example before learning it; the scoreboard compares a challenger with the champion on the
examples both scored, and one that stays ahead by the configured margin becomes champion.
Drifts detected by a runtime are recorded, announced, and acted on here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.adapters.registry import CHALLENGER, CHAMPION, RETIRED, DriftEntry, Registry, RosterEntry
from streamwise_core.contracts.appspec import ModelSpec
from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_core.contracts.retention import Retention
from streamwise_core.contracts.signing import Signer
from streamwise_core.domain.lifecycle.challenge import PromotionClock, Scoreboard
from streamwise_core.domain.lifecycle.operations import LifecycleError
from streamwise_core.domain.lifecycle.roster import StartPosition, add_challenger, make_champion, publish_roster

from .app import prepare_model
from .dead_letters import FirstToReach
from .drift import Drift
from .learning import Trainer
from .runtime import TrainerRuntime
from .settings import TrainerSettings

log = logging.getLogger(__name__)

AUTO_PROMOTION = "trainer:auto-promotion"
DRIFT_ACTOR = "trainer:drift"
RESTART_AFTER_S = 10.0
"""A model whose runtime failed (or whose lease another trainer holds) is tried again after this."""


class Supervisor:
    def __init__(self, settings: TrainerSettings, signer: Signer, writer: str, *, roster_poll_s: float = 1.0) -> None:
        self.settings = settings
        self.signer = signer
        self.writer = writer
        self.roster_poll_s = roster_poll_s
        spec = settings.spec
        self.runtimes: dict[str, TrainerRuntime] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._prepared: dict[str, tuple[RosterEntry, Trainer]] = {}
        self._retry_at: dict[str, float] = {}
        self.scoreboard = Scoreboard(capacity=spec.promotion.window * 4)
        self.clock = PromotionClock(spec.promotion)
        self.champion: str = spec.model.name
        self.comparisons: list[dict[str, object]] = []
        self.on_runtime: Callable[[TrainerRuntime], None] | None = None
        """Told of each runtime started (the publication metrics attach to it)."""
        self._store: ModelStore | None = None
        self._registry: Registry | None = None
        self._dead_letters = FirstToReach()
        self._stopping = False
        """Set by ``stop``: nothing starts again (the roster loop would otherwise restart the
        models shutdown just stopped, and the worker would never exit)."""

    # -- before the worker starts -------------------------------------------------------
    async def prepare(self) -> None:
        """Put the spec's models on the roster (first start), settle the champion, and restore
        every active model, taking its writer lease (``WriterConflict`` if another trainer has one)."""
        store = ModelStore.from_url(self.settings.redis_url, self.settings.topic_prefix, self.settings.spec.name)
        registry = Registry.from_url(self.settings.database_url)
        try:
            entries = await self._seed_roster(store, registry)
            for entry in entries:
                trainer = await prepare_model(self._settings_for(entry), self.signer, self.writer, StartPosition.parse(entry.start))
                self._prepared[entry.name] = (entry, trainer)
        finally:
            await store.close()
            registry.close()

    async def _seed_roster(self, store: ModelStore, registry: Registry) -> list[RosterEntry]:
        spec = self.settings.spec
        known = await asyncio.to_thread(registry.roster, spec.name, include_retired=True)
        for entry in known:
            if entry.role == RETIRED:
                await tidy_retired(store, entry.name, self.settings.retention)
        names = {e.name for e in known}
        has_champion = any(e.role == CHAMPION for e in known)
        for model in spec.models:
            if model.name in names:
                continue
            role = CHAMPION if model is spec.model and not has_champion else CHALLENGER
            await asyncio.to_thread(registry.add_model, RosterEntry(
                app=spec.name, name=model.name, role=role, kind=model.kind, spec=model.model_dump(mode="json"),
                start={"from": "earliest"}, created_by="spec", created_at=datetime.now(UTC), reason="declared in the app spec",
            ))
        entries = await asyncio.to_thread(registry.roster, spec.name)
        in_registry = next((e.name for e in entries if e.role == CHAMPION), spec.model.name)
        champion = await store.claim_champion(in_registry)
        if champion.model != in_registry:  # a promotion reached Redis but not the registry
            await asyncio.to_thread(registry.set_champion, spec.name, champion.model)
            entries = await asyncio.to_thread(registry.roster, spec.name)
        self.champion = champion.model
        await publish_roster(store, registry, spec.name)
        return entries

    def _settings_for(self, entry: RosterEntry) -> TrainerSettings:
        """The model's settings: the spec file's declaration for its own models, else the roster's."""
        declared = {m.name: m for m in self.settings.spec.models}
        model = declared.get(entry.name) or ModelSpec.model_validate(entry.spec)
        return self.settings.model_copy(update={"spec": self.settings.spec.for_model(model)})

    # -- in the worker ------------------------------------------------------------------
    async def run(self) -> None:
        s = self.settings
        self._store = ModelStore.from_url(s.redis_url, s.topic_prefix, s.spec.name)
        self._registry = Registry.from_url(s.database_url)
        self._dead_letters = FirstToReach(trainer.state.offsets for _, trainer in self._prepared.values())
        for entry, trainer in self._prepared.values():
            self._launch(entry, trainer)
        self._prepared.clear()
        while not self._stopping:
            try:
                await self.reconcile()
                await self.challenge()
            except BackendUnavailable as exc:
                log.warning("roster not checked: %s", exc)
            except Exception:  # noqa: BLE001 - supervising must outlive any one failure
                log.exception("roster check failed")
            await asyncio.sleep(self.roster_poll_s)

    async def reconcile(self) -> None:
        """Start the roster's models that are not running, stop the ones retired."""
        if self._stopping:
            return
        assert self._store is not None and self._registry is not None
        entries = {e.name: e for e in await asyncio.to_thread(self._registry.roster, self.settings.spec.name)}
        champion = await self._store.champion()
        if champion is not None and champion.model != self.champion:
            log.info("the champion is now %s (was %s)", champion.model, self.champion)
            self.champion = champion.model
            self.clock.reset()
        for name in [n for n in self.runtimes if n not in entries]:
            await self._stop_model(name, reason="retired")
            await tidy_retired(self._store, name, self.settings.retention)
        for name, entry in entries.items():
            if name in self.runtimes or time.monotonic() < self._retry_at.get(name, 0.0):
                continue
            try:
                trainer = await prepare_model(
                    self._settings_for(entry), self.signer, self.writer, StartPosition.parse(entry.start), lease_wait_s=0,
                )
            except Exception as exc:  # noqa: BLE001 - one model that cannot start must not stop the others
                self._retry_at[name] = time.monotonic() + RESTART_AFTER_S
                log.warning("model %s not started (trying again in %ss): %r", name, RESTART_AFTER_S, exc)
                continue
            self._launch(entry, trainer)
        self._assign_roles()

    def _assign_roles(self) -> None:
        several = len(self.runtimes) > 1
        for name, runtime in self.runtimes.items():
            runtime.role = CHAMPION if name == self.champion else CHALLENGER
            # Scores cost a little per example: only kept while there is something to compare.
            runtime.trainer.on_scored = functools.partial(self.scoreboard.record, name) if several else None

    def _launch(self, entry: RosterEntry, trainer: Trainer) -> None:
        if self._stopping:
            return
        runtime = TrainerRuntime(self._settings_for(entry), trainer, self.signer, writer=self.writer)
        runtime.on_drift = self._on_drift
        runtime.dead_letter_claim = self._dead_letters.claim
        self.runtimes[entry.name] = runtime
        task = asyncio.get_running_loop().create_task(runtime.run(), name=f"learn-{entry.name}")
        task.add_done_callback(functools.partial(self._ended, entry.name))
        self._tasks[entry.name] = task
        self._assign_roles()
        if self.on_runtime is not None:
            self.on_runtime(runtime)
        log.info("learning %s (%s, %s) from %s", entry.name, entry.kind, runtime.role, entry.start)

    def _ended(self, name: str, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._tasks.get(name) is not task or self._stopping:
            return
        log.error("learning %s stopped: %r; restarting it from its checkpoint in %ss", name, task.exception(), RESTART_AFTER_S)
        self._retry_at[name] = time.monotonic() + RESTART_AFTER_S
        asyncio.get_running_loop().create_task(self._stop_model(name, reason="failed"))

    async def _stop_model(self, name: str, *, reason: str) -> None:
        task, runtime = self._tasks.pop(name, None), self.runtimes.pop(name, None)
        if task is not None:
            await _cancelled(task, name)
        if runtime is not None:
            await runtime.stop()
        self.scoreboard.forget(name)
        self._assign_roles()
        log.info("stopped learning %s (%s)", name, reason)

    async def tick(self) -> None:
        for runtime in list(self.runtimes.values()):
            await runtime.tick()

    async def stop(self) -> None:
        self._stopping = True
        for name in list(self.runtimes):
            await self._stop_model(name, reason="shutdown")
        if self._store is not None:
            await self._store.close()
        if self._registry is not None:
            self._registry.close()

    # -- champion against challengers ---------------------------------------------------
    async def challenge(self) -> None:
        """Compare each challenger with the champion; promote one that stayed ahead long enough."""
        if self.champion not in self.runtimes:
            self.comparisons = []
            return
        promotion, task = self.settings.spec.promotion, self.settings.spec.task
        now = time.monotonic()
        comparisons = []
        winner = None
        for name in self.runtimes:
            if name == self.champion:
                continue
            comparison = self.scoreboard.compare(self.champion, name, promotion.window)
            if self.clock.observe(comparison, now) and winner is None:
                winner = comparison
            comparisons.append({**comparison.as_dict(task), "ahead_for_s": self.clock.ahead_for(name, now)})
        self.comparisons = comparisons
        if winner is None:
            return
        assert self._store is not None and self._registry is not None
        before = self.champion
        reason = (
            f"beat {before} by {winner.advantage:.4f} on the {winner.common} latest examples both scored, "
            f"for {promotion.hold_s:g}s (margin {promotion.margin:g})"
        )
        try:
            await make_champion(
                self._store, self._registry, self.settings.spec.name, winner.challenger, actor=AUTO_PROMOTION,
                reason=reason, details={"comparison": winner.as_dict(task)},
            )
        except LifecycleError as exc:
            log.info("%s not promoted: %s", winner.challenger, exc)
            return
        log.warning("%s is the champion now: %s", winner.challenger, reason)
        self.champion = winner.challenger
        self.clock.reset()
        self._assign_roles()

    # -- drifts -------------------------------------------------------------------------
    async def _on_drift(self, runtime: TrainerRuntime, found: Drift) -> None:
        assert self._store is not None and self._registry is not None
        app, model = self.settings.spec.name, runtime.trainer.spec.model
        await asyncio.to_thread(self._registry.record_drift, DriftEntry(
            app=app, model=model.name, version=runtime.trainer.state.version, examples_seen=found.examples_seen,
            detected_at=found.detected_at, offsets=found.offsets, detector=found.detector, action=found.action,
            details={"error_after": found.error_after, "role": runtime.role},
        ))
        await self._store.notify({
            "drift": model.name, "examples_seen": found.examples_seen, "offsets": found.offsets,
            "detected_at": found.detected_at.isoformat(), "action": found.action,
        })
        if found.action == "challenger" and runtime.role == CHAMPION:
            await self._drift_challenger(model, found)

    async def _drift_challenger(self, model: ModelSpec, found: Drift) -> None:
        """A fresh copy of the drifted champion, learning from where the drift was detected."""
        assert self._store is not None and self._registry is not None
        app = self.settings.spec
        every = await asyncio.to_thread(self._registry.roster, app.name, include_retired=True)
        # The cap counts every drift challenger of the app, not only this model's: a drift
        # challenger that became champion and drifts in turn must not grow a tree of them.
        active = [e for e in every if e.created_by == DRIFT_ACTOR and e.role == CHALLENGER]
        if len(active) >= model.drift.max_challengers:
            log.info("drift in %s: %s drift challengers learn already, none added", model.name, len(active))
            return
        taken = {e.name for e in every}
        n = 1
        while (name := f"{model.name[:56]}-d{n}") in taken:
            n += 1
        fresh = model.model_copy(update={"name": name})
        try:
            await add_challenger(
                self._store, self._registry, app, fresh, StartPosition(from_="positions", positions=found.offsets),
                actor=DRIFT_ACTOR,
                reason=f"drift in {model.name} after {found.examples_seen} examples ({found.detector})",
            )
        except LifecycleError as exc:
            log.warning("drift challenger %s not added: %s", name, exc)

    def status(self) -> dict[str, Any]:
        """The champion's status (as a single-model trainer reports it), every model's, and the
        comparisons of the challengers with the champion."""
        runtime = self.runtimes.get(self.champion) or next(iter(self.runtimes.values()), None)
        top: dict[str, Any] = runtime.status() if runtime is not None else {"model": self.champion}
        return {
            **top, "champion": self.champion,
            "models": {name: r.status() for name, r in self.runtimes.items()},
            "challenges": self.comparisons,
        }

    async def lag(self) -> dict[str, int]:
        runtime = self.runtimes.get(self.champion)
        return await runtime.lag() if runtime is not None else {}


async def _cancelled(task: asyncio.Task[None], name: str, *, again_after_s: float = 1.0) -> None:
    """Cancel ``task`` and wait until it ends, cancelling it again while it runs on. A cancellation
    can be lost: one in ten shutdowns under the demo's load, the learning loop went on waiting in
    aiokafka's ``getmany`` after it, and the worker waited for it forever."""
    cancels = 0
    while not task.done():
        task.cancel()
        cancels += 1
        await asyncio.wait({task}, timeout=again_after_s)
        if not task.done() and cancels == 1:
            log.warning("learning %s goes on after a cancel: cancelling it again; it waits in %s", name, " > ".join(_awaiting(task)))
    if not task.cancelled() and task.exception() is not None:
        log.debug("learning %s ended with %r", name, task.exception())


def _awaiting(task: asyncio.Task[None]) -> list[str]:
    """Where ``task`` waits: its chain of awaited coroutines, outermost first."""
    found: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            found.append(f"{frame.f_code.co_name} ({Path(frame.f_code.co_filename).name}:{frame.f_lineno})")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return found


async def tidy_retired(store: ModelStore, model: str, retention: Retention) -> None:
    """A retired model learns no more: its checkpoint goes, and so do its blobs but the current,
    the pinned and those a rollback or a predictor may still need."""
    try:
        await store.forget_checkpoint(model)
        await store.prune(model, retention.model_copy(update={"keep_last": 1}))
    except BackendUnavailable as exc:
        log.warning("retired model %s not tidied (done at the next start): %s", model, exc)
