"""The application spec: features, label, task and model, declared in one TOML file."""

from __future__ import annotations

import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streamwise_core.contracts.errors import SpecError


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


class RetrainSpec(BaseModel):
    """Periodic retraining: fit from scratch every ``every`` labelled examples on the last ``window``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    every: int = Field(default=500, ge=1)
    window: int = Field(default=5000, ge=10)


class DriftSpec(BaseModel):
    """A drift detector on the model's error stream, and what a detected drift triggers.

    ``alert`` records and announces it; ``reset`` also starts the model afresh (its metrics go
    on); ``challenger`` also starts a fresh challenger with the same spec from the offsets where
    the drift was detected (at most ``max_challengers`` of them at a time).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    detector: Literal["adwin", "none"] = "adwin"
    delta: float = Field(default=0.002, gt=0, lt=1)
    action: Literal["alert", "reset", "challenger"] = "alert"
    grace: int = Field(default=1000, ge=0)
    """Examples after the start (or a drift) before a drift can be detected again."""
    max_challengers: int = Field(default=2, ge=0)


class ModelSpec(BaseModel):
    """A model: a river pipeline learned online (optional automatic preprocessing, then
    steps), or, with ``kind = "retrain"``, a scikit-learn pipeline fitted from scratch
    periodically on a sliding window (steps name ``sklearn`` classes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    kind: Literal["online", "retrain"] = "online"
    preprocess: str = "auto"
    steps: tuple[StepSpec, ...]
    retrain: RetrainSpec = RetrainSpec()
    drift: DriftSpec = DriftSpec()

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


class PromotionSpec(BaseModel):
    """When a challenger becomes champion by itself: its primary metric beats the champion's on
    the same recent examples (at least ``min_common`` of the last ``window`` both scored) by
    ``margin`` for ``hold_s`` seconds without a break."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    auto: bool = True
    margin: float = Field(default=0.01, ge=0)
    hold_s: float = Field(default=30.0, ge=0)
    window: int = Field(default=1000, ge=10)
    min_common: int = Field(default=500, ge=1)


class AppSpec(BaseModel):
    """Everything that makes one Streamwise application."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    task: Task
    features: dict[str, FeatureSpec]
    label: LabelSpec = LabelSpec()
    model: ModelSpec
    """The champion a new deployment starts with (promotion can make a challenger champion)."""
    challengers: tuple[ModelSpec, ...] = ()
    """Models learning from the same stream beside the champion, compared with it."""
    promotion: PromotionSpec = PromotionSpec()

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
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        return self

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        """The champion declared first, then the challengers."""
        return (self.model, *self.challengers)

    def for_model(self, model: ModelSpec) -> AppSpec:
        """This application with ``model`` as its only model: what one trainer learns."""
        return self.model_copy(update={"model": model, "challengers": ()})

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
