"""Ask a river model for a prediction, the same way in the trainer and the predictor."""

from __future__ import annotations

from typing import Any

from streamwise_core.contracts.appspec import Task


def predict(model: Any, task: Task, x: dict[str, Any]) -> tuple[Any, dict[Any, float] | None]:
    """Prediction and, for classifiers, class probabilities (``None`` before any learning)."""
    if task is Task.REGRESSION:
        return model.predict_one(x), None
    proba = model.predict_proba_one(x)
    if not proba:
        return None, None
    return max(proba, key=proba.get), proba


def label_key(label: Any) -> str:
    """A class as a JSON object key: booleans as ``true``/``false``."""
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(label)
