"""Turn requests into predictions with the served model (pure, no I/O)."""

from __future__ import annotations

import uuid

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamwise_core.appspec import AppSpec
from streamwise_core.errors import ValidationFailed
from streamwise_core.inference import label_key, predict
from streamwise_core.schema import feature_errors, features_json_schema, model_input_reader, to_model_input

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
    id: str = Field(description="The event id sent, or a generated one: use it to send the outcome as a label.")
    prediction: bool | str | float | None
    probabilities: dict[str, float] | None = None


class PredictionResponse(Prediction):
    model: str
    version: int


class BatchResponse(BaseModel):
    model: str
    version: int
    predictions: list[Prediction]


def instance_schema(spec: AppSpec) -> dict[str, Any]:
    """JSON Schema of an instance of ``spec``, for the API document."""
    return {
        "type": "object",
        "title": "Instance",
        "properties": {
            "id": {
                "anyOf": [{"type": "string", "pattern": ID_PATTERN}, {"type": "null"}],
                "description": "The event id, so the prediction can be joined with its label later.",
            },
            "features": features_json_schema(spec),
        },
        "required": ["features"],
        "additionalProperties": False,
    }


def batch_schema(spec: AppSpec, max_batch: int) -> dict[str, Any]:
    return {
        "type": "object",
        "title": "Batch",
        "properties": {
            "instances": {"type": "array", "items": instance_schema(spec), "minItems": 1, "maxItems": max_batch},
        },
        "required": ["instances"],
        "additionalProperties": False,
    }


def _id_of(item: Any) -> str | None:
    value = item.get("id") if isinstance(item, dict) else None
    return value if isinstance(value, str) else None


def _pydantic_errors(exc: ValidationError, **where: Any) -> list[dict[str, Any]]:
    # An empty ``loc`` names the item itself (e.g. it is not an object), as in ingest.
    return [{**where, "loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors(include_url=False)]


def parse_instance(data: Any) -> Instance:
    """One instance from a parsed JSON body, or ``ValidationFailed`` naming each problem."""
    try:
        return Instance.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(_pydantic_errors(exc, index=0, id=_id_of(data))) from None


def parse_batch(data: Any, max_batch: int) -> Batch:
    """A batch from a parsed JSON body; problems are named by instance ``index`` and ``id``."""
    if not isinstance(data, dict):
        raise ValidationFailed([{"loc": ["body"], "msg": "expected an object with 'instances'"}])
    errors: list[dict[str, Any]] = [{"loc": ["body", str(k)], "msg": "unknown field"} for k in data if k != "instances"]
    items = data.get("instances")
    if not isinstance(items, list) or not items:
        errors.append({"loc": ["body", "instances"], "msg": "expected a non-empty list of instances"})
        raise ValidationFailed(errors)
    if len(items) > max_batch:
        errors.append({"loc": ["body", "instances"], "msg": f"at most {max_batch} instances per batch"})
        raise ValidationFailed(errors)
    instances: list[Instance] = []
    for index, item in enumerate(items):
        try:
            instances.append(Instance.model_validate(item))
        except ValidationError as exc:
            errors += _pydantic_errors(exc, index=index, id=_id_of(item))
    if errors:
        raise ValidationFailed(errors)
    return Batch(instances=instances)


def check_instances(spec: AppSpec, instances: list[Instance]) -> None:
    """Every instance matches the schema and no id is given twice, or ``ValidationFailed``."""
    errors = []
    seen: set[str] = set()
    read_input = model_input_reader(spec)
    for index, inst in enumerate(instances):
        if read_input(inst.features) is None:
            errors += [{"index": index, "id": inst.id, **e} for e in feature_errors(spec, inst.features)]
        if inst.id is not None:
            if inst.id in seen:
                errors.append({"index": index, "id": inst.id, "loc": ["id"], "msg": "duplicate id in this request"})
            seen.add(inst.id)
    if errors:
        raise ValidationFailed(errors)


def predict_instances(spec: AppSpec, served: ServedModel, instances: list[Instance]) -> list[Prediction]:
    """Predictions of one model version for all ``instances``."""
    out = []
    unscorable = []
    read_input = model_input_reader(spec)
    for index, inst in enumerate(instances):
        y, proba = predict(served.model, spec.task, read_input(inst.features) or to_model_input(spec, inst.features))
        if not _finite_answer(y, proba):
            unscorable.append({
                "index": index, "id": inst.id, "loc": ["features"],
                "msg": "the model gives no finite answer for these values (too large for it?)",
            })
            continue
        out.append(
            Prediction(
                id=inst.id or uuid.uuid4().hex,
                prediction=y,
                probabilities={label_key(k): float(v) for k, v in proba.items()} if proba else None,
            )
        )
    if unscorable:
        raise ValidationFailed(unscorable)
    return out


def _finite_answer(y: Any, proba: dict[Any, float] | None) -> bool:
    """JSON has no NaN or Infinity: an answer holding one cannot be sent (nor is it one)."""
    numbers = [y] if isinstance(y, float) else []
    numbers += list((proba or {}).values())
    try:
        return all(math.isfinite(float(v)) for v in numbers)
    except (TypeError, ValueError, OverflowError):
        return False
