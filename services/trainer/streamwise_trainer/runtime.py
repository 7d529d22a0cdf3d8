"""Glue between Kafka, Redis and the pure trainer: batches in, dead letters and versions out."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import pickle
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from aiokafka import AIOKafkaProducer

from streamwise_core.codec import ModelMeta, unpack
from streamwise_core.errors import BackendUnavailable
from streamwise_core.events import DeadLettered, utcnow
from streamwise_core.kafka import make_producer
from streamwise_core.lifecycle import GateDecision, decide
from streamwise_core.modelstore import ModelStore
from streamwise_core.registry import Lineage, Registry
from streamwise_core.signing import Signer

from . import forked
from .anchors import GateAnchors
from .consumer import BatchConsumer
from .drift import Drift
from .learning import ConsumedRecord, Rejected, Snapshot, Trainer
from .publisher import Publisher
from .settings import TrainerSettings

log = logging.getLogger(__name__)

MAX_PUBLISH_BACKOFF_S = 2.0
"""Longest wait between two tries to publish while Redis is away."""
FINAL_CHECKPOINT_TIMEOUT_S = 5.0
LOOP_TURN_S = 0.05
"""Longest stretch of learning before other tasks (health checks, timers) get a turn."""
MAX_RUN = 512
"""Most records handed to ``Trainer.handle_many`` at once (it reads them all, then learns)."""


def smoothed(previous: float | None, latest: float, weight: float = 0.2) -> float:
    """An exponentially weighted mean of serialising times (the first one as is)."""
    return latest if previous is None else previous + weight * (latest - previous)


class TrainerRuntime:
    """Owns the trainer and its clients; clients start lazily inside faust's event loop."""

    def __init__(
        self,
        settings: TrainerSettings,
        trainer: Trainer,
        signer: Signer,
        *,
        writer: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self.settings = settings
        self._clock = clock
        """Decides when versions, checkpoints, lease renewals and retries are due, and sizes runs."""
        self._cpu_clock = cpu_clock
        """The CPU time of the thread serialising a version (the serialising budget)."""
        self.trainer = trainer
        self.signer = signer
        self.writer = writer
        """This trainer's name in the single-writer lease; ``None``: no lease (unit tests)."""
        self.fenced = False
        """Another trainer took the lease: nothing more is published."""
        self._lease_renewed = self._clock()
        self.on_fenced: Callable[[], None] = lambda: os.kill(os.getpid(), signal.SIGTERM)
        """What losing the lease does after publishing stopped: a graceful shutdown."""
        self._lock = asyncio.Lock()
        self._state_lock = asyncio.Lock()
        """Held while learning and while serialising in a worker thread: never both at once."""
        self._started = False
        self._last_publish = self._clock()
        self._last_checkpoint = float("-inf")  # the first version always carries one
        self._next_publish_at = 0.0
        """When serialising again keeps the share of time spent on it under ``publish_busy_max``."""
        self._serialise_s: float | None = None
        """The CPU time serialising a version takes, smoothed over the versions without a checkpoint:
        a checkpoint now and then (a few ms for a linear model) must not hold the next version back."""
        self._checkpoint_behind = False
        self._checkpointed_offsets: dict[str, int] = dict(trainer.state.offsets)
        """The offsets in the newest checkpoint stored (as restored, at start)."""
        self._blob_sizes = (0, 0)
        """Bytes of the last model blob and of the last checkpoint: what decides whether the
        next snapshot is serialised in a forked child (``snapshot_fork_above_kb``)."""
        self.forked_snapshots = 0
        self._run_size = 64
        """Records learned per turn of the event loop, adjusted so a turn takes about ``LOOP_TURN_S``."""
        self._pending: Snapshot | None = None
        """A snapshot whose publication failed: it is retried as is, so version numbers have no
        gaps and a write that landed although its reply was lost is never contradicted."""
        self._retry_at = 0.0
        self._backoff_s = 0.0
        self.publish_failures = 0
        self.dead_letters = 0
        """Dead letters this model wrote."""
        self.dead_letter_claim: Callable[[ConsumedRecord], bool] = lambda record: True
        """Whether this model writes a bad record's dead letter (the supervisor shares one
        ``FirstToReach`` between its models)."""
        self._producer: AIOKafkaProducer | None = None
        self._publisher: Publisher | None = None
        self._store: ModelStore | None = None
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
        gate = settings.gate
        if gate.enabled and gate.compare == "same" and trainer.anchors is None:
            trainer.anchors = GateAnchors(settings.spec.task, max(gate.min_examples, 1), gate.sample_every)
        """Offsets and time where what the next version adds began (lineage)."""

    async def start(self) -> None:
        if self._started:
            return
        async with self._lock:
            if self._started:
                return
            s = self.settings
            store = ModelStore.from_url(s.redis_url, s.topic_prefix, s.spec.name)
            self._producer = make_producer(s.kafka, client_id=f"{s.spec.name}-trainer")
            await self._producer.start()
            self._publisher = Publisher(
                store, Registry.from_url(s.database_url), self._producer, s.topics.models,
                decide=self.gate, lineage=self.lineage, decide_reads_served=s.gate.enabled, retention=s.retention,
            )
            self._store = store
            self._started = True

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

    async def _anchor(self, snapshot: Snapshot) -> None:
        """Keep a version just served as the gate's next anchor, if one is wanted."""
        anchors = self.trainer.anchors
        decision = getattr(self._publisher, "last_decision", None)
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
        """Close the clients this runtime opened (on a graceful worker shutdown)."""
        if not self._started:
            return
        assert self._publisher is not None and self._producer is not None and self._store is not None
        try:
            async with asyncio.timeout(FINAL_CHECKPOINT_TIMEOUT_S):
                await self.checkpoint_now()
        except TimeoutError:
            log.warning("no final checkpoint within %ss: a restart replays since the last one", FINAL_CHECKPOINT_TIMEOUT_S)
        if self.writer is not None and not self.fenced:
            try:  # the next trainer need not wait for the lease to expire
                await self._store.release_writer(self.settings.spec.model.name, self.writer)
            except BackendUnavailable as exc:
                log.warning("writer lease not released (it expires by itself): %s", exc)
        await self._publisher.close()
        await self._producer.stop()
        await self._store.close()
        self._started = False

    async def learn(self, records: Sequence[ConsumedRecord]) -> list[Rejected]:
        """``handle`` the records, letting the event loop run (web, timers) every few ms: they
        are learned in runs sized to take about ``LOOP_TURN_S`` each."""
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

    def handle(self, records: Sequence[ConsumedRecord]) -> list[Rejected]:
        return self.trainer.handle_many(records)

    async def after_batch(self, rejected: list[Rejected]) -> None:
        await self.start()
        if self._unpublished_since is None and self.trainer.unpublished > 0:
            self._unpublished_since = self._clock()
        for item in rejected:
            await self._dead_letter(item)
        for found in self.trainer.take_drifts():
            await self._report_drift(found)
        if self._publish_due() and self._may_publish():
            await self.publish()

    async def tick(self) -> None:
        """Timer: publish what is new once ``publish_every_ms`` have passed; retry a failed
        publication after its backoff; keep the registry backlog draining."""
        await self.start()
        assert self._publisher is not None
        await self._renew_lease()
        if self._publish_due() and self._may_publish():
            await self.publish()
        self._publisher.schedule_flush()

    async def _renew_lease(self) -> None:
        """Renew the single-writer lease every third of its term; if another trainer holds
        it, stop publishing at once and shut down (the other one is the writer now)."""
        if self.writer is None or self.fenced or self._store is None:
            return
        if self._clock() - self._lease_renewed < self.settings.writer_lease_ms / 3000:
            return
        model = self.settings.spec.model.name
        try:
            holder = await self._store.claim_writer(model, self.writer, self.settings.writer_lease_ms)
        except BackendUnavailable as exc:
            log.warning("could not renew the writer lease (nobody else can take it meanwhile): %s", exc)
            return
        if holder == self.writer:
            self._lease_renewed = self._clock()
            return
        self.fenced = True
        log.critical("the writer lease of %s is held by %s: this trainer stops publishing and exits", model, holder)
        self.on_fenced()

    def _publish_due(self) -> bool:
        """A failed publication to retry, ``publish_every_n`` new examples, or anything new
        after ``publish_every_ms``."""
        if self._pending is not None:
            return True
        now = self._clock()
        unpublished = self.trainer.unpublished
        if not self.trainer.model_changed or now < self._next_publish_at:
            return False
        elapsed_ms = (now - self._last_publish) * 1000
        return unpublished >= self.settings.publish_every_n or elapsed_ms >= self.settings.publish_every_ms

    def _may_publish(self) -> bool:
        return self._clock() >= self._retry_at

    async def _snapshot(self, *, checkpoint: bool = False) -> Snapshot:
        """Serialise off the event loop, so health checks and status reads are answered
        meanwhile: a small model in a worker thread while learning waits; a large one (a tree
        of MBs, a forest) in a forked child (see forked.py). Learning goes on while the child
        works only when the timer started the publication: after a batch, the consuming loop
        waits for the whole publication (docs/benchmarks.md, *Learning throughput*)."""
        s = self.settings
        checkpoint = checkpoint or (self._clock() - self._last_checkpoint) * 1000 >= s.checkpoint_every_ms
        job, cost = None, None
        async with self._state_lock:
            started = self._clock()
            meta = self.trainer.next_meta()
            if self._fork_worth_it(checkpoint):
                trainer, signer = self.trainer, self.signer
                try:
                    job = forked.start(lambda: pickle.dumps(trainer.serialise(meta, signer, checkpoint=checkpoint)))
                except OSError as exc:
                    log.warning("cannot fork to serialise v%s, using a thread: %s", meta.version, exc)
            if job is None:
                snapshot, cost = await asyncio.to_thread(self._serialise_timed, meta, checkpoint)
        if job is not None:
            try:
                snapshot = pickle.loads(await asyncio.to_thread(forked.collect, job))  # noqa: S301 - our own child
                self.forked_snapshots += 1
            except forked.ChildFailed as exc:
                log.warning("serialising v%s in a child failed, using a thread: %s", meta.version, exc)
                async with self._state_lock:  # same version number, the state as it is now
                    meta = self.trainer.next_meta(meta.version)
                    snapshot, cost = await asyncio.to_thread(self._serialise_timed, meta, checkpoint)
        if cost is None:  # a forked child: its time, from the fork to its bytes here
            cost = self._clock() - started
        if not checkpoint or self._serialise_s is None:  # what a version costs, not a checkpoint
            self._serialise_s = smoothed(self._serialise_s, cost)
        self._next_publish_at = started + self._serialise_s / s.publish_busy_max
        self._blob_sizes = (
            len(snapshot.model.blob), len(snapshot.checkpoint.blob) if snapshot.checkpoint else self._blob_sizes[1],
        )
        return snapshot

    def _serialise_timed(self, meta: ModelMeta, checkpoint: bool) -> tuple[Snapshot, float]:
        """``Trainer.serialise`` and the CPU time it took: on a busy host the wall time counts
        the time the thread waited for a CPU too, which would hold the next version back."""
        began = self._cpu_clock()
        snapshot = self.trainer.serialise(meta, self.signer, checkpoint=checkpoint)
        self.trainer.learn_on_from(snapshot)
        return snapshot, self._cpu_clock() - began

    def _fork_worth_it(self, checkpoint: bool) -> bool:
        """Sizes, not times, decide: they do not change with the host's load."""
        limit = self.settings.snapshot_fork_above_kb
        expected = self._blob_sizes[0] + (self._blob_sizes[1] if checkpoint else 0)
        return forked.AVAILABLE and limit >= 0 and expected > limit * 1024

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
        """The whole state under the last version's number (its model is that version's)."""
        assert self._store is not None
        async with self._state_lock:
            meta = self.trainer.next_meta(self.trainer.state.version)
            snapshot = await asyncio.to_thread(self.trainer.serialise, meta, self.signer, checkpoint=True)
        assert snapshot.checkpoint is not None
        try:
            await self._store.save_checkpoint(meta.model, snapshot.checkpoint)
        except BackendUnavailable as exc:
            log.warning("could not save the checkpoint of %s: %s", meta.model, exc)
            return
        self._checkpoint_behind = False
        self._checkpointed_offsets = dict(meta.offsets)

    async def publish(self) -> None:
        """Publish a new version, or retry the one that could not be published.

        Never raises: learning goes on while Redis is away, and the checkpoint in Redis stays
        at the last version published, so a restart resumes from there exactly once.
        """
        assert self._publisher is not None
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
                await self._publisher.publish(snapshot)
            except Exception as exc:  # noqa: BLE001 - BackendUnavailable, or anything else: retry later
                self.publish_failures += 1
                self._backoff_s = min(max(self._backoff_s * 2, 0.25), MAX_PUBLISH_BACKOFF_S)
                self._retry_at = self._clock() + self._backoff_s
                log.warning(
                    "publishing v%s failed, retrying the same version in %.2fs: %s",
                    snapshot.meta.version, self._backoff_s, exc if isinstance(exc, BackendUnavailable) else repr(exc),
                )
                return
            self._pending = None
            if snapshot.checkpoint is not None:
                self._last_checkpoint = started
                self._checkpoint_behind = False
                self._checkpointed_offsets = dict(snapshot.meta.offsets)
            else:
                self._checkpoint_behind = True
            self._backoff_s = 0.0
            self._retry_at = 0.0
            # Versions start every publish_every_ms, however long each took to store (from its end,
            # the interval was publish_every_ms plus the publication, 130-330 ms instead of 100).
            self._last_publish = begun
            self.trainer.mark_published(snapshot)
            await self._anchor(snapshot)
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

    async def _dead_letter(self, item: Rejected) -> None:
        """Write ``item`` to the dead-letters topic: once per record for a bad record (the first
        model to reach it writes it), once per model for a failure of this model's learning."""
        assert self._producer is not None
        r = item.record
        if not item.model_specific and not self.dead_letter_claim(r):
            return
        letter = DeadLettered(
            topic=r.topic, partition=r.partition, offset=r.offset,
            key=r.key.decode("utf-8", "replace") if r.key is not None else None,
            value=(r.value or b"").decode("utf-8", "replace")[:65536],
            reason=item.reason[:2000], consumer=f"trainer:{self.trainer.spec.model.name}" if item.model_specific else "trainer",
        )
        self.dead_letters += 1
        log.warning(
            "dead letter %s:%s@%s: %s", r.topic, r.partition, r.offset, item.reason[:300], extra={"event_id": letter.key}
        )
        await self._producer.send_and_wait(self.settings.topics.dead_letters, letter.to_bytes(), key=r.key)

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
            "dead_letters": self.dead_letters,
            "publish_failures": self.publish_failures,
            "snapshots_forked": self.forked_snapshots,
            "publish_pending": self._pending.meta.version if self._pending is not None else None,
            "registry_backlog": self._publisher.registry_backlog if self._publisher is not None else 0,
            "registry_failures": self._publisher.registry_failures if self._publisher is not None else 0,
            "held_back": getattr(self._publisher, "held_back", 0),
            "blobs_pruned": getattr(self._publisher, "pruned", 0),
            "registry_rows_compacted": getattr(self._publisher, "compacted", 0),
            "last_gate": getattr(self._publisher, "last_decision", None),
        }
