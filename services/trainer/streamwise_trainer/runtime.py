"""The thin loop of one model: batches in from Kafka, learned, then dead letters, drifts and
versions out, through the clients it is given (or connects itself)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from streamwise_core.adapters.kafka import make_producer
from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.adapters.registry import Lineage, Registry
from streamwise_core.contracts.codec import ModelMeta, unpack
from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_core.contracts.events import utcnow
from streamwise_core.contracts.signing import Signer
from streamwise_core.contracts.store_ports import Checkpoints
from streamwise_core.domain.lifecycle import GateDecision, decide

from .anchors import GateAnchors
from .consumer import BatchConsumer
from .dead_letters import DeadLetterSink
from .drift import Drift
from .learning import ConsumedRecord, Rejected, Snapshot, Trainer
from .lease import WriterLease
from .publish_policy import PublishPolicy
from .publisher import Publisher
from .serialiser import Serialiser
from .settings import TrainerSettings

log = logging.getLogger(__name__)

FINAL_CHECKPOINT_TIMEOUT_S = 5.0
LOOP_TURN_S = 0.05
"""Longest stretch of learning before other tasks (health checks, timers) get a turn."""
MAX_RUN = 512
"""Most records handed to ``Trainer.handle_many`` at once (it reads them all, then learns)."""


class Publishing(Protocol):
    """What the runtime asks of ``Publisher``."""

    registry_failures: int
    held_back: int
    pruned: int
    compacted: int
    last_decision: dict[str, object] | None

    @property
    def registry_backlog(self) -> int: ...

    async def deliver(self, snapshot: Snapshot) -> None: ...

    def schedule_flush(self) -> object: ...

    async def close(self) -> None: ...


@dataclass
class TrainerClients:
    """Where one model's runtime writes: versions, checkpoints saved alone, dead letters, its lease."""

    publisher: Publishing
    checkpoints: Checkpoints
    dead_letters: DeadLetterSink
    lease: WriterLease | None = None
    """``None``: no single-writer lease (a trainer alone by construction, unit tests)."""
    close: Callable[[], Awaitable[None]] | None = None
    """Closes the connections behind them, after the publisher."""


