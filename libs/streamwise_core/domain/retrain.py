"""Periodic retraining with scikit-learn: a pipeline fitted from scratch on a sliding window.

A ``BatchModel`` answers like a river model (``predict_one``, ``predict_proba_one``), so the
trainer scores it by progressive validation and the predictor serves it like any other.
"""

from __future__ import annotations

import importlib
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.feature_extraction import DictVectorizer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from streamwise_core.contracts.appspec import AppSpec, ModelSpec, StepSpec, Task
from streamwise_core.contracts.errors import SpecError

_SKLEARN_PREFIX = "sklearn:"


def _sklearn_class(path: str) -> type[BaseEstimator]:
    dotted = path.removeprefix(_SKLEARN_PREFIX)
    module_path, _, name = dotted.rpartition(".")
    if not module_path:
        raise SpecError(f"'{path}': expected a scikit-learn path such as linear_model.LogisticRegression")
    try:
        return getattr(importlib.import_module(f"sklearn.{module_path}"), name)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"'{path}' is not a class of sklearn") from exc


def _build(value: Any) -> Any:
    if isinstance(value, dict) and "use" in value:
        return _step(StepSpec.model_validate(value))
    if isinstance(value, list):
        return [_build(v) for v in value]
    return value


def _step(step: StepSpec) -> BaseEstimator:
    cls = _sklearn_class(step.use)
    try:
        return cls(*[_build(a) for a in step.args], **{k: _build(v) for k, v in step.params.items()})
    except TypeError as exc:
        raise SpecError(f"cannot build {step.use}: {exc}") from exc


def build_estimator(app: AppSpec, spec: ModelSpec) -> Pipeline:
    """Dict features vectorised (categories one-hot), scaled with ``preprocess = "auto"``, then the steps."""
    steps: list[tuple[str, Any]] = [("vectorize", DictVectorizer(sparse=False))]
    if spec.preprocess == "auto":
        steps.append(("scale", StandardScaler()))
    steps += [(f"step{i}", _step(s)) for i, s in enumerate(spec.steps)]
    pipeline = Pipeline(steps)
    final = steps[-1][1]
    wants = "predict_proba" if app.task is not Task.REGRESSION else "predict"
    if not hasattr(final, wants):
        raise SpecError(f"the last step of model '{spec.name}' needs {wants}() for a {app.task} task")
    return pipeline


class BatchModel:
    """A fitted pipeline (or none yet) answering one example at a time, river style."""

    def __init__(self, pipeline: Pipeline | None, task: Task) -> None:
        self.pipeline = pipeline
        self.task = task

    def predict_proba_one(self, x: dict[str, Any]) -> dict[Any, float]:
        if self.pipeline is None:
            return {}
        proba = self.pipeline.predict_proba([x])[0]
        return {_plain(c): float(p) for c, p in zip(self.pipeline.classes_, proba, strict=True)}

    def predict_one(self, x: dict[str, Any]) -> Any:
        if self.pipeline is None:
            return 0.0 if self.task is Task.REGRESSION else None
        return _plain(self.pipeline.predict([x])[0])

    def learn_one(self, x: dict[str, Any], y: Any) -> None:
        """Nothing: a batch model only changes when it is fitted again."""


def _plain(value: Any) -> Any:
    """numpy scalars as Python values, so labels compare and serialise as declared."""
    return value.item() if hasattr(value, "item") else value
