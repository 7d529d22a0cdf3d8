"""Progressive-validation metrics per task: all-time and over a recent window."""

from __future__ import annotations

from typing import Any

from river import metrics, utils

from streamwise_core.appspec import RECENT_WINDOW, Task

# ROC AUC keeps a confusion matrix per threshold: all-time only, since a rolling window
# would revert all of them on every example and dominate the trainer's hot loop.
_NOT_ROLLED = {"roc_auc"}


def _metric_set(task: Task) -> dict[str, type[metrics.base.Metric]]:
    match task:
        case Task.BINARY:
            return {"accuracy": metrics.Accuracy, "log_loss": metrics.LogLoss, "roc_auc": metrics.ROCAUC}
        case Task.MULTICLASS:
            return {"accuracy": metrics.Accuracy, "macro_f1": metrics.MacroF1}
        case Task.REGRESSION:
            return {"mae": metrics.MAE, "rmse": metrics.RMSE}
    raise ValueError(task)


class ProgressiveMetrics:
    """Each metric twice: since the start, and over the last ``window`` examples."""

    def __init__(self, task: Task, window: int = RECENT_WINDOW) -> None:
        self.task = task
        classes = _metric_set(task)
        self._all: dict[str, Any] = {name: cls() for name, cls in classes.items()}
        self._recent: dict[str, Any] = {
            name: utils.Rolling(cls, window_size=window) for name, cls in classes.items() if name not in _NOT_ROLLED
        }
        # (metric, wants probabilities) pairs, worked out once instead of per example.
        self._updates = [
            (m, not getattr(getattr(m, "obj", m), "requires_labels", True))
            for m in (*self._all.values(), *self._recent.values())
        ]

    def update(self, y_true: Any, y_pred: Any, proba: dict[Any, float] | None) -> None:
        for metric, wants_proba in self._updates:
            if wants_proba and proba is not None:
                metric.update(y_true, proba)
            elif y_pred is not None:
                metric.update(y_true, y_pred)

    def snapshot(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, metric in self._all.items():
            out[name] = float(metric.get())
        for name, metric in self._recent.items():
            out[f"{name}_recent"] = float(metric.get())
        return out
