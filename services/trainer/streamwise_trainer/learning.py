"""The trainer's state machine: records in, examples learned, snapshots out. No I/O."""

from __future__ import annotations

import hashlib
import pickle
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Protocol

from pydantic import ValidationError

from streamwise_core.adapters.settings import Topics
from streamwise_core.contracts.appspec import AppSpec
from streamwise_core.contracts.codec import ModelMeta, SignedBlob, pack, unpack
from streamwise_core.contracts.events import event_fields, label_fields
from streamwise_core.contracts.schema import validator
from streamwise_core.contracts.signing import Signer

from .anchors import GateAnchors
from .drift import Drift, DriftMonitor, drift_monitor
from .join import Example, LabelJoin
from .learner import Learner, OnlineLearner, Outcome, embedding_model, make_learner


class ConsumedRecord(Protocol):
    """What the trainer reads of a Kafka message: aiokafka's ``ConsumerRecord`` as fetched
    (copying each into a ``Record`` cost ~5 µs per record), or a ``Record``."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True)
class Record:
    """One Kafka message, as the trainer needs it (tests and replays build these)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class Rejected:
    """A record that could not be learned from, and why; it goes to dead letters."""

    record: ConsumedRecord
    reason: str
    model_specific: bool = False
    """Only this model failed on it (its learning raised); otherwise the record itself is bad,
    for every model alike."""


@dataclass
class TrainerState:
    """Everything a checkpoint holds; restoring it resumes exactly where it stopped."""

    learner: Learner
    join: LabelJoin
    offsets: dict[str, int] = field(default_factory=dict)
    version: int = 0
    published_examples: int = 0
    published_changes: int = 0
    """The learner's ``changes`` when the last version was serialised."""
    recent_ids: OrderedDict[str, None] = field(default_factory=OrderedDict)
    """Ids of the examples learned most recently: a redelivered event is not learned twice."""
    duplicates: int = 0
    learned_digest: str = ""
    """A hash chain over the ids learned, in order: equal digests mean equal histories."""
    drift: DriftMonitor | None = None
    drifts: list[Drift] = field(default_factory=list)
    """Drifts detected and not yet handed to the runtime (which records and acts on them)."""


@dataclass(frozen=True)
class Snapshot:
    meta: ModelMeta
    model: SignedBlob
    checkpoint: SignedBlob | None
    changes: int = 0
    """The learner's ``changes`` when it was serialised."""


def position_key(topic: str, partition: int) -> str:
    """How checkpoints name a partition: ``topic:partition``."""
    return f"{topic}:{partition}"


