"""The model-lifecycle JSON API: models, versions with lineage, metric history, the audit log,
promotion and rollback, pins. The web app's pages and the operator CLI read the same data."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError

from streamwise_core.adapters.http import JSON_TYPES, decode_utf8, loads_strict, read_body, require_media_type
from streamwise_core.adapters.registry import AuditEntry, VersionRow
from streamwise_core.contracts.errors import ValidationFailed
from streamwise_core.contracts.signing import Signer
from streamwise_core.domain.lifecycle.operations import LifecycleError, PinAction, move_current, pin, unpin

from .auth import ACTOR_HEADER, AUTH_RESPONSES, Principal, require_operator, require_viewer
from .deps import Services, ServicesDep
from .views import Problem, Reason, as_utc

router = APIRouter(prefix="/api/v1", tags=["lifecycle"], dependencies=[Depends(require_viewer)])
Operator = Annotated[Principal, Depends(require_operator)]
MODEL_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
ModelName = Annotated[str, Path(pattern=MODEL_PATTERN, description="The model's name, as in the app spec.")]
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1, description="The version's number.")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Problem, "description": "No such model."}}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {503: {"model": Problem, "description": "Redis or the registry is unavailable."}, **AUTH_RESPONSES}
BAD_QUERY: dict[int | str, dict[str, Any]] = {}
"""422 for a query parameter out of range: FastAPI documents it."""
MAX_MOVE_BODY = 16 * 1024


class VersionInfo(BaseModel):
    version: int
    status: str = Field(description="`served` (made current when published or promoted) or `held_back`.")
    current: bool
    hold_reason: str | None
    gate: dict[str, Any] | None
    examples_seen: int
    metrics: dict[str, float]
    created_at: datetime
    blob_sha256: str
    key_id: str
    river_version: str
    spec_sha256: str | None
    offsets_from: dict[str, int] | None = Field(description="Offsets reached by the previous version (exclusive).")
    offsets_to: dict[str, int] = Field(description="Offsets this version learned up to (inclusive).")
    learned_from: datetime | None
    learned_to: datetime | None
    stored: bool = Field(description="Its blob is still in Redis, so it can be promoted or rolled back to; "
                         "`false`: deleted by retention (its row stays for lineage and charts).")
    pinned: bool = Field(description="An operator pinned it: retention keeps its blob whatever its age.")


class MetricPoint(BaseModel):
    version: int
    at: datetime
    examples_seen: int
    status: str
    metrics: dict[str, float]


class AuditItem(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    model: str | None
    version_from: int | None
    version_to: int | None
    reason: str
    details: dict[str, Any]


class AuditPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[AuditItem]


class MoveRequest(Reason):
    """Which stored version to serve, and why (recorded in the audit log)."""

    version: int = Field(ge=1, le=2**31 - 1)


class MoveResult(BaseModel):
    model: str
    action: Literal["promote", "rollback"]
    version_from: int | None
    version_to: int
    generation: int
    blob_sha256: str
    audit_id: int
    actor: str


def _known(services: Services, model: str, names: set[str]) -> None:
    if model != services.settings.spec.model.name and model not in names:
        raise HTTPException(status_code=404, detail=f"unknown model {model!r}")


async def _check_model(services: Services, model: str) -> None:
    if model == services.settings.spec.model.name:
        return
    summaries = await asyncio.to_thread(services.registry.models, services.settings.spec.name)
    _known(services, model, {s.model for s in summaries})


def _version_info(row: VersionRow, current: int | None, stored: set[int], pinned: set[int]) -> VersionInfo:
    return VersionInfo(
        version=row.version, status=row.status, current=row.version == current, hold_reason=row.hold_reason,
        gate=row.gate, examples_seen=row.examples_seen, metrics=row.metrics, created_at=as_utc(row.created_at),
        blob_sha256=row.blob_sha256, key_id=row.key_id, river_version=row.river_version,
        spec_sha256=row.spec_sha256, offsets_from=row.offsets_from, offsets_to=row.offsets,
        learned_from=_utc(row.learned_from), learned_to=_utc(row.learned_to),
        stored=row.version in stored, pinned=row.version in pinned,
    )


def _utc(moment: datetime | None) -> datetime | None:
    return as_utc(moment) if moment is not None else None


NEXT_PAGE_HEADERS = {
    "X-Next-Before": {"description": "The cursor of the next (older) page: pass it as `before`. Absent on the last page.",
                      "schema": {"type": "integer"}},
    "Link": {"description": 'The next page\'s URL, `<…?limit=50&before=37>; rel="next"`. Absent on the last page.',
             "schema": {"type": "string"}},
}


@router.get("/models/{model}/versions",
            responses={200: {"headers": NEXT_PAGE_HEADERS}, **NOT_FOUND, **UNAVAILABLE, **BAD_QUERY})
async def list_versions(
    request: Request, response: Response, services: ServicesDep, model: ModelName,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="Cursor: only versions below this one "
                                        "(the previous page's `X-Next-Before`).")] = None,
    offset: Annotated[int, Query(ge=0, le=10**9, deprecated=True, description="Skip this many; use `before`.")] = 0,
    status: Annotated[Literal["served", "held_back"] | None, Query()] = None,
) -> list[VersionInfo]:
    """Versions newest first, a page at a time: lineage, gate status, the reason a version was held back,
    whether its blob is still stored and whether it is pinned."""
    await _check_model(services, model)
    rows = await asyncio.to_thread(
        services.registry.versions, services.settings.spec.name, model, limit + 1, offset=offset, status=status, before=before,
    )
    page = rows[:limit]
    if len(rows) > limit:
        _link_next_page(request, response, page[-1].version)
    pointer, stored, pinned = await asyncio.gather(
        services.store.pointer(model), services.store.stored_versions(model), services.store.pinned(model),
    )
    current = pointer.version if pointer else None
    return [_version_info(r, current, set(stored), set(pinned)) for r in page]


def _link_next_page(request: Request, response: Response, before: int) -> None:
    url = request.url.remove_query_params("offset").include_query_params(before=before)
    response.headers["X-Next-Before"] = str(before)
    response.headers["Link"] = f'<{url.path}?{url.query}>; rel="next"'


@router.get("/models/{model}/metrics", responses={**NOT_FOUND, **UNAVAILABLE, **BAD_QUERY})
async def metric_history(
    services: ServicesDep, model: ModelName, limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[MetricPoint]:
    """Metrics of every version at its publication, oldest first, for charts."""
    await _check_model(services, model)
    rows = await asyncio.to_thread(services.registry.metric_history, services.settings.spec.name, model, limit)
    return [
        MetricPoint(version=r.version, at=as_utc(r.created_at), examples_seen=r.examples_seen, status=r.status, metrics=r.metrics)
        for r in rows
    ]


@router.get("/audit", responses={**UNAVAILABLE, **BAD_QUERY})
async def audit_log(
    services: ServicesDep,
    model: Annotated[str | None, Query(pattern=MODEL_PATTERN)] = None,
    action: Annotated[str | None, Query(pattern=r"^[a-z_]{1,32}$")] = None,
    actor: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> AuditPage:
    """Who did what to which model, when and why; newest first."""
    entries, total = await asyncio.to_thread(
        services.registry.audit, services.settings.spec.name, model=model, action=action, actor=actor,
        limit=limit, offset=offset,
    )
    return AuditPage(total=total, limit=limit, offset=offset, items=[_audit_item(e) for e in entries])


def _audit_item(e: AuditEntry) -> AuditItem:
    return AuditItem(
        id=e.id or 0, at=as_utc(e.at), actor=e.actor, action=e.action, model=e.model, version_from=e.version_from,
        version_to=e.version_to, reason=e.reason, details=e.details,
    )


MOVE_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such model or version, or the version was deleted by retention "
          "(its blob is no longer stored)."},
    409: {"model": Problem, "description": "The version is not earlier (rollback) / later (promote) than the "
          "current one, fails verification, or the pointer moved meanwhile."},
    413: {"model": Problem, "description": f"A body over {MAX_MOVE_BODY} bytes."},
    415: {"model": Problem, "description": "A content type other than JSON."},
    **UNAVAILABLE,
}


def _move_route(action: Literal["promote", "rollback"]) -> Any:
    async def move(request: Request, services: ServicesDep, model: ModelName, principal: Operator) -> MoveResult:
        body = await _body(request, MoveRequest)
        await _check_model(services, model)
        who = principal.actor
        try:
            moved = await move_current(
                services.store, services.registry, Signer(services.settings.signing_key_map),
                app=services.settings.spec.name, model=model, version=body.version, action=action,
                actor=who, reason=body.reason,
            )
        except LifecycleError as exc:
            raise HTTPException(status_code=exc.status, detail=str(exc)) from exc
        return MoveResult(
            model=model, action=action, version_from=moved.version_from, version_to=moved.version_to,
            generation=moved.generation, blob_sha256=moved.blob_sha256, audit_id=moved.audit_id, actor=who,
        )

    move.__name__ = action
    move.__doc__ = (
        "Roll back: serve an earlier stored version; every predictor follows within a poll interval."
        if action == "rollback" else
        "Promote: serve a later stored version (e.g. one the gate held back)."
    ) + (f" Needs the operator role. A machine's `{ACTOR_HEADER}` names who acts (default: the key's"
         " name or fingerprint); a person is recorded by user name.")
    return move


Body = TypeVar("Body", bound=BaseModel)


async def _body(request: Request, kind: type[Body]) -> Body:
    """The body, read only after the key was checked: 415, 413, or 422 naming the field."""
    require_media_type(request.headers.get("content-type"), JSON_TYPES)
    value = loads_strict(decode_utf8(await read_body(request, MAX_MOVE_BODY)), ["body"])
    try:
        return kind.model_validate(value)
    except ValidationError as exc:
        raise ValidationFailed([
            {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors(include_url=False)
        ]) from None


def _body_schema(kind: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": kind.model_json_schema()}}}}


MOVE_BODY_SCHEMA = _body_schema(MoveRequest)


class PinResult(BaseModel):
    model: str
    version: int
    pinned: bool
    audit_id: int
    actor: str


PIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such model or version, or (pin) the version was deleted by retention: "
          "the registry knows it but its blob is no longer stored."},
    409: {"model": Problem, "description": "Pin: the version is pinned already. Unpin: it is not pinned."},
    413: {"model": Problem, "description": f"A body over {MAX_MOVE_BODY} bytes."},
    415: {"model": Problem, "description": "A content type other than JSON."},
    **UNAVAILABLE,
}


def _pin_route(action: PinAction) -> Any:
    operation = pin if action == "pin" else unpin

    async def change(
        request: Request, services: ServicesDep, model: ModelName, version: VersionNumber, principal: Operator,
    ) -> PinResult:
        body = await _body(request, Reason)
        await _check_model(services, model)
        try:
            changed = await operation(
                services.store, services.registry, app=services.settings.spec.name, model=model, version=version,
                actor=principal.actor, reason=body.reason,
            )
        except LifecycleError as exc:
            raise HTTPException(status_code=exc.status, detail=str(exc)) from exc
        return PinResult(model=model, version=version, pinned=changed.pinned, audit_id=changed.audit_id, actor=principal.actor)

    change.__name__ = action
    change.__doc__ = (
        "Pin a stored version: retention keeps its blob whatever its age, so it can always be rolled back to."
        if action == "pin" else
        "Unpin a version: retention may delete its blob again at the next pruning."
    ) + " Needs the operator role; the reason goes into the audit log."
    return change


def build_router() -> APIRouter:
    """The lifecycle routes: reads for viewers; promote, roll back, pin and unpin for operators."""
    writes = APIRouter(prefix="/api/v1", tags=["lifecycle"])
    for action in ("rollback", "promote"):
        writes.add_api_route(
            f"/models/{{model}}/{action}", _move_route(action), methods=["POST"],
            responses=MOVE_RESPONSES, response_model=MoveResult, openapi_extra=MOVE_BODY_SCHEMA,
        )
    for pin_action in ("pin", "unpin"):
        writes.add_api_route(
            f"/models/{{model}}/versions/{{version}}/{pin_action}", _pin_route(pin_action),
            methods=["POST"], responses=PIN_RESPONSES, response_model=PinResult, openapi_extra=_body_schema(Reason),
        )
    combined = APIRouter()
    combined.include_router(router)
    combined.include_router(writes)
    return combined
