"""Drift detection on a model's error stream (pure, checkpointed with the trainer's state)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from river import drift

from streamwise_core.contracts.appspec import DriftSpec
from streamwise_core.contracts.events import utcnow


@dataclass(frozen=True)
class Drift:
    """A change detected in the error stream: when, where in the topics, and the error
    estimated by the detector after the change."""

    examples_seen: int
    offsets: dict[str, int]
    detected_at: datetime
    error_after: float
    detector: str
    action: str


@dataclass
class DriftMonitor:
    """ADWIN over the per-example error; after a detection (or the start) it waits ``grace``
    examples before it can fire again, so one change is reported once."""

    spec: DriftSpec
    detector: drift.ADWIN = field(init=False)
    quiet_until: int = field(init=False)
    detected: int = 0

    def __post_init__(self) -> None:
        self.detector = drift.ADWIN(delta=self.spec.delta)
        self.quiet_until = self.spec.grace

    def update(self, error: float, examples_seen: int, offsets: Callable[[], Mapping[str, int]]) -> Drift | None:
        """Watch one more error; ``offsets`` tells where the stream is, asked only on a drift."""
        self.detector.update(error)
        if not self.detector.drift_detected or examples_seen < self.quiet_until:
            return None
        self.detected += 1
        self.quiet_until = examples_seen + self.spec.grace
        return Drift(
            examples_seen=examples_seen, offsets=dict(offsets()), detected_at=utcnow(),
            error_after=float(self.detector.estimation), detector=f"adwin(delta={self.spec.delta})",
            action=self.spec.action,
        )


def drift_monitor(spec: DriftSpec) -> DriftMonitor | None:
    return None if spec.detector == "none" else DriftMonitor(spec)
