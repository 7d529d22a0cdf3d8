"""The application spec: features, label, task and model, declared in one TOML file."""

from __future__ import annotations

import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import SpecError


class Task(StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"


class FeatureType(StrEnum):
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    CATEGORY = "category"


class FeatureSpec(BaseModel):
    """One declared feature."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: FeatureType
    required: bool = True
    values: tuple[str, ...] | None = None
    """Allowed values of a category feature; ``None`` accepts any string."""

    @property
    def numeric(self) -> bool:
        return self.type is not FeatureType.CATEGORY


class LabelSpec(BaseModel):
    """The target: its name and, for multiclass tasks, the allowed classes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "label"
    classes: tuple[str, ...] | None = None


class StepSpec(BaseModel):
    """A river (or ``sklearn:``-prefixed scikit-learn) class and its arguments.

    ``use`` is a dotted path inside ``river`` such as ``linear_model.LogisticRegression``;
    ``sklearn:linear_model.SGDClassifier`` wraps a scikit-learn estimator with river's
    compat layer. Parameter values that are themselves tables with ``use`` are built too.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    use: str
    args: tuple[Any, ...] = ()
    params: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(BaseModel):
    """A model as a river pipeline: optional automatic preprocessing, then steps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    preprocess: str = "auto"
    steps: tuple[StepSpec, ...]

    @field_validator("preprocess")
    @classmethod
    def _known_preprocess(cls, value: str) -> str:
        if value not in {"auto", "none"}:
            raise ValueError("preprocess must be 'auto' or 'none'")
        return value

    @field_validator("steps")
    @classmethod
    def _at_least_one_step(cls, value: tuple[StepSpec, ...]) -> tuple[StepSpec, ...]:
        if not value:
            raise ValueError("a model needs at least one step")
        return value


class AppSpec(BaseModel):
    """Everything that makes one Streamwise application."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    task: Task
    features: dict[str, FeatureSpec]
    label: LabelSpec = LabelSpec()
    model: ModelSpec

    @field_validator("features", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"type": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AppSpec:
        if not self.features:
            raise ValueError("declare at least one feature")
        if self.task is Task.MULTICLASS and not self.label.classes:
            raise ValueError("a multiclass task needs label.classes")
        if self.task is not Task.MULTICLASS and self.label.classes:
            raise ValueError("label.classes only applies to multiclass tasks")
        return self

    @property
    def classes(self) -> tuple[Any, ...] | None:
        """The possible labels of a classifier, ``None`` for regression."""
        if self.task is Task.BINARY:
            return (False, True)
        return self.label.classes


RECENT_WINDOW = 1000
"""Examples in the recent window of every progressive metric (``<metric>_recent``)."""


def primary_metric(task: Task) -> str:
    """The metric a person watches first."""
    return "mae" if task is Task.REGRESSION else "accuracy"


def parse_app_spec(data: dict[str, Any]) -> AppSpec:
    try:
        return AppSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(f"invalid application spec: {exc}") from exc


def load_app_spec(path: Path | str) -> AppSpec:
    """Read and validate the TOML application spec at ``path``."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SpecError(f"application spec not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"application spec {path} is not valid TOML: {exc}") from exc
    return parse_app_spec(data)
