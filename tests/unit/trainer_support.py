"""A trainer runtime without Kafka or Redis, for unit tests of what it decides."""

from __future__ import annotations

import asyncio
import json
import weakref
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamwise_core.adapters.memory_store import MemoryModelStore
from streamwise_core.contracts.events import EventReceived
from streamwise_core.contracts.signing import Signer
from streamwise_devstack.fraud import FraudStream
from streamwise_trainer.dead_letters import DeadLetterSink
from streamwise_trainer.learning import Record, Snapshot, Trainer
from streamwise_trainer.lease import WriterLease
from streamwise_trainer.runtime import TrainerClients, TrainerRuntime
from streamwise_trainer.settings import TrainerSettings

ROOT = Path(__file__).resolve().parents[2]
SIGNER = Signer({"k1": b"unit-test-signing-key-0123456789"})
MODEL = "fraud-lr"


class FakePublisher:
    """Records what the runtime publishes (``Publisher`` is tested against Redis and SQL)."""

    registry_backlog = 0
    registry_failures = 0
    held_back = 0
    pruned = 0
    compacted = 0
    last_decision: dict[str, object] | None = None

    def __init__(self) -> None:
        self.published: list[int] = []
        self.published_with_checkpoint: list[tuple[int, bool]] = []

    def schedule_flush(self) -> None:
        return None

    async def deliver(self, snapshot: Snapshot) -> None:
        self.published.append(snapshot.meta.version)
        self.published_with_checkpoint.append((snapshot.meta.version, snapshot.checkpoint is not None))

    async def close(self) -> None:
        return None


class DeadLetters:
    """What the runtime sends to the dead-letters topic."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None) -> None:
        self.sent.append(json.loads(value))


def checkpoint_versions(store: MemoryModelStore, model: str = MODEL) -> int | None:
    """The version the stored checkpoint was saved with."""
    from streamwise_core.contracts.codec import ModelMeta

    signed = asyncio.run(store.load_checkpoint(model))
    return ModelMeta.model_validate_json(signed.meta).version if signed is not None else None


def trainer_settings(**changes: Any) -> TrainerSettings:
    return TrainerSettings(app_spec=ROOT / "examples" / "fraud" / "streamwise.toml", _env_file=None, **changes)  # type: ignore[call-arg]


class FakeClock:
    """A clock that moves only when a test moves it: what the runtime decides, not how fast the host is."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Clients:
    """The fakes a runtime built by ``runtime_without_clients`` writes to."""

    def __init__(self) -> None:
        self.publisher = FakePublisher()
        self.store = MemoryModelStore()
        self.dead_letters = DeadLetters()


def runtime_without_clients(
    *, clock: FakeClock | None = None, cpu_clock: FakeClock | None = None, fakes: Clients | None = None,
    lease_holder: str | None = None, on_fenced: Any = None, claim: Any = None, settings: TrainerSettings | None = None,
    **changes: Any,
) -> TrainerRuntime:
    """A runtime on fake clocks (wall and CPU) and in-memory clients: time passes only when the
    test advances the clocks; what is published, saved and dead-lettered is kept in ``fakes``."""
    settings = settings or trainer_settings(**changes)
    clock = clock or FakeClock()
    fakes = fakes or Clients()
    lease = None
    if lease_holder is not None:
        lease = WriterLease(
            fakes.store, settings.spec.model.name, lease_holder, settings.writer_lease_ms,
            on_fenced=on_fenced or (lambda: None), clock=clock,
        )
    sink = DeadLetterSink(fakes.dead_letters.send, settings.topics.dead_letters, settings.spec.model.name,
                          **({"claim": claim} if claim is not None else {}))
    runtime = TrainerRuntime(
        settings, Trainer(settings.spec, settings.topics), SIGNER, clock=clock, cpu_clock=cpu_clock or FakeClock(),
        clients=TrainerClients(fakes.publisher, fakes.store, sink, lease),
    )
    _FAKES[runtime] = fakes
    return runtime


_FAKES: weakref.WeakKeyDictionary[TrainerRuntime, Clients] = weakref.WeakKeyDictionary()


def fakes_of(runtime: TrainerRuntime) -> Clients:
    """The fakes of a runtime built by ``runtime_without_clients``."""
    return _FAKES[runtime]


def records(runtime: TrainerRuntime, n: int, start: int = 0) -> list[Record]:
    topic = runtime.settings.topics.events
    out = []
    for i, g in enumerate(FraudStream(seed=3, drift_at=10**9).take(start + n)[start:], start):
        value_ = EventReceived(id=g.id, features=g.features, label=g.label, timestamp=datetime.now(UTC)).to_bytes()
        out.append(Record(topic, 0, i, g.id.encode(), value_))
    return out


def learn_scored(learner: Any, x: dict[str, Any], y: Any) -> Any:
    """One example as the trainer treats it: predict, learn, then score the prediction."""
    outcome = learner.predict_then_learn(x, y)
    learner.metrics.update(y, outcome.y_pred, outcome.proba)
    return outcome
