"""Pure translations from model metadata and registry rows to the JSON the page reads."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from streamwise_core.adapters.registry import VersionRow
from streamwise_core.contracts.appspec import RECENT_WINDOW, Task, primary_metric
from streamwise_core.contracts.codec import ModelMeta

RECENT_SUFFIX = "_recent"


class CurrentModel(BaseModel):
    """The version predictions are served from right now, with its progressive metrics."""

    app: str
    model: str
    version: int
    task: str
    examples_seen: int
    metrics: dict[str, float] = Field(description="All-time metrics and their `_recent` window twins.")
    primary_metric: str = Field(description="The metric to watch first, e.g. `accuracy` or `mae`.")
    primary_value: float | None = Field(description="All-time value of the primary metric.")
    recent_value: float | None = Field(description="Primary metric over the recent window.")
    recent_window: int = Field(description="Examples in the recent window.")
    published_at: datetime
    offsets: dict[str, int] = Field(
        default_factory=dict, description="Last offset learned per `topic:partition` (freshness is measured with it)."
    )


class VersionPoint(BaseModel):
    """One version in the history chart."""

    version: int
    examples_seen: int
    metrics: dict[str, float]
    created_at: datetime


class LiveStatus(StrEnum):
    CURRENT = "current"
    WAITING = "waiting"
    UNAVAILABLE = "unavailable"


class LiveState(BaseModel):
    """One message of the live stream; ``current`` stays the last known version while unavailable."""

    status: LiveStatus
    current: CurrentModel | None = None
    server_time: datetime


class InitialPage(BaseModel):
    """Embedded in the page, so it shows data before its live stream connects."""

    state: LiveState
    history: list[VersionPoint] | None = Field(description="`None` when the registry did not answer.")


class Problem(BaseModel):
    """Error body, as FastAPI writes it for ``HTTPException``."""

    detail: str


class Reason(BaseModel):
    """Why an operator acts (recorded in the audit log)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


class Health(BaseModel):
    status: str


def as_utc(moment: datetime) -> datetime:
    """Treat naive datetimes (SQLite drops the zone) as UTC, so browsers do not read them as local."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Keep numeric, finite values only: NaN and infinities are not JSON."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[name] = float(value)
    return out


def primary_metric_name(task: str, metrics: Mapping[str, Any]) -> str:
    """The trainer's primary metric for ``task``; for an unknown task, the first metric present."""
    try:
        return primary_metric(Task(task))
    except ValueError:
        names = [n for n in metrics if not n.endswith(RECENT_SUFFIX)]
        return names[0] if names else "accuracy"


def current_view(meta: ModelMeta) -> CurrentModel:
    """The page's view of a verified model version."""
    metrics = finite_metrics(meta.metrics)
    name = primary_metric_name(meta.task, metrics)
    return CurrentModel(
        app=meta.app,
        model=meta.model,
        version=meta.version,
        task=meta.task,
        examples_seen=meta.examples_seen,
        metrics=metrics,
        primary_metric=name,
        primary_value=metrics.get(name),
        recent_value=metrics.get(name + RECENT_SUFFIX),
        recent_window=RECENT_WINDOW,
        published_at=as_utc(meta.created_at),
        offsets=dict(meta.offsets),
    )


def version_point(row: VersionRow) -> VersionPoint:
    return VersionPoint(
        version=row.version,
        examples_seen=row.examples_seen,
        metrics=finite_metrics(row.metrics),
        created_at=as_utc(row.created_at),
    )


def history_view(rows: Iterable[VersionRow]) -> list[VersionPoint]:
    """Registry rows (newest first) as chart points, oldest to newest."""
    return [version_point(row) for row in sorted(rows, key=lambda r: r.version)]


def live_state(
    status: LiveStatus, current: CurrentModel | None, now: datetime
) -> LiveState:
    return LiveState(status=status, current=current, server_time=as_utc(now))


def state_key(state: LiveState) -> tuple[LiveStatus, int | None]:
    """What makes two live messages different enough to send the second one."""
    return state.status, state.current.version if state.current else None
