"""The clients a request handler needs, created by the lifespan and found on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request

from streamwise_core.modelstore import ModelStore
from streamwise_core.registry import Registry

from .live import CurrentReader, LiveModel
from .settings import WebappSettings


@dataclass(frozen=True)
class Services:
    settings: WebappSettings
    store: ModelStore
    registry: Registry
    reader: CurrentReader
    live: LiveModel


def get_services(request: Request) -> Services:
    """FastAPI dependency; 503 if the lifespan has not started the clients (yet)."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise HTTPException(status_code=503, detail="starting up")
    return services
