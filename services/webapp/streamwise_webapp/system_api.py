"""The System page's endpoints: health, lag, throughput, freshness and dead letters."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from .auth import AUTH_RESPONSES, Principal, require_viewer
from .deps import ServicesDep
from .feed import DeadLetterItem
from .system import SystemState

router = APIRouter(prefix="/api/v1", tags=["system"])
Viewer = Annotated[Principal, Depends(require_viewer)]


@router.get("/system", responses=AUTH_RESPONSES)
async def system(_: Viewer, services: ServicesDep) -> SystemState:
    """Health of every service, consumer lag per topic and partition, throughput, freshness and a
    count of dead letters by reason (live: `/api/v1/live?channels=system`)."""
    return services.monitor.state or await services.monitor.check()


@router.get("/dead-letters", responses=AUTH_RESPONSES)
async def dead_letters(
    _: Viewer, services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    reason: Annotated[str | None, Query(min_length=1, max_length=200, description="Keep reasons containing this.")] = None,
) -> list[DeadLetterItem]:
    """Records a consumer could not handle, newest first, with the reason."""
    return services.dead_letters.items(limit, reason)
