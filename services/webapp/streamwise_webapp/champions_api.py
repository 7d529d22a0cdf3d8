"""Champion and challengers: the roster, add and retire challengers, change the champion, drifts.

The same lifecycle operations as ``./streamwise models``: the registry's roster is what the
trainer follows (it starts or stops a learner within a second), Redis holds the champion every
predictor serves, and each write lands in the audit log with the principal's name.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from streamwise_core.adapters.registry import RETIRED
from streamwise_core.contracts.appspec import ModelSpec
from streamwise_core.contracts.store_types import serving
from streamwise_core.domain.lifecycle.operations import LifecycleError
from streamwise_core.domain.lifecycle.roster import StartPosition, add_challenger, make_champion, retire

from .auth import AUTH_RESPONSES, Principal, require_operator, require_viewer
from .deps import ServicesDep
from .views import Problem, Reason, as_utc, finite_metrics

router = APIRouter(prefix="/api/v1", tags=["lifecycle"])
Viewer = Annotated[Principal, Depends(require_viewer)]
Operator = Annotated[Principal, Depends(require_operator)]
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
ModelName = Annotated[str, Path(pattern=NAME_PATTERN)]
UNAVAILABLE: dict[int | str, dict[str, Any]] = {503: {"model": Problem, "description": "Redis or the registry is unavailable."}}


class ModelInfo(BaseModel):
    name: str
    role: Literal["champion", "challenger", "retired"]
    kind: Literal["online", "retrain"]
    version: int | None = Field(description="The version the model's current pointer names (None: nothing yet).")
    examples_seen: int | None
    metrics: dict[str, float]
    status: str = Field(description="`serving` (the champion), `learning`, `waiting` (no version yet) or `retired`.")
    start: dict[str, Any] = Field(description="Where the model started reading the events topic.")
    created_by: str | None
    created_at: datetime | None
    # the registry's view, as before
    model: str
    served_version: int | None = Field(description="What the current pointer names (None: nothing yet).")
    generation: int | None = Field(description="Generation of the pointer: it grows with every move.")
    versions: int
    held_back: int
    latest_version: int | None
    latest_at: datetime | None


@router.get("/models", responses={**AUTH_RESPONSES, **UNAVAILABLE})
async def list_models(_: Viewer, services: ServicesDep) -> list[ModelInfo]:
    """Every model of the application: the champion first, then challengers, then retired ones."""
    spec = services.settings.spec
    summaries = {s.model: s for s in await asyncio.to_thread(services.registry.models, spec.name)}
    roster = {e.name: e for e in await asyncio.to_thread(services.registry.roster, spec.name, include_retired=True)}
    champion = await services.store.champion()
    champion_name = serving(champion, spec.model.name).model
    declared = {m.name: m for m in spec.models}
    out = []
    for name in roster.keys() | summaries.keys() | {spec.model.name}:
        entry, summary = roster.get(name), summaries.get(name)
        pointer = await services.store.pointer(name)
        version = pointer.version if pointer else None
        row: Any = None
        if version is not None:
            row = await asyncio.to_thread(services.registry.version, spec.name, name, version)
        role = "champion" if name == champion_name else ("retired" if entry is not None and entry.role == RETIRED else "challenger")
        kind = entry.kind if entry is not None else (declared[name].kind if name in declared else "online")
        status = "retired" if role == "retired" else ("waiting" if version is None else ("serving" if role == "champion" else "learning"))
        out.append(ModelInfo(
            name=name, role=role, kind=kind, version=version,  # type: ignore[arg-type]
            examples_seen=row.examples_seen if row else None, metrics=finite_metrics(row.metrics) if row else {},
            status=status, start=entry.start if entry else {"from": "earliest"},
            created_by=entry.created_by if entry else None, created_at=as_utc(entry.created_at) if entry else None,
            model=name, served_version=version, generation=pointer.generation if pointer else None,
            versions=summary.versions if summary else 0, held_back=summary.held_back if summary else 0,
            latest_version=summary.latest_version if summary else None,
            latest_at=as_utc(summary.latest_at) if summary and summary.latest_at else None,
        ))
    order = {"champion": 0, "challenger": 1, "retired": 2}
    return sorted(out, key=lambda m: (order[m.role], m.name))


class NewChallenger(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=NAME_PATTERN, description="The challenger's name (or `spec.name`).")
    spec: dict[str, Any] = Field(description="A model table, as `[model]` in the app spec: name, kind, steps, retrain, drift.")
    start: dict[str, Any] = Field(
        default_factory=lambda: {"from": "earliest"},
        description='Where it starts: `{"from": "earliest"}`, `"latest"`, `{"from": "offset", "offset": 100}` '
                    'or `{"from": "time", "time": "2026-11-29T10:00:00Z"}`; it replays from there, then learns live.',
    )
    reason: str = Field(default="added in the web app", min_length=1, max_length=2000)


class Challenger(BaseModel):
    name: str
    kind: str
    start: dict[str, Any]
    created_by: str
    created_at: datetime


class ChampionChanged(BaseModel):
    champion: str
    champion_generation: int
    actor: str


def _refused(exc: LifecycleError) -> HTTPException:
    if exc.status == 422:
        return _invalid("spec", str(exc))
    return HTTPException(status_code=exc.status, detail=str(exc))


def _invalid(field: str, message: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors (one schema for every 422)."""
    return HTTPException(status_code=422, detail=[{"loc": ["body", field], "msg": message, "type": "value_error"}])


WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES, **UNAVAILABLE,
    404: {"model": Problem, "description": "No such model."},
    409: {"model": Problem, "description": "Not possible in the model's current state (see the detail)."},
}


@router.post("/challengers", status_code=201, responses=WRITE_RESPONSES)
async def add(body: NewChallenger, principal: Operator, services: ServicesDep) -> Challenger:
    """Add a challenger: the trainer starts learning it within a second, from ``start``."""
    if body.name is not None and body.spec.get("name", body.name) != body.name:
        raise _invalid("spec", f"name {body.name!r} and spec.name {body.spec.get('name')!r} differ")
    try:
        model = ModelSpec.model_validate({**body.spec, "name": body.name or body.spec.get("name")})
    except ValueError as exc:
        raise _invalid("spec", str(exc)) from exc
    try:
        start = StartPosition.parse(body.start)
    except ValueError as exc:
        raise _invalid("start", str(exc)) from exc
    try:
        entry = await add_challenger(
            services.store, services.registry, services.settings.spec, model, start,
            actor=principal.actor, reason=body.reason,
        )
    except LifecycleError as exc:
        raise _refused(exc) from exc
    return Challenger(name=entry.name, kind=entry.kind, start=entry.start, created_by=entry.created_by,
                      created_at=as_utc(entry.created_at))


@router.delete("/challengers/{name}", status_code=204, responses=WRITE_RESPONSES)
async def retire_challenger(
    name: ModelName, principal: Operator, services: ServicesDep,
    reason: Annotated[str | None, Query(min_length=1, max_length=2000, description="Or in a JSON body.")] = None,
    body: Reason | None = None,
) -> None:
    """Retire a challenger: it stops learning; its versions stay in the registry. Needs a reason."""
    reason = reason or (body.reason if body is not None else None)
    if reason is None:
        raise _invalid("reason", "say why (query parameter or JSON body)")
    try:
        await retire(services.store, services.registry, services.settings.spec.name, name, actor=principal.actor, reason=reason)
    except LifecycleError as exc:
        raise _refused(exc) from exc


@router.post("/models/{name}/champion", responses=WRITE_RESPONSES)
async def champion(name: ModelName, body: Reason, principal: Operator, services: ServicesDep) -> ChampionChanged:
    """Make a challenger the champion: every predictor serves its current version from now on."""
    try:
        generation = await make_champion(
            services.store, services.registry, services.settings.spec.name, name, actor=principal.actor, reason=body.reason,
        )
    except LifecycleError as exc:
        raise _refused(exc) from exc
    return ChampionChanged(champion=name, champion_generation=generation, actor=principal.actor)


class DriftInfo(BaseModel):
    id: int
    model: str
    version: int | None
    examples_seen: int
    detected_at: datetime
    offsets: dict[str, int]
    detector: str
    action: str
    error_after: float | None


@router.get("/drifts", responses={**AUTH_RESPONSES, **UNAVAILABLE})
async def list_drifts(
    _: Viewer, services: ServicesDep,
    model: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DriftInfo]:
    """Drifts detected in each model's error stream, newest first."""
    found = await asyncio.to_thread(services.registry.drifts, services.settings.spec.name, model=model, limit=limit)
    return [
        DriftInfo(
            id=d.id or 0, model=d.model, version=d.version, examples_seen=d.examples_seen,
            detected_at=as_utc(d.detected_at), offsets=d.offsets, detector=d.detector, action=d.action,
            error_after=d.details.get("error_after"),
        )
        for d in found
    ]
