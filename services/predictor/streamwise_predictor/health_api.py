"""The probes: GET /healthz (the process answers) and /readyz (a verified model is loaded)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from .deps import ServicesIfStartedDep
from .settings import PredictorSettings


class Ready(BaseModel):
    ready: bool
    version: int | None


def router(settings: PredictorSettings) -> APIRouter:
    """The probes; they take no settings of their own (``settings`` for the same factory as the other routers)."""
    api = APIRouter()

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", response_model=Ready, responses={503: {"model": Ready, "description": "No verified model loaded yet."}})
    async def readyz(services: ServicesIfStartedDep) -> JSONResponse:
        """Ready means a verified model is loaded."""
        version = services.holder.version if services is not None else None
        return JSONResponse({"ready": version is not None, "version": version}, status_code=200 if version is not None else 503)

    return api