class TrainerRuntime:
    """Learns, and publishes when ``PublishPolicy`` says a version is due; everything else is
    delegated: serialising (``Serialiser``), storing (``Publisher``), the lease (``WriterLease``),
    dead letters (``DeadLetterSink``)."""

    def __init__(
        self,
        settings: TrainerSettings,
        trainer: Trainer,
        signer: Signer,
        *,
        writer: str | None = None,
        clients: TrainerClients | None = None,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self.settings = settings
        self._clock = clock
        """Decides when versions, checkpoints, lease renewals and retries are due, and sizes runs."""
        self.trainer = trainer
        self.signer = signer
        self.writer = writer
        """This trainer's name in the single-writer lease; ``None``: no lease."""
        self.on_fenced: Callable[[], None] = lambda: os.kill(os.getpid(), signal.SIGTERM)
        """What losing the lease does after publishing stopped: a graceful shutdown."""
        self.dead_letter_claim: Callable[[ConsumedRecord], bool] = lambda record: True
        """Whether this model writes a bad record's dead letter (the supervisor shares one
        ``FirstToReach`` between its models)."""
        self._clients = clients
        self._lock = asyncio.Lock()
        """Held while a version is published (the batch and the timer both try)."""
        self._state_lock = asyncio.Lock()
        """Held while learning and while serialising in a worker thread: never both at once."""
        self.policy = PublishPolicy(
            every_n=settings.publish_every_n, every_ms=settings.publish_every_ms,
            checkpoint_every_ms=settings.checkpoint_every_ms, busy_max=settings.publish_busy_max, clock=clock,
        )
        self.serialiser = Serialiser(
            trainer, signer, self._state_lock, fork_above_kb=settings.snapshot_fork_above_kb, clock=clock, cpu_clock=cpu_clock,
        )
        self._checkpoint_behind = False
        self._checkpointed_offsets: dict[str, int] = dict(trainer.state.offsets)
        """The offsets in the newest checkpoint stored (as restored, at start)."""
        self._run_size = 64
        """Records learned per turn of the event loop, adjusted so a turn takes about ``LOOP_TURN_S``."""
        self._pending: Snapshot | None = None
        """A snapshot whose publication failed: it is retried as is, so version numbers have no
        gaps and a write that landed although its reply was lost is never contradicted."""
        self.publish_failures = 0
        self._consumer: BatchConsumer | None = None
        self.role = "champion"
        """``champion`` or ``challenger``: set by the supervisor, shown in status and metrics."""
        self.on_drift: Callable[[TrainerRuntime, Drift], Awaitable[None]] | None = None
        """Records and acts on each drift the trainer detected (see supervisor.py)."""
        self.on_published: Callable[[Snapshot, float, float], None] | None = None
        """Called after each publication with the snapshot, how long publishing took and how long
        its oldest example had waited since it was learned (see observability.py)."""
        self._unpublished_since: float | None = None
        spec_json = settings.spec.model_dump_json()
        self._spec = (hashlib.sha256(spec_json.encode()).hexdigest(), spec_json)
        self._learned_since: tuple[dict[str, int], datetime] = (dict(trainer.state.offsets), utcnow())
        """Offsets and time where what the next version adds began (lineage)."""
        gate = settings.gate
        if gate.enabled and gate.compare == "same" and trainer.anchors is None:
            trainer.anchors = GateAnchors(settings.spec.task, max(gate.min_examples, 1), gate.sample_every)

    @property
    def fenced(self) -> bool:
        """Another trainer took the lease: nothing more is published."""
        lease = self._clients.lease if self._clients is not None else None
        return lease is not None and lease.fenced

    async def start(self) -> TrainerClients:
        """The clients, connected on first use (inside the worker's event loop)."""
        if self._clients is None:
            async with self._lock:
                if self._clients is None:
                    self._clients = await self._connect()
        return self._clients

    async def _connect(self) -> TrainerClients:
        s = self.settings
        store = ModelStore.from_url(s.redis_url, s.topic_prefix, s.spec.name)
        producer = make_producer(s.kafka, client_id=f"{s.spec.name}-trainer")
        await producer.start()
        publisher = Publisher(
            store, Registry.from_url(s.database_url), producer, s.topics.models,
            decide=self.gate, lineage=self.lineage, decide_reads_served=s.gate.enabled, retention=s.retention,
        )

        async def send(topic: str, value: bytes, key: bytes | None) -> object:
            return await producer.send_and_wait(topic, value, key=key)

        async def close() -> None:
            await producer.stop()
            await store.close()

        lease = None
        if self.writer is not None:
            lease = WriterLease(
                store, s.spec.model.name, self.writer, s.writer_lease_ms, on_fenced=lambda: self.on_fenced(), clock=self._clock,
            )
        sink = DeadLetterSink(send, s.topics.dead_letters, s.spec.model.name, claim=lambda r: self.dead_letter_claim(r))
        return TrainerClients(publisher, store, sink, lease, close)

    async def run(self) -> None:
        """Learn from every partition of the events and labels topics until cancelled."""
        await self.start()
        s = self.settings
        offsets = self.trainer.state.offsets
        consumer = BatchConsumer(
            s.kafka, [s.topics.events, s.topics.labels],
            client_id=f"{s.spec.name}-trainer", fetch_min_bytes=max(s.fetch_min_kb * 1024, 1),
            fetch_max_wait_ms=s.fetch_max_wait_ms,
        )
        await consumer.start(offsets)
        self._consumer = consumer
        try:
            while True:
                records = await consumer.next_batch(offsets, max_records=s.batch_max, timeout_ms=s.batch_wait_ms)
                if records:
                    await self.after_batch(await self.learn(records))
        finally:
            self._consumer = None
            await consumer.stop()

    def gate(self, candidate: ModelMeta, served_meta: bytes | None) -> GateDecision:
        """The validation gate, once per publication, against the version served right then."""
        served = None
        if served_meta is not None:
            try:
                served = ModelMeta.model_validate_json(served_meta)
            except ValueError:
                served = None  # unreadable: nothing worth keeping in its place
        anchors = self.trainer.anchors
        return decide(
            self.trainer.spec.task, candidate.metrics, candidate.examples_seen,
            served.metrics if served is not None else None, served.examples_seen if served is not None else 0,
            self.settings.gate, anchors.evidence() if anchors is not None else None,
        )

    async def _anchor(self, snapshot: Snapshot, publisher: Publishing) -> None:
        """Keep a version just served as the gate's next anchor, if one is wanted."""
        anchors = self.trainer.anchors
        decision = publisher.last_decision
        if anchors is None or not anchors.wants() or (decision is not None and decision.get("status") != "served"):
            return
        _, model = await asyncio.to_thread(unpack, snapshot.model, self.signer)
        anchors.served(snapshot.meta.version, lambda: model)

    def lineage(self, meta: ModelMeta) -> Lineage:
        """What ``meta`` learned from: the spec, and offsets and time since the previous version."""
        offsets_from, learned_from = self._learned_since
        self._learned_since = (dict(meta.offsets), meta.created_at)
        return Lineage(
            spec_sha256=self._spec[0], spec=self._spec[1], offsets_from=offsets_from,
            learned_from=learned_from, learned_to=meta.created_at,
        )

    async def lag(self) -> dict[str, int]:
        """Records waiting per partition; empty before the consumer has started."""
        return await self._consumer.lag() if self._consumer is not None else {}

    async def stop(self) -> None:
        """Checkpoint, give the lease up and close the clients (on a graceful worker shutdown)."""
        clients = self._clients
        if clients is None:
            return
        try:
            async with asyncio.timeout(FINAL_CHECKPOINT_TIMEOUT_S):
                await self.checkpoint_now()
        except TimeoutError:
            log.warning("no final checkpoint within %ss: a restart replays since the last one", FINAL_CHECKPOINT_TIMEOUT_S)
        if clients.lease is not None:
            await clients.lease.release()
        await clients.publisher.close()
        if clients.close is not None:
            await clients.close()
        self._clients = None

    async def learn(self, records: Sequence[ConsumedRecord]) -> list[Rejected]:
        """Learn from ``records``, letting the event loop run (web, timers) every few ms: they
        are learned in runs sized to take about ``LOOP_TURN_S`` each. Returns the rejected ones."""
        rejected: list[Rejected] = []
        async with self._state_lock:
            at = 0
            while at < len(records):
                run = records[at:at + self._run_size]
                started = self._clock()
                rejected += self.trainer.handle_many(run)
                at += len(run)
                spent = self._clock() - started
                self._run_size = max(1, min(MAX_RUN, int(len(run) * LOOP_TURN_S / spent) if spent > 0 else MAX_RUN))
                if at < len(records):
                    await asyncio.sleep(0)
        return rejected

    async def after_batch(self, rejected: list[Rejected]) -> None:
        """Dead-letter what was rejected, report drifts, publish if a version is due."""
        clients = await self.start()
        if self._unpublished_since is None and self.trainer.unpublished > 0:
            self._unpublished_since = self._clock()
        for item in rejected:
            await clients.dead_letters.write(item)
        for found in self.trainer.take_drifts():
            await self._report_drift(found)
        if self._due():
            await self.publish()

    async def tick(self) -> None:
        """Timer: renew the lease; publish what is new once ``publish_every_ms`` have passed;
        retry a failed publication after its backoff; keep the registry backlog draining."""
        clients = await self.start()
        if clients.lease is not None:
            await clients.lease.renew()
        if self._due():
            await self.publish()
        clients.publisher.schedule_flush()

    def _due(self) -> bool:
        return self.policy.due(
            unpublished=self.trainer.unpublished, changed=self.trainer.model_changed, pending=self._pending is not None,
        )

    async def _snapshot(self, *, checkpoint: bool = False) -> Snapshot:
        """The next version; after a batch the consuming loop waits for the whole publication,
        from the timer learning goes on while a forked child serialises
        (docs/benchmarks.md, *Learning throughput*)."""
        checkpoint = checkpoint or self.policy.checkpoint_due()
        serialised = await self.serialiser.version(checkpoint=checkpoint)
        self.policy.serialised(started=serialised.started, cost=serialised.cost, checkpoint=checkpoint)
        return serialised.snapshot

    async def checkpoint_now(self) -> None:
        """Publish what is new with a checkpoint, so a restart has nothing to replay; when the
        model did not change (a retrained model between refits), save a checkpoint alone."""
        if self.fenced:
            return
        async with self._lock:
            if self._pending is None and self.trainer.model_changed:
                self._pending = await self._snapshot(checkpoint=True)
            elif self._pending is None and (self._checkpoint_behind or self.trainer.state.offsets != self._checkpointed_offsets):
                await self._save_checkpoint_alone()
        if self._pending is not None:
            await self.publish()

    async def _save_checkpoint_alone(self) -> None:
        clients = await self.start()
        snapshot = await self.serialiser.checkpoint_alone()
        assert snapshot.checkpoint is not None
        try:
            await clients.checkpoints.save_checkpoint(snapshot.meta.model, snapshot.checkpoint)
        except BackendUnavailable as exc:
            log.warning("could not save the checkpoint of %s: %s", snapshot.meta.model, exc)
            return
        self._checkpoint_behind = False
        self._checkpointed_offsets = dict(snapshot.meta.offsets)

    async def publish(self) -> None:
        """Publish a new version, or retry the one that could not be published.

        Never raises: learning goes on while Redis is away, and the checkpoint in Redis stays
        at the last version published, so a restart resumes from there exactly once.
        """
        clients = await self.start()
        if self.fenced:
            return
        async with self._lock:
            begun = self._clock()
            if self._pending is None:
                if not self.trainer.model_changed:
                    return  # published meanwhile by the other caller (batch or timer), or nothing changed
                self._pending = await self._snapshot()
            snapshot = self._pending
            started = self._clock()
            try:
                await clients.publisher.deliver(snapshot)
            except Exception as exc:  # noqa: BLE001 - BackendUnavailable, or anything else: retry later
                self.publish_failures += 1
                backoff = self.policy.failed()
                log.warning(
                    "publishing v%s failed, retrying the same version in %.2fs: %s",
                    snapshot.meta.version, backoff, exc if isinstance(exc, BackendUnavailable) else repr(exc),
                )
                return
            self._pending = None
            self.policy.published(begun=begun, stored_from=started, checkpoint=snapshot.checkpoint is not None)
            if snapshot.checkpoint is not None:
                self._checkpoint_behind = False
                self._checkpointed_offsets = dict(snapshot.meta.offsets)
            else:
                self._checkpoint_behind = True
            self.trainer.mark_published(snapshot)
            await self._anchor(snapshot, clients.publisher)
            self._observe_publish(snapshot, started)
            log.info(
                "published %s v%s after %s examples %s",
                snapshot.meta.model, snapshot.meta.version, snapshot.meta.examples_seen, snapshot.meta.metrics,
            )

    def _observe_publish(self, snapshot: Snapshot, started: float) -> None:
        now = self._clock()
        waited = now - (self._unpublished_since if self._unpublished_since is not None else started)
        # Examples learned while this version was being published wait for the next one.
        self._unpublished_since = started if self.trainer.unpublished > 0 else None
        if self.on_published is not None:
            try:
                self.on_published(snapshot, now - started, waited)
            except Exception:  # noqa: BLE001 - observing must never stop publishing
                log.exception("publication observer failed")

    async def _report_drift(self, found: Drift) -> None:
        log.warning(
            "drift in %s after %s examples (error now %.3f); action: %s",
            self.trainer.spec.model.name, found.examples_seen, found.error_after, found.action,
        )
        if self.on_drift is None:
            return
        try:
            await self.on_drift(self, found)
        except Exception:  # noqa: BLE001 - recording a drift must never stop learning
            log.exception("drift of %s not recorded", self.trainer.spec.model.name)

    def status(self) -> dict[str, object]:
        clients = self._clients
        publisher = clients.publisher if clients is not None else None
        join = self.trainer.state.join
        drift = self.trainer.state.drift
        return {
            "model": self.trainer.spec.model.name,
            "role": self.role,
            "kind": self.trainer.spec.model.kind,
            "drifts_detected": drift.detected if drift is not None else 0,
            "version": self.trainer.state.version,
            "examples_seen": self.trainer.examples_seen,
            "metrics": self.trainer.state.learner.metrics.snapshot(),
            "offsets": self.trainer.state.offsets,
            "waiting_features": join.waiting_features,
            "waiting_labels": join.waiting_labels,
            "join_evicted": join.evicted,
            "skipped_replayed": self.trainer.skipped,
            "duplicates_ignored": self.trainer.state.duplicates,
            "learned_digest": self.trainer.state.learned_digest,
            "dead_letters": clients.dead_letters.written if clients is not None else 0,
            "publish_failures": self.publish_failures,
            "snapshots_forked": self.serialiser.forked,
            "publish_pending": self._pending.meta.version if self._pending is not None else None,
            "registry_backlog": publisher.registry_backlog if publisher is not None else 0,
            "registry_failures": publisher.registry_failures if publisher is not None else 0,
            "held_back": publisher.held_back if publisher is not None else 0,
            "blobs_pruned": publisher.pruned if publisher is not None else 0,
            "registry_rows_compacted": publisher.compacted if publisher is not None else 0,
            "last_gate": publisher.last_decision if publisher is not None else None,
        }
