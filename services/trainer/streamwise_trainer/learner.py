"""Predict, score, then learn: progressive validation of one river model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streamwise_core.appspec import Task
from streamwise_core.inference import predict

from .metrics import ProgressiveMetrics


@dataclass(frozen=True)
class Outcome:
    """The prediction made for an example just before the model learned it."""

    y_true: Any
    y_pred: Any
    proba: dict[Any, float] | None


class OnlineLearner:
    """A river model with its progressive-validation metrics."""

    def __init__(self, model: Any, task: Task) -> None:
        self.model = model
        self.task = task
        self.metrics = ProgressiveMetrics(task)
        self.examples_seen = 0

    def learn(self, x: dict[str, Any], y: Any) -> Outcome:
        """Predict first, update the metrics with that prediction, then learn."""
        y_pred, proba = predict(self.model, self.task, x)
        self.metrics.update(y, y_pred, proba)
        self.model.learn_one(x, y)
        self.examples_seen += 1
        return Outcome(y, y_pred, proba)
