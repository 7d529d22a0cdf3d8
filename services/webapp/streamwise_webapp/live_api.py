"""JSON and event-stream endpoints of the web app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse, StreamingResponse

from streamwise_core.contracts.errors import BackendUnavailable, ValidationFailed

from .auth import AUTH_RESPONSES, require_viewer
from .deps import ServicesDep
from .hub import CHANNELS, Hub
from .live import LiveModel, VersionUnreadable
from .sse import sse_comment, sse_event
from .views import CurrentModel, Health, Problem, VersionPoint, history_view

READY_TIMEOUT_S = 2.0
RECONNECT_MS = 3000

router = APIRouter()


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
    """The version predictions are served from now, with its metrics (public: a status read)."""
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
    dependencies=[Depends(require_viewer)],
    responses={503: {"model": Problem, "description": "The registry is unavailable."}, **AUTH_RESPONSES},
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
    dependencies=[Depends(require_viewer)],
    response_class=StreamingResponse,
    responses={
        200: {
            "description": (
                "Server-Sent Events. `state` (a LiveState: `status`, `current`, `server_time`) on connect and "
                "on every change of version or status; `feed` (a FeedItem) for each sampled event and each "
                "feedback; `system` (a SystemState) after every check of the services. Comment lines keep "
                "an idle connection open."
            ),
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **AUTH_RESPONSES,
    },
)
async def live(
    services: ServicesDep,
    channels: Annotated[str, Query(max_length=64, description="Comma-separated: state, feed, system.")] = "state",
) -> StreamingResponse:
    """Stream what changes, without reloading the page."""
    wanted = frozenset(c.strip() for c in channels.split(",") if c.strip())
    if not wanted or not wanted <= CHANNELS:
        raise ValidationFailed([{"loc": ["query", "channels"], "msg": f"choose from: {', '.join(sorted(CHANNELS))}"}])
    return StreamingResponse(
        _events(services.live, services.hub, wanted, services.settings.keepalive_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(live: LiveModel, hub: Hub, channels: frozenset[str], keepalive_s: float) -> AsyncIterator[bytes]:
    retry: int | None = RECONNECT_MS
    with hub.subscribe(channels) as queue:
        if "state" in channels:  # the state now, then its changes as the hub brings them
            state = live.state or await live.refresh()
            yield sse_event(state.model_dump_json(), event="state", retry_ms=retry)
            retry = None
        while True:
            try:
                channel, data = await asyncio.wait_for(queue.get(), keepalive_s)
            except TimeoutError:
                yield sse_comment("keep-alive")
                continue
            yield sse_event(data, event=channel, retry_ms=retry)
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
