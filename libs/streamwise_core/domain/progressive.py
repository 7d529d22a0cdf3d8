"""Progressive validation of one example in a single pass through a river pipeline.

River's loop asks ``model.predict_proba_one(x)`` and then ``model.learn_one(x, y)``: every
transformer of the pipeline runs twice or three times per example (the prediction transforms
``x``, learning updates each step and transforms ``x`` again), and so do the pipeline's own
dispatch and the ``Select`` steps in front of them. ``PredictThenLearn`` walks the pipeline once,
carrying two inputs side by side, the one the prediction sees and the one learning sees, and
makes exactly river's calls on each step in an order that gives the same results:

- a step that learns nothing (``Select``, ``Discard``, our ``SelectPresent``) transforms once
  while both inputs are still the same dict;
- any other unsupervised transformer transforms the prediction's input with its state before
  this example, learns, then transforms the learning input (what ``Pipeline.learn_one`` does);
- a supervised transformer among the model's own steps transforms both inputs, then learns
  from the learning input it was given and ``y`` (again ``Pipeline.learn_one``'s order);
- a ``TransformerUnion`` or a nested pipeline of unsupervised steps does this for each of its
  parts (a union merges them as it does: the first part wins a shared key).

The final step predicts from the first input before it learns from the second. Steps of a
pipeline do not share state, so interleaving one step's learning with the next step's
prediction changes nothing: ``tests/unit/test_progressive.py`` compares every prediction and
the final models with river's two calls. Anything else (an anomaly filter, a supervised part
of a union, learning during prediction, a model that is not a pipeline) takes river's two
calls as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from river import base, compose

from streamwise_core.contracts.appspec import Task
from streamwise_core.domain.inference import predict
from streamwise_core.domain.pipeline import SelectPresent

Features = dict[str, Any]
Pass = Callable[[Features, Features, Any], tuple[Features, Features]]
"""``(x seen by the prediction, x seen by learning, y)`` in, both transformed out; learns."""

_LEARNS_NOTHING = (SelectPresent, compose.Select, compose.Discard)
"""Transformers whose ``learn_one`` is river's no-op and whose output depends on ``x`` alone."""


class PredictThenLearn:
    """``predict(model, task, x)`` then ``model.learn_one(x, y)``, in one pass when it can."""

    def __init__(self, model: Any, task: Task) -> None:
        self.model = model
        self.task = task
        self.fused = _fuse(model)
        """The single pass, or ``None``: river's two calls."""

    def __call__(self, x: Features, y: Any) -> tuple[Any, dict[Any, float] | None]:
        fused = self.fused
        if fused is None or compose.Pipeline._LEARN_UNSUPERVISED_DURING_PREDICT:  # noqa: SLF001 - river's switch
            prediction = predict(self.model, self.task, x)
            self.model.learn_one(x, y)
            return prediction
        pre, final = fused
        x_predict, x_learn = pre(x, x, y)
        prediction = predict(final, self.task, x_predict)
        final.learn_one(x_learn, y)
        return prediction


def _fuse(model: Any) -> tuple[Pass, Any] | None:
    """The pass through the transformers of ``model`` and its final step, or ``None`` when
    ``model`` is not a pipeline of steps this module knows how to walk."""
    if not isinstance(model, compose.Pipeline):
        return None
    *transformers, final = model.steps.values()
    if not transformers or isinstance(final, (base.Transformer, base.AnomalyFilter)):
        return None
    passes = [_step_pass(t) for t in transformers]
    if any(p is None for p in passes):
        return None
    return _chain(passes), final  # type: ignore[arg-type]


def _step_pass(step: Any) -> Pass | None:
    """A step of the model itself: a supervised transformer learns after transforming both
    inputs, as ``Pipeline.learn_one`` orders it."""
    supervised = isinstance(step, base.Transformer) and not isinstance(step, (compose.Pipeline, compose.TransformerUnion)) and step._supervised
    if supervised:  # ``_supervised``: what Pipeline reads too
        return _supervised(step)
    return _unsupervised_pass(step)


def _unsupervised_pass(step: Any) -> Pass | None:
    """A step that learns from ``x`` alone. A supervised part of a union or of a nested
    pipeline is left to river: its learning input is transformed before it learns."""
    if isinstance(step, base.AnomalyFilter) or not isinstance(step, base.Transformer) or step._supervised:  # noqa: SLF001
        return None
    if isinstance(step, compose.Pipeline):
        passes = [_unsupervised_pass(s) for s in step.steps.values()]
        return None if any(p is None for p in passes) else _chain(passes)  # type: ignore[arg-type]
    if isinstance(step, compose.TransformerUnion):
        parts = [_unsupervised_pass(s) for s in step.transformers.values()]
        return None if any(p is None for p in parts) else _union(parts)  # type: ignore[arg-type]
    if isinstance(step, _LEARNS_NOTHING) and type(step).learn_one is base.Transformer.learn_one:
        return _stateless(step)
    return _unsupervised(step)


def _chain(passes: list[Pass]) -> Pass:
    if len(passes) == 1:
        return passes[0]

    def chained(x_predict: Features, x_learn: Features, y: Any) -> tuple[Features, Features]:
        for one in passes:
            x_predict, x_learn = one(x_predict, x_learn, y)
        return x_predict, x_learn

    return chained


def _union(parts: list[Pass]) -> Pass:
    backwards = parts[::-1]  # TransformerUnion.transform_one: the first part wins a shared key

    def union(x_predict: Features, x_learn: Features, y: Any) -> tuple[Features, Features]:
        merged_predict: Features = {}
        merged_learn: Features = {}
        for part in backwards:
            p, lrn = part(x_predict, x_learn, y)
            merged_predict.update(p)
            merged_learn.update(lrn)
        return merged_predict, merged_learn

    return union


def _stateless(step: Any) -> Pass:
    transform = step.transform_one

    def stateless(x_predict: Features, x_learn: Features, y: Any) -> tuple[Features, Features]:
        if x_predict is x_learn:
            out = transform(x_predict)
            return out, out
        return transform(x_predict), transform(x_learn)

    return stateless


def _unsupervised(step: Any) -> Pass:
    transform, learn = step.transform_one, step.learn_one

    def unsupervised(x_predict: Features, x_learn: Features, y: Any) -> tuple[Features, Features]:
        predicted = transform(x_predict)
        learn(x_learn)
        return predicted, transform(x_learn)

    return unsupervised


def _supervised(step: Any) -> Pass:
    transform, learn = step.transform_one, step.learn_one

    def supervised(x_predict: Features, x_learn: Features, y: Any) -> tuple[Features, Features]:
        predicted, learned = transform(x_predict), transform(x_learn)
        learn(x_learn, y)
        return predicted, learned

    return supervised