class Trainer:
    """Consumes events and labels; the single writer of one model."""

    def __init__(
        self, spec: AppSpec, topics: Topics, state: TrainerState | None = None, *,
        join_capacity: int = 100_000, dedupe_window: int = 20_000,
    ) -> None:
        self.spec = spec
        self.topics = topics
        self.dedupe_window = dedupe_window
        self.state = state or TrainerState(
            learner=make_learner(spec), join=LabelJoin(join_capacity), drift=drift_monitor(spec.model.drift),
        )
        self.skipped = 0
        self._read_input = validator(spec)
        self.anchors: GateAnchors | None = None
        """Served versions scored beside the learner for the validation gate (runtime state,
        not checkpointed: rebuilt from the versions served after a restart)."""
        self.on_scored: Callable[[str, float], None] | None = None
        """Told each example's id and error as it is learned (the champion/challenger scoreboard)."""
        self._learning: tuple[dict[str, int], Sequence[ConsumedRecord], int] = ({}, (), -1)
        """The offsets before the records being learned, those records, and the one being learned."""

    @property
    def examples_seen(self) -> int:
        return self.state.learner.examples_seen

    @property
    def unpublished(self) -> int:
        """Examples learned since the last version."""
        return self.examples_seen - self.state.published_examples

    @property
    def model_changed(self) -> bool:
        """Whether the model changed since the last version (a retrained model changes only when
        it is refitted): without a change there is no new version."""
        return self.state.learner.changes != self.state.published_changes

    def handle(self, record: ConsumedRecord) -> Rejected | None:
        """Learn what ``record`` completes; skip what the checkpoint already holds."""
        rejected = self.handle_many((record,))
        return rejected[0] if rejected else None

    def handle_many(self, records: Sequence[ConsumedRecord]) -> list[Rejected]:
        """``handle`` each record, in order, with the same outcome, in three passes: every record
        is read, joined and checked for redelivery; then the examples are learned (predict, then
        learn); then the predictions are scored (metrics, drift, scoreboard, history digest).

        The same instructions run faster than one record at a time through all of it: the CPU's
        caches and branch predictors hold one loop's code (decoding, river's model, or scoring)
        instead of all of them. A drift that resets the model is watched while learning, so the
        reset comes at the same example.
        """
        offsets = self.state.offsets
        before = dict(offsets) if self.state.drift is not None else {}
        rejected: list[tuple[int, Rejected]] = []
        examples: list[tuple[int, Example]] = []
        for index, record in enumerate(records):
            tp = position_key(record.topic, record.partition)
            if record.offset <= offsets.get(tp, -1):
                self.skipped += 1
                continue
            offsets[tp] = record.offset
            try:
                outcome = self._read(record)
            except ValidationError as exc:
                outcome = Rejected(record, f"undecodable: {exc.errors(include_url=False)[:3]}")
            except Exception as exc:  # noqa: BLE001 - a poison record must never stop learning
                outcome = Rejected(record, f"cannot learn: {exc!r}")
            if type(outcome) is Example:
                if self._first_time(outcome.id):
                    examples.append((index, outcome))
            elif outcome is not None:
                rejected.append((index, outcome))  # type: ignore[arg-type]  # `type() is` (the hot path) does not narrow
        if examples:
            self._learn_all(before, records, examples, rejected)
        return [problem for _, problem in rejected]

    def _learn_all(
        self, before: dict[str, int], records: Sequence[ConsumedRecord], examples: list[tuple[int, Example]],
        rejected: list[tuple[int, Rejected]],
    ) -> None:
        state = self.state
        learner = state.learner
        task = self.spec.task
        resets = state.drift is not None and state.drift.spec.action == "reset"
        seen_before = learner.examples_seen
        learned: list[tuple[int, Example, Outcome]] = []
        for index, example in examples:
            try:
                outcome = learner.predict_then_learn(example.x, example.y)
            except Exception as exc:  # noqa: BLE001 - a poison record must never stop learning
                rejected.append((index, Rejected(records[index], f"cannot learn: {exc!r}", model_specific=True)))
                continue
            learned.append((index, example, outcome))
            if resets:  # the reset must come before the next example is learned
                self._learning = (before, records, index)
                self._watch_drift(outcome.error(task), learner.examples_seen)
        if len(learned) < len(examples):
            rejected.sort(key=itemgetter(0))
        self._score_all(before, records, learned, seen_before, watch_drift=state.drift is not None and not resets)

    def _score_all(
        self, before: dict[str, int], records: Sequence[ConsumedRecord], learned: list[tuple[int, Example, Outcome]],
        seen_before: int, *, watch_drift: bool,
    ) -> None:
        state = self.state
        task = self.spec.task
        update = state.learner.metrics.update
        on_scored, anchors = self.on_scored, self.anchors
        errors_needed = watch_drift or on_scored is not None or anchors is not None
        digest = state.learned_digest
        for position, (index, example, outcome) in enumerate(learned, 1):
            update(outcome.y_true, outcome.y_pred, outcome.proba)
            if errors_needed:
                error = outcome.error(task)
                if on_scored is not None:
                    on_scored(example.id, error)
                if anchors is not None:
                    anchors.score(example.x, example.y, error)
                if watch_drift:
                    self._learning = (before, records, index)
                    self._watch_drift(error, seen_before + position)
            digest = hashlib.blake2b(f"{digest}{example.id}".encode(), digest_size=16).hexdigest()
        state.learned_digest = digest

    def _offsets_when_learned(self) -> dict[str, int]:
        """The offsets as they were right after the record being learned (drift reports say
        where in the topics a change was found)."""
        start, records, index = self._learning
        offsets = dict(start)
        for record in records[: index + 1]:
            tp = position_key(record.topic, record.partition)
            offsets[tp] = max(offsets.get(tp, -1), record.offset)
        return offsets

    def _read(self, record: ConsumedRecord) -> Example | Rejected | None:
        """The example ``record`` completes, why it cannot be learned, or ``None`` (it waits)."""
        if record.value is None:
            return Rejected(record, "empty message")
        if record.topic == self.topics.events:
            return self._on_event(record)
        if record.topic == self.topics.labels:
            return self._on_label(record)
        return Rejected(record, f"unexpected topic {record.topic}")

    def _on_event(self, record: ConsumedRecord) -> Example | Rejected | None:
        event_id, features, label = event_fields(record.value or b"")
        x = self._read_input(features)
        if isinstance(x, list):
            return Rejected(record, f"features do not match the schema: {x[:3]}")
        if label is not None and (problem := self._read_input.label_error(label)):
            return Rejected(record, f"label: {problem}")
        return self.state.join.on_event(event_id, x, label)

    def _on_label(self, record: ConsumedRecord) -> Example | Rejected | None:
        event_id, label = label_fields(record.value or b"")
        if problem := self._read_input.label_error(label):
            return Rejected(record, f"label: {problem}")
        return self.state.join.on_label(event_id, label)

    def _first_time(self, example_id: str) -> bool:
        """Whether ``example_id`` is not among the ids learned most recently (a redelivery)."""
        recent = self.state.recent_ids
        if example_id in recent:
            self.state.duplicates += 1
            return False
        recent[example_id] = None
        if len(recent) > self.dedupe_window:
            recent.popitem(last=False)
        return True

    def _watch_drift(self, error: float, examples_seen: int) -> None:
        state = self.state
        assert state.drift is not None
        found = state.drift.update(error, examples_seen, self._offsets_when_learned)
        if found is None:
            return
        state.drifts.append(found)
        if found.action == "reset":
            state.learner.reset()

    def take_drifts(self) -> list[Drift]:
        """Drifts detected since the last call."""
        found, self.state.drifts = self.state.drifts, []
        return found

    def snapshot(self, signer: Signer, *, checkpoint: bool = True) -> Snapshot:
        """Sign the model as the next version, with a checkpoint of the whole state if asked.

        Checkpoints cost far more than the model for some pipelines (a linear model is a few
        kB, its checkpoint holds the dedupe window and the join buffers), so the runtime
        takes them less often; a restart then replays a little more, still exactly once.
        """
        return self.serialise(self.next_meta(), signer, checkpoint=checkpoint)

    def next_meta(self, version: int | None = None) -> ModelMeta:
        """The metadata of the next version (or of ``version`` again), as the state is now."""
        if version is None:
            self.state.version += 1
            version = self.state.version
        return ModelMeta(
            app=self.spec.name,
            model=self.spec.model.name,
            version=version,
            task=self.spec.task.value,
            classes=list(self.spec.classes) if self.spec.classes else None,
            examples_seen=self.examples_seen,
            metrics=self.state.learner.metrics.snapshot(),
            offsets=dict(self.state.offsets),
        )

    def serialise(self, meta: ModelMeta, signer: Signer, *, checkpoint: bool) -> Snapshot:
        """The model (and the whole state) as they are now, signed with ``meta``; pure, so it
        may run in a worker thread or a forked child while nothing else changes the state."""
        model = pack(self.state.learner.model, meta, signer)
        state = pack(self.state, meta, signer, reducers=embedding_model(model.blob)) if checkpoint else None
        # The registry records the served blob's digest, which pack() filled in.
        return Snapshot(ModelMeta.model_validate_json(model.meta), model, state, self.state.learner.changes)

    def learn_on_from(self, snapshot: Snapshot) -> None:
        """Go on learning with the copy of the model that ``snapshot`` holds, equal to the one it
        was pickled from. Pickling asked each object of the model for its ``__dict__``, which
        CPython 3.11 never specialises method calls on again: with a version every 800 examples the
        tree learned with ~16 % more instructions per example, with its copies (loaded by
        ``codec``'s attribute setter) ~4 %, the loading included. Call it only while nothing has learned since ``serialise``."""
        learner = self.state.learner
        if isinstance(learner, OnlineLearner):
            learner.model = pickle.loads(snapshot.model.blob)  # noqa: S301 - the bytes this process just pickled

    def mark_published(self, snapshot: Snapshot) -> None:
        self.state.published_examples = snapshot.meta.examples_seen
        self.state.published_changes = snapshot.changes

    @classmethod
    def restore(
        cls, spec: AppSpec, topics: Topics, checkpoint: SignedBlob, signer: Signer, *,
        dedupe_window: int = 20_000, published_version: int | None = None,
    ) -> Trainer:
        """A trainer that continues from a verified checkpoint.

        Versions published after the checkpoint keep their numbers: the next version is
        numbered after ``published_version`` so served versions only ever go up.
        """
        _, state = unpack(checkpoint, signer)
        if not isinstance(state, TrainerState):
            raise TypeError("checkpoint does not hold a TrainerState")
        state.version = max(state.version, published_version or 0)
        # A checkpoint is stored with the version of its model (or with the last version, when
        # the model had not changed since): that model is published already.
        state.published_examples = state.learner.examples_seen
        state.published_changes = state.learner.changes
        return cls(spec, topics, state, dedupe_window=dedupe_window)
