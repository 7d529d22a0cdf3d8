"""Predict, score, then learn: progressive validation of one model, online or retrained."""

from __future__ import annotations

import pickle
from collections import deque
from typing import Any, NamedTuple, Protocol

from streamwise_core.contracts.appspec import AppSpec, Task
from streamwise_core.contracts.codec import Reducers, reduce_without
from streamwise_core.domain.inference import predict
from streamwise_core.domain.pipeline import build_model
from streamwise_core.domain.progressive import PredictThenLearn
from streamwise_core.domain.retrain import BatchModel, build_estimator

from .metrics import ProgressiveMetrics


class Outcome(NamedTuple):
    """The prediction made for an example just before the model learned it (a tuple: made
    once per example)."""

    y_true: Any
    y_pred: Any
    proba: dict[Any, float] | None

    def error(self, task: Task) -> float:
        return prediction_error(task, self.y_true, self.y_pred)


def prediction_error(task: Task, y_true: Any, y_pred: Any) -> float:
    """0 or 1 for a classifier, the absolute error for a regressor: what drift detectors watch,
    challengers are compared on, and the gate's anchors are scored with."""
    if task is Task.REGRESSION:
        return abs(float(y_true) - float(y_pred or 0.0))
    return 0.0 if y_pred == y_true else 1.0


class Learner(Protocol):
    model: Any
    task: Task
    metrics: ProgressiveMetrics
    examples_seen: int

    @property
    def changes(self) -> int:
        """How many times the model changed: a version is published only when it did."""
        ...

    def predict_then_learn(self, x: dict[str, Any], y: Any) -> Outcome: ...

    def reset(self) -> None: ...


class OnlineLearner:
    """A river model with its progressive-validation metrics."""

    _step: PredictThenLearn | None = None
    """The single pass through ``model`` (rebuilt when ``model`` is replaced; never pickled)."""

    def __init__(self, model: Any, task: Task, app: AppSpec | None = None) -> None:
        self.model = model
        self.task = task
        self.metrics = ProgressiveMetrics(task)
        self.examples_seen = 0
        self.app = app
        """The spec the model was built from, to start afresh on ``reset``."""

    def predict_then_learn(self, x: dict[str, Any], y: Any) -> Outcome:
        """Predict, then learn; the caller scores the prediction (``metrics.update``), as the
        trainer does in a pass of its own."""
        step = self._step
        if step is None or step.model is not self.model:
            step = self._step = PredictThenLearn(self.model, self.task)
        y_pred, proba = step(x, y)
        self.examples_seen += 1
        return Outcome(y, y_pred, proba)

    @property
    def changes(self) -> int:
        return self.examples_seen  # every example learned changes the model

    def __getstate__(self) -> dict[str, Any]:
        return {name: value for name, value in vars(self).items() if name != "_step"}

    def reset(self) -> None:
        """Forget what was learned (a drift action); metrics and counts go on."""
        if self.app is None:
            raise RuntimeError("this learner does not know its spec")
        self.model = build_model(self.app)


class RetrainingLearner:
    """A scikit-learn pipeline fitted from scratch every ``every`` examples on the last
    ``window``, scored by progressive validation like an online model."""

    refits_and_resets = 0
    """Changes of the model (a class default for learners checkpointed before it was counted)."""

    def __init__(self, app: AppSpec) -> None:
        self.app = app
        self.task = app.task
        self.model = BatchModel(None, app.task)
        self.metrics = ProgressiveMetrics(app.task)
        self.examples_seen = 0
        self.fits = 0
        self._window: deque[tuple[dict[str, Any], Any]] = deque(maxlen=app.model.retrain.window)
        self._since_fit = 0

    def predict_then_learn(self, x: dict[str, Any], y: Any) -> Outcome:
        y_pred, proba = predict(self.model, self.task, x)
        self._window.append((x, y))
        self.examples_seen += 1
        self._since_fit += 1
        if self._since_fit >= self.app.model.retrain.every:
            self._fit()
        return Outcome(y, y_pred, proba)

    def _fit(self) -> None:
        xs = [x for x, _ in self._window]
        ys = [y for _, y in self._window]
        if self.task is not Task.REGRESSION and len(set(ys)) < 2:
            return  # a classifier needs two classes; try again with the next example
        pipeline = build_estimator(self.app, self.app.model)
        pipeline.fit(xs, ys)
        self.model = BatchModel(pipeline, self.task)
        self.fits += 1
        self.refits_and_resets += 1
        self._since_fit = 0

    @property
    def changes(self) -> int:
        return self.refits_and_resets

    def reset(self) -> None:
        self._window.clear()
        self._since_fit = 0
        self.model = BatchModel(None, self.task)
        self.refits_and_resets += 1


def make_learner(app: AppSpec) -> OnlineLearner | RetrainingLearner:
    """The learner for the app's (only) model."""
    if app.model.kind == "retrain":
        return RetrainingLearner(app)
    return OnlineLearner(build_model(app), app.task, app)


def embedding_model(model_blob: bytes) -> Reducers:
    """Pickle a learner with ``model_blob``, its model as already pickled for the version, in
    place of the model: a checkpoint then does not pickle the model a second time (for a tree
    or a forest, the larger part of the checkpoint's cost)."""

    def reduce(learner: OnlineLearner | RetrainingLearner) -> tuple[Any, ...]:
        return reduce_without(learner, "model", _model_from_blob, model_blob)

    return {OnlineLearner: reduce, RetrainingLearner: reduce}


def _model_from_blob(learner: OnlineLearner | RetrainingLearner, model_blob: bytes) -> None:
    learner.model = pickle.loads(model_blob)  # noqa: S301 - inside a checkpoint verified before unpickling
