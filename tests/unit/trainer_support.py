"""A trainer runtime without Kafka or Redis, for unit tests of what it decides."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamwise_core.events import EventReceived
from streamwise_core.signing import Signer
from streamwise_devstack.fraud import FraudStream
from streamwise_trainer.learning import Record, Snapshot, Trainer
from streamwise_trainer.runtime import TrainerRuntime
from streamwise_trainer.settings import TrainerSettings

ROOT = Path(__file__).resolve().parents[2]
SIGNER = Signer({"k1": b"unit-test-signing-key-0123456789"})
MODEL = "fraud-lr"


class FakePublisher:
    registry_backlog = 0
    registry_failures = 0

    def __init__(self) -> None:
        self.published: list[int] = []
        self.published_with_checkpoint: list[tuple[int, bool]] = []

    def schedule_flush(self) -> None:
        return None

    async def publish(self, snapshot: Snapshot) -> None:
        self.published.append(snapshot.meta.version)
        self.published_with_checkpoint.append((snapshot.meta.version, snapshot.checkpoint is not None))


class FakeStore:
    """What the runtime writes to the model store besides publishing: checkpoints saved alone."""

    def __init__(self) -> None:
        self.checkpoints: list[int] = []

    async def save_checkpoint(self, model: str, signed: Any) -> None:
        from streamwise_core.codec import ModelMeta

        self.checkpoints.append(ModelMeta.model_validate_json(signed.meta).version)


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


def runtime_without_clients(*, clock: FakeClock | None = None, cpu_clock: FakeClock | None = None, **changes: Any) -> TrainerRuntime:
    """A runtime on fake clocks (wall and CPU): time passes only when the test advances them."""
    settings = trainer_settings(**changes)
    runtime = TrainerRuntime(
        settings, Trainer(settings.spec, settings.topics), SIGNER, clock=clock or FakeClock(), cpu_clock=cpu_clock or FakeClock(),
    )
    runtime._started = True  # clients are never used below: no Kafka, no Redis
    runtime._publisher = FakePublisher()  # type: ignore[assignment]
    runtime._store = FakeStore()  # type: ignore[assignment]
    return runtime


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
