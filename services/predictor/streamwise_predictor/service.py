"""Turn requests into predictions with the served model (pure, no I/O)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from streamwise_core.appspec import AppSpec
from streamwise_core.errors import ValidationFailed
from streamwise_core.inference import label_key, predict
from streamwise_core.schema import feature_errors, to_model_input

from .holder import ServedModel

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, pattern=ID_PATTERN)
    """The event id, so the prediction can be joined with its label later."""
    features: dict[str, Any]


class Batch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[Instance] = Field(min_length=1)


class Prediction(BaseModel):
    id: str | None
    prediction: bool | str | float | None
    probabilities: dict[str, float] | None = None


class PredictionResponse(Prediction):
    model: str
    version: int


class BatchResponse(BaseModel):
    model: str
    version: int
    predictions: list[Prediction]


def check_instances(spec: AppSpec, instances: list[Instance]) -> None:
    errors = []
    for index, inst in enumerate(instances):
        errors += [{"index": index, "id": inst.id, **e} for e in feature_errors(spec, inst.features)]
    if errors:
        raise ValidationFailed(errors)


def predict_instances(spec: AppSpec, served: ServedModel, instances: list[Instance]) -> list[Prediction]:
    """Predictions of one model version for all ``instances``."""
    out = []
    for inst in instances:
        y, proba = predict(served.model, spec.task, to_model_input(spec, inst.features))
        out.append(
            Prediction(
                id=inst.id,
                prediction=y,
                probabilities={label_key(k): float(v) for k, v in proba.items()} if proba else None,
            )
        )
    return out
