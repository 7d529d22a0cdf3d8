"""JSON and event-stream endpoints of the web app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse, StreamingResponse

from streamwise_core.errors import BackendUnavailable

from .deps import Services, get_services
from .live import LiveModel, VersionUnreadable
from .sse import sse_comment, sse_event
from .views import CurrentModel, Health, Problem, VersionPoint, history_view

READY_TIMEOUT_S = 2.0
RECONNECT_MS = 3000

router = APIRouter()
ServicesDep = Annotated[Services, Depends(get_services)]


@router.get(
    "/api/v1/models/current",
    tags=["models"],
    responses={
        404: {"model": Problem, "description": "No version published yet."},
        502: {"model": Problem, "description": "The current version's blob is missing or fails verification."},
        503: {"model": Problem, "description": "Redis is unavailable."},
    },
)
async def current_model(services: ServicesDep) -> CurrentModel:
    """The version predictions are served from now, with its metrics."""
    try:
        current = await services.reader.read()
    except VersionUnreadable as exc:
        raise HTTPException(status_code=502, detail=str(exc)) from exc
    if current is None:
        raise HTTPException(status_code=404, detail="no model version published yet")
    return current


@router.get(
    "/api/v1/models/versions",
    tags=["models"],
    responses={503: {"model": Problem, "description": "The registry is unavailable."}},
)
async def model_versions(
    services: ServicesDep, limit: Annotated[int, Query(ge=1, le=1000)] = 200
) -> list[VersionPoint]:
    """The newest ``limit`` versions from the registry, oldest first, for charting."""
    spec = services.settings.spec
    rows = await asyncio.to_thread(services.registry.versions, spec.name, spec.model.name, limit)
    return history_view(rows)


@router.get(
    "/api/v1/live",
    tags=["models"],
    response_class=StreamingResponse,
    responses={
        200: {
            "description": (
                "Server-Sent Events: a `state` event (data: a LiveState JSON object with `status`, "
                "`current` and `server_time`) on connect and on every change of version or status; "
                "comment lines keep an idle connection open."
            ),
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def live(services: ServicesDep) -> StreamingResponse:
    """Stream the current version as it changes."""
    return StreamingResponse(
        _events(services.live, services.settings.keepalive_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(live: LiveModel, keepalive_s: float) -> AsyncIterator[bytes]:
    retry: int | None = RECONNECT_MS
    async for state in live.updates(keepalive_s):
        if state is None:
            yield sse_comment("keep-alive")
            continue
        yield sse_event(state.model_dump_json(), event="state", retry_ms=retry)
        retry = None


@router.get("/healthz", tags=["health"])
async def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@router.get(
    "/readyz",
    tags=["health"],
    response_model=Health,
    responses={503: {"model": Health, "description": "Redis does not answer."}},
)
async def readyz(services: ServicesDep) -> Health | JSONResponse:
    """Readiness: Redis answers."""
    try:
        await asyncio.wait_for(
            services.store.current_version(services.settings.spec.model.name), READY_TIMEOUT_S
        )
    except (BackendUnavailable, TimeoutError):
        return JSONResponse(status_code=503, content=Health(status="unavailable").model_dump())
    return Health(status="ready")
