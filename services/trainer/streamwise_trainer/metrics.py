"""Progressive-validation metrics per task: all-time and over a recent window.

Every example costs O(1): all-time figures are running sums (ROC AUC from a fine histogram
of scores), the recent window is a bounded deque of per-example outcomes (and, for ROC AUC, a
histogram kept in step with it), and both are only summarised when a snapshot is taken, with
sums that run in C: every version published and every status read takes one. River's metric
objects cost more per example than the model being scored (a ROC AUC updates ten confusion
matrices; a rolling metric reverts one), which mattered in the trainer's hot loop.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Mapping
from itertools import accumulate, starmap
from operator import eq, itemgetter, mul
from typing import Any

from streamwise_core.contracts.appspec import RECENT_WINDOW, Task

AUC_BINS = 1000
"""Score histogram resolution: ties closer than 1/1000 count as ties (half a pair)."""
_EPS = 1e-15


def _auc(positives: list[int], negatives: list[int]) -> float:
    """Area under the ROC curve from per-bin counts of positive and negative scores: each
    positive beats the negatives of lower bins and ties (half) those of its own."""
    total_pos, total_neg = sum(positives), sum(negatives)
    if not total_pos or not total_neg:
        return 0.5
    below = accumulate(negatives, initial=0)  # negatives in the bins before each bin
    pairs = sum(map(mul, positives, below)) + 0.5 * sum(map(mul, positives, negatives))
    return pairs / (total_pos * total_neg)


def _score_bin(p_true: float) -> int:
    return min(int(p_true * AUC_BINS), AUC_BINS - 1)


def _log_loss(y_true: bool, p_true: float) -> float:
    p = min(max(p_true, _EPS), 1 - _EPS)
    return -math.log(p if y_true else 1 - p)


def _macro_f1(pair_counts: Mapping[tuple[Any, Any], int]) -> float:
    """Mean F1 over every class seen as truth or prediction, from (truth, prediction) counts."""
    tp: dict[Any, int] = {}
    fp: dict[Any, int] = {}
    fn: dict[Any, int] = {}
    for (y_true, y_pred), count in pair_counts.items():
        if y_true == y_pred:
            tp[y_true] = tp.get(y_true, 0) + count
        else:
            fp[y_pred] = fp.get(y_pred, 0) + count
            fn[y_true] = fn.get(y_true, 0) + count
    classes = tp.keys() | fp.keys() | fn.keys()
    if not classes:
        return 0.0
    return sum(
        2 * tp.get(c, 0) / (2 * tp.get(c, 0) + fp.get(c, 0) + fn.get(c, 0)) for c in classes
    ) / len(classes)


class ProgressiveMetrics:
    """Each metric twice: since the start, and over the last ``window`` examples."""

    def __init__(self, task: Task, window: int = RECENT_WINDOW) -> None:
        self.task = task
        self.window = window
        self.scored = 0
        self._recent: deque[tuple[Any, ...]] = deque(maxlen=window)
        # all-time running figures; which ones are used depends on the task
        self._correct = 0
        self._loss_sum = 0.0
        self._sq_sum = 0.0
        self._pos_bins = [0] * AUC_BINS if task is Task.BINARY else []
        self._neg_bins = [0] * AUC_BINS if task is Task.BINARY else []
        self._pairs: dict[tuple[Any, Any], int] = {}
        self._recent_bins = self._bins_of_recent()
        """Positive and negative score histograms of the recent window (binary)."""

    def _bins_of_recent(self) -> tuple[list[int], list[int]]:
        pos, neg = [0] * AUC_BINS, [0] * AUC_BINS
        if self.task is Task.BINARY:
            for _, _, positive, score_bin in self._recent:
                (pos if positive else neg)[score_bin] += 1
        return pos, neg

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "_recent_bins" not in state:  # checkpointed before the window kept its histogram
            self._recent_bins = self._bins_of_recent()

    def update(self, y_true: Any, y_pred: Any, proba: dict[Any, float] | None) -> None:
        """Score one prediction made before learning ``y_true``; no prediction scores nothing."""
        if y_pred is None:
            return
        self.scored += 1
        match self.task:
            case Task.BINARY:
                p_true = proba.get(True, 0.0) if proba else float(y_pred is True)
                correct = y_pred == y_true
                loss = _log_loss(bool(y_true), p_true)
                score_bin = _score_bin(p_true)
                positive = bool(y_true)
                self._correct += correct
                self._loss_sum += loss
                (self._pos_bins if positive else self._neg_bins)[score_bin] += 1
                recent, (recent_pos, recent_neg) = self._recent, self._recent_bins
                if len(recent) == recent.maxlen:
                    _, _, was_positive, old_bin = recent[0]
                    (recent_pos if was_positive else recent_neg)[old_bin] -= 1
                recent.append((correct, loss, positive, score_bin))
                (recent_pos if positive else recent_neg)[score_bin] += 1
            case Task.MULTICLASS:
                self._correct += y_pred == y_true
                self._pairs[(y_true, y_pred)] = self._pairs.get((y_true, y_pred), 0) + 1
                self._recent.append((y_true, y_pred))
            case Task.REGRESSION:
                error = float(y_pred) - float(y_true)
                self._loss_sum += abs(error)
                self._sq_sum += error * error
                self._recent.append((error,))

    def snapshot(self) -> dict[str, float]:
        n, recent = self.scored, self._recent
        k = len(recent)
        match self.task:
            case Task.BINARY:
                return {
                    "accuracy": self._correct / n if n else 0.0,
                    "log_loss": self._loss_sum / n if n else 0.0,
                    "roc_auc": _auc(self._pos_bins, self._neg_bins),
                    "accuracy_recent": sum(map(itemgetter(0), recent)) / k if k else 0.0,
                    "log_loss_recent": sum(map(itemgetter(1), recent)) / k if k else 0.0,
                    "roc_auc_recent": _auc(*self._recent_bins),
                }
            case Task.MULTICLASS:
                return {
                    "accuracy": self._correct / n if n else 0.0,
                    "macro_f1": _macro_f1(self._pairs),
                    "accuracy_recent": sum(starmap(eq, recent)) / k if k else 0.0,
                    "macro_f1_recent": _macro_f1(Counter(recent)),
                }
            case Task.REGRESSION:
                return {
                    "mae": self._loss_sum / n if n else 0.0,
                    "rmse": math.sqrt(self._sq_sum / n) if n else 0.0,
                    "mae_recent": sum(abs(e) for (e,) in recent) / k if k else 0.0,
                    "rmse_recent": math.sqrt(sum(e * e for (e,) in recent) / k) if k else 0.0,
                }
        raise ValueError(self.task)
