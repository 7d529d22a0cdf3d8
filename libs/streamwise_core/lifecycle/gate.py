"""The validation gate: does a new version deserve to replace the one being served? (pure)

The trainer asks once per publication. The candidate's recent progressive-validation value of
the task's primary metric (``<metric>_recent``) is compared with the value the served version
had when it was published. Bounded scores (accuracy, ROC AUC, F1) use an absolute tolerance;
errors and losses (MAE, RMSE, log loss), whose scale depends on the data, a relative one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, Field

from ..appspec import Task, primary_metric

HIGHER_IS_BETTER = frozenset({"accuracy", "roc_auc", "macro_f1"})
LOWER_IS_BETTER = frozenset({"log_loss", "mae", "rmse"})

SERVED = "served"
HELD_BACK = "held_back"
Status = Literal["served", "held_back"]


class GateSettings(BaseModel):
    """``STREAMWISE_GATE__ENABLED``, ``__TOLERANCE``, ``__MIN_EXAMPLES``, ``__METRIC``."""

    enabled: bool = False
    """Off by default: the served version's value dates from its publication, so after a
    concept drift every new version would look worse and the loop would stop serving what it
    learns. Turn it on where a held-back version is better than a fresh one, until shadow
    scoring compares both versions on the same recent window."""
    tolerance: float = Field(default=0.02, ge=0.0)
    """How much worse a candidate may be: absolute for scores in [0, 1], relative for errors."""
    min_examples: int = Field(default=1000, ge=0)
    """Both versions must have learned this many examples before the gate applies."""
    metric: str | None = None
    """The metric compared (without ``_recent``); default: the task's primary metric."""


@dataclass(frozen=True)
class GateDecision:
    serve: bool
    reason: str
    metric: str
    candidate: float | None = None
    served: float | None = None
    details: dict[str, object] = field(default_factory=dict)

    @property
    def status(self) -> Status:
        return SERVED if self.serve else HELD_BACK

    def as_dict(self) -> dict[str, object]:
        return {
            "status": self.status, "reason": self.reason, "metric": self.metric,
            "candidate": self.candidate, "served": self.served, **self.details,
        }


def higher_is_better(metric: str) -> bool:
    base = metric.removesuffix("_recent")
    if base in HIGHER_IS_BETTER:
        return True
    if base in LOWER_IS_BETTER:
        return False
    raise ValueError(f"unknown metric direction: {metric}")


def decide(
    task: Task, candidate_metrics: Mapping[str, float], candidate_examples: int,
    served_metrics: Mapping[str, float] | None, served_examples: int, settings: GateSettings,
) -> GateDecision:
    """Serve the candidate, or hold it back with the reason."""
    base = settings.metric or primary_metric(task)
    key = f"{base}_recent"
    if not settings.enabled:
        return GateDecision(True, "gate disabled", key)
    if served_metrics is None:
        return GateDecision(True, "nothing served yet", key)
    if candidate_examples < settings.min_examples or served_examples < settings.min_examples:
        return GateDecision(
            True, f"fewer than {settings.min_examples} examples: gate not applied", key,
            details={"candidate_examples": candidate_examples, "served_examples": served_examples},
        )
    new, old = candidate_metrics.get(key), served_metrics.get(key)
    if old is None or not math.isfinite(old):
        return GateDecision(True, f"served version has no {key}", key, new, old)
    if new is None or not math.isfinite(new):
        return GateDecision(False, f"candidate has no finite {key}", key, new, old)
    tol = settings.tolerance
    if higher_is_better(key):
        floor = old - tol
        if new >= floor:
            return GateDecision(True, f"{key} {new:.4f} >= {old:.4f} - {tol}", key, new, old, {"tolerance": tol})
        return GateDecision(
            False, f"{key} {new:.4f} is worse than served {old:.4f} by more than {tol}", key, new, old,
            {"tolerance": tol},
        )
    ceiling = old * (1 + tol) if old > 0 else tol
    if new <= ceiling:
        return GateDecision(True, f"{key} {new:.4f} <= {old:.4f} x (1 + {tol})", key, new, old, {"tolerance": tol})
    return GateDecision(
        False, f"{key} {new:.4f} is worse than served {old:.4f} by more than {tol:.0%}", key, new, old,
        {"tolerance": tol},
    )
