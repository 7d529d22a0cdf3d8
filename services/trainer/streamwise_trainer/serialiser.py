"""Turns the trainer's state into signed snapshots off the event loop: a thread, or a forked child."""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections.abc import Callable
from typing import NamedTuple

from streamwise_core.contracts.codec import ModelMeta
from streamwise_core.contracts.signing import Signer

from . import forked
from .learning import Snapshot, Trainer

log = logging.getLogger(__name__)


class Serialised(NamedTuple):
    snapshot: Snapshot
    started: float
    """When serialising began, on the runtime's clock."""
    cost: float
    """The CPU time a thread took (or, for a forked child, its time from the fork to its bytes)."""


class Serialiser:
    """Serialises while learning waits on ``state_lock``: a small model in a worker thread, so
    health checks and status reads are answered meanwhile; a large one (a tree of MBs, a forest)
    in a forked child, so learning goes on meanwhile (see forked.py). Sizes, not times, decide
    which: they do not change with the host's load."""

    def __init__(
        self, trainer: Trainer, signer: Signer, state_lock: asyncio.Lock, *, fork_above_kb: int,
        clock: Callable[[], float] = time.monotonic, cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self.trainer = trainer
        self._signer = signer
        self._state_lock = state_lock
        self.fork_above_kb = fork_above_kb
        self._clock = clock
        self._cpu_clock = cpu_clock
        """The CPU time of the serialising thread: on a busy host its wall time also counts
        the time it waited for a CPU, which would hold the next version back."""
        self.blob_sizes = (0, 0)
        """Bytes of the last model blob and of the last checkpoint: what the next snapshot's is expected to be."""
        self.forked = 0
        """Snapshots serialised in a forked child."""

    async def version(self, *, checkpoint: bool) -> Serialised:
        """The next version, with a checkpoint of the whole state if asked."""
        job: forked.ForkedJob | None = None
        cost: float | None = None
        async with self._state_lock:
            started = self._clock()
            meta = self.trainer.next_meta()
            if self._fork_worth_it(checkpoint):
                trainer, signer = self.trainer, self._signer
                try:
                    job = forked.start(lambda: pickle.dumps(trainer.serialise(meta, signer, checkpoint=checkpoint)))
                except OSError as exc:
                    log.warning("cannot fork to serialise v%s, using a thread: %s", meta.version, exc)
            if job is None:
                snapshot, cost = await asyncio.to_thread(self._in_thread, meta, checkpoint)
        if job is not None:
            try:
                snapshot = pickle.loads(await asyncio.to_thread(forked.collect, job))  # noqa: S301 - our own child
                self.forked += 1
            except forked.ChildFailed as exc:
                log.warning("serialising v%s in a child failed, using a thread: %s", meta.version, exc)
                async with self._state_lock:  # same version number, the state as it is now
                    meta = self.trainer.next_meta(meta.version)
                    snapshot, cost = await asyncio.to_thread(self._in_thread, meta, checkpoint)
        if cost is None:
            cost = self._clock() - started
        self.blob_sizes = (
            len(snapshot.model.blob), len(snapshot.checkpoint.blob) if snapshot.checkpoint else self.blob_sizes[1],
        )
        return Serialised(snapshot, started, cost)

    async def checkpoint_alone(self) -> Snapshot:
        """The whole state under the last version's number (its model is that version's)."""
        async with self._state_lock:
            meta = self.trainer.next_meta(self.trainer.state.version)
            return await asyncio.to_thread(self.trainer.serialise, meta, self._signer, checkpoint=True)

    def _in_thread(self, meta: ModelMeta, checkpoint: bool) -> tuple[Snapshot, float]:
        began = self._cpu_clock()
        snapshot = self.trainer.serialise(meta, self._signer, checkpoint=checkpoint)
        self.trainer.learn_on_from(snapshot)
        return snapshot, self._cpu_clock() - began

    def _fork_worth_it(self, checkpoint: bool) -> bool:
        expected = self.blob_sizes[0] + (self.blob_sizes[1] if checkpoint else 0)
        return forked.AVAILABLE and self.fork_above_kb >= 0 and expected > self.fork_above_kb * 1024
