"""Progressive-validation metrics per task: all-time and over a recent window."""

from __future__ import annotations

from typing import Any

from river import metrics, utils

from streamwise_core.appspec import RECENT_WINDOW, Task

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
        self._all: dict[str, Any] = {name: cls() for name, cls in _metric_set(task).items()}
        self._recent = {name: utils.Rolling(cls, window_size=window) for name, cls in _metric_set(task).items()}

    def update(self, y_true: Any, y_pred: Any, proba: dict[Any, float] | None) -> None:
        for group in (self._all, self._recent):
            for metric in group.values():
                target = getattr(metric, "obj", metric)
                if getattr(target, "requires_labels", True) or proba is None:
                    if y_pred is not None:
                        metric.update(y_true, y_pred)
                else:
                    metric.update(y_true, proba)

    def snapshot(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, metric in self._all.items():
            out[name] = float(metric.get())
        for name, metric in self._recent.items():
            out[f"{name}_recent"] = float(metric.get())
        return out
