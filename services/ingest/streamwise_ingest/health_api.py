"""The probes: GET /healthz (the process answers) and /readyz (Kafka is known)."""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaError
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from .deps import ServicesIfStartedDep
from .settings import IngestSettings

READY_TIMEOUT_S = 2.0


class Ready(BaseModel):
    ready: bool


def router(settings: IngestSettings) -> APIRouter:
    """The probes; they take no settings of their own (``settings`` for the same factory as the other routers)."""
    api = APIRouter()

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", response_model=Ready, responses={503: {"model": Ready, "description": "Kafka is not known."}})
    async def readyz(services: ServicesIfStartedDep) -> JSONResponse:
        ready = False
        if services is not None:  # not before the lifespan started the producer
            client = services.producer.client
            try:
                # Cached metadata outlives the broker: ask it now, briefly.
                async with asyncio.timeout(READY_TIMEOUT_S):
                    ready = bool(await client.fetch_all_metadata()) and bool(client.cluster.brokers())
            except (KafkaError, TimeoutError, OSError):
                ready = False
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    return api
