"""The validation gate: does a new version deserve to replace the one being served? (pure)

The trainer asks once per publication. By default the candidate and a served version are
compared on the same recent examples (``SameExamples``: the trainer scores served versions
beside the learner, see its ``anchors.py``); with ``compare = "publish"`` the candidate's recent
progressive-validation value (``<metric>_recent``) is compared with the value the served version
had when it was published. Bounded scores (accuracy, ROC AUC, F1) use an absolute tolerance;
errors and losses (MAE, RMSE, log loss), whose scale depends on the data, a relative one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from pydantic import BaseModel, Field

from streamwise_core.contracts.appspec import Task, primary_metric

HIGHER_IS_BETTER = frozenset({"accuracy", "roc_auc", "macro_f1"})
LOWER_IS_BETTER = frozenset({"log_loss", "mae", "rmse"})

Status = Literal["served", "held_back"]
SERVED: Final = "served"
HELD_BACK: Final = "held_back"


class GateSettings(BaseModel):
    """``STREAMWISE_GATE__ENABLED``, ``__TOLERANCE``, ``__MIN_EXAMPLES``, ``__METRIC``."""

    enabled: bool = False
    """Off in the library (tests, benchmarks of the bare loop); on in ``./streamwise up``,
    compose and Kubernetes. Comparing on the same examples costs the trainer about one more
    prediction per ``sample_every`` examples (a third of a linear model's throughput at 2)."""
    tolerance: float = Field(default=0.02, ge=0.0)
    """How much worse a candidate may be: absolute for scores in [0, 1], relative for errors."""
    min_examples: int = Field(default=1000, ge=0)
    """Both versions must have learned this many examples before the gate applies."""
    metric: str | None = None
    """The metric compared (without ``_recent``); default: the task's primary metric."""
    compare: Literal["same", "publish"] = "same"
    """``same``: on the same recent examples (the trainer scores an anchor, a served version
    kept frozen, beside the learner: see the trainer's ``anchors.py``), for the primary metric.
    ``publish``: the served version's value at its own publication (cheaper, but after a drift
    every new version looks worse)."""
    sample_every: int = Field(default=2, ge=1)
    """With ``same``: anchors predict one example in this many (each costs a prediction or two)."""


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


@dataclass(frozen=True)
class SameExamples:
    """The candidate (the learner's progressive predictions) and a served version, on the
    same recent examples: how many, and both mean errors (0/1 loss, or absolute error)."""

    served_version: int
    examples: int
    candidate_error: float
    served_error: float


def decide(
    task: Task, candidate_metrics: Mapping[str, float], candidate_examples: int,
    served_metrics: Mapping[str, float] | None, served_examples: int, settings: GateSettings,
    same: SameExamples | None = None,
) -> GateDecision:
    """Serve the candidate, or hold it back with the reason.

    Compared at publication (``compare="publish"``), on each version's recent accuracy:

    >>> at_publication = GateSettings(enabled=True, compare="publish", tolerance=0.02, min_examples=1000)
    >>> served = {"accuracy_recent": 0.95}
    >>> decide(Task.BINARY, {"accuracy_recent": 0.94}, 5000, served, 4000, at_publication).status
    'served'
    >>> held = decide(Task.BINARY, {"accuracy_recent": 0.90}, 5000, served, 4000, at_publication)
    >>> held.status, held.reason
    ('held_back', 'accuracy_recent 0.9000 is worse than served 0.9500 by more than 0.02')
    >>> decide(Task.BINARY, {"accuracy_recent": 0.5}, 5000, None, 0, at_publication).reason
    'nothing served yet'
    """
    base = settings.metric or primary_metric(task)
    key = f"{base}_recent"
    if not settings.enabled:
        return GateDecision(True, "gate disabled", key)
    if served_metrics is None:
        return GateDecision(True, "nothing served yet", key)
    if settings.compare == "same" and base == primary_metric(task):
        return _decide_same(task, base, same, settings)
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


def _decide_same(task: Task, base: str, same: SameExamples | None, settings: GateSettings) -> GateDecision:
    """Compare on the same examples: accuracy with an absolute tolerance, MAE a relative one."""
    if same is None or same.examples < settings.min_examples:
        have = same.examples if same is not None else 0
        return GateDecision(
            True, f"{have} of {settings.min_examples} examples scored by both: gate not applied yet", base,
            details={"compare": "same", "common_examples": have},
        )
    details: dict[str, object] = {
        "compare": "same", "common_examples": same.examples, "anchor_version": same.served_version,
        "tolerance": settings.tolerance,
    }
    tol = settings.tolerance
    if task is Task.REGRESSION:
        new, old = same.candidate_error, same.served_error
        ok = new <= (old * (1 + tol) if old > 0 else tol)
        verdict = f"mae {new:.4f} vs v{same.served_version}'s {old:.4f} on the same {same.examples} examples"
        return GateDecision(ok, verdict if ok else f"{verdict}: worse by more than {tol:.0%}", base, new, old, details)
    new, old = 1 - same.candidate_error, 1 - same.served_error
    ok = new >= old - tol
    verdict = f"accuracy {new:.4f} vs v{same.served_version}'s {old:.4f} on the same {same.examples} examples"
    return GateDecision(ok, verdict if ok else f"{verdict}: worse by more than {tol}", base, new, old, details)
