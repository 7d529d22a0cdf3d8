"""Build a river model from a ``ModelSpec``."""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import ValidationError
from river import base, compose, preprocessing

from streamwise_core.contracts.appspec import AppSpec, ModelSpec, StepSpec, Task
from streamwise_core.contracts.errors import SpecError

SKLEARN_PREFIX = "sklearn:"


def _resolve(path: str) -> Any:
    root, dotted = ("sklearn", path[len(SKLEARN_PREFIX):]) if path.startswith(SKLEARN_PREFIX) else ("river", path)
    module_path, _, name = dotted.rpartition(".")
    if not module_path or not name:
        raise SpecError(f"'{path}': expected a dotted path such as linear_model.LogisticRegression")
    try:
        module = importlib.import_module(f"{root}.{module_path}")
        return getattr(module, name)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"'{path}' is not a class of {root}") from exc


def _build_value(value: Any, app: AppSpec) -> Any:
    if isinstance(value, dict) and "use" in value:
        try:
            step = StepSpec.model_validate(value)
        except ValidationError as exc:
            raise SpecError(f"invalid step {value.get('use')!r}: {exc}") from exc
        return build_step(step, app)
    if isinstance(value, list):
        return [_build_value(v, app) for v in value]
    return value


def build_step(step: StepSpec, app: AppSpec) -> Any:
    """Instantiate one step; scikit-learn estimators are wrapped for river."""
    cls = _resolve(step.use)
    args = [_build_value(a, app) for a in step.args]
    params = {k: _build_value(v, app) for k, v in step.params.items()}
    try:
        obj = cls(*args, **params)
    except TypeError as exc:
        raise SpecError(f"cannot build {step.use}: {exc}") from exc
    if step.use.startswith(SKLEARN_PREFIX):
        from river import compat

        classes = list(app.classes) if app.classes is not None else None
        try:
            return compat.convert_sklearn_to_river(obj, classes=classes)
        except ValueError as exc:
            raise SpecError(f"cannot use {step.use} for this task: {exc}") from exc
    return obj


class SelectPresent(compose.Select):
    """``compose.Select`` that skips absent (optional) features and keeps the declared order.

    river's Select keeps its keys in a set, so the order of the selected features, and with
    it the float rounding of every dot product, would change with the interpreter's hash
    seed: a restarted trainer would drift from one that never stopped in the last bits.
    """

    def __init__(self, *keys: str) -> None:
        self.keys = tuple(keys)  # type: ignore[assignment]

    def transform_one(self, x: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]  # features are named by str
        return {k: x[k] for k in self.keys if k in x}


def _select(keys: list[str]) -> SelectPresent:
    return SelectPresent(*keys)


def _auto_preprocessing(app: AppSpec) -> Any | None:
    numeric = [n for n, f in app.features.items() if f.numeric]
    categorical = [n for n, f in app.features.items() if not f.numeric]
    parts = []
    if numeric:
        parts.append(_select(numeric) | preprocessing.StandardScaler())
    if categorical:
        parts.append(_select(categorical) | preprocessing.OneHotEncoder())
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else compose.TransformerUnion(*parts)


def build_model(app: AppSpec, spec: ModelSpec | None = None) -> base.Estimator:
    """The river pipeline declared by ``spec`` (the app's model by default)."""
    spec = spec or app.model
    if spec.kind == "retrain":
        raise SpecError(f"model '{spec.name}' is retrained periodically: it is built by streamwise_core.domain.retrain")
    steps = [build_step(s, app) for s in spec.steps]
    final = steps[-1]
    expected = base.Regressor if app.task is Task.REGRESSION else base.Classifier
    if not isinstance(final, expected) and not isinstance(getattr(final, "_last_step", final), expected):
        raise SpecError(f"the last step of model '{spec.name}' must be a river {expected.__name__} for a {app.task} task")
    if spec.preprocess == "auto":
        pre = _auto_preprocessing(app)
        if pre is not None:
            steps.insert(0, pre)
    model = steps[0]
    for step in steps[1:]:
        model = model | step
    return model
