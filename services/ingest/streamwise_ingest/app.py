"""Composition root of ingest: HTTP in, Kafka out."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from streamwise_core.http import ApiKeyCheck, install_error_handlers, read_body
from streamwise_core.kafka import make_producer

from .parsing import parse_items
from .settings import IngestSettings
from .sink import KafkaSink
from .validation import validate_events, validate_labels

log = logging.getLogger(__name__)

BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]}},
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}


class Accepted(BaseModel):
    accepted: int
    ids: list[str]


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    spec, topics = settings.spec, settings.topics

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = make_producer(settings.kafka, client_id=f"{spec.name}-ingest")
        await producer.start()
        app.state.sink = KafkaSink(producer, settings.produce_timeout_s)
        app.state.producer = producer
        try:
            yield
        finally:
            await producer.stop()

    app = FastAPI(title="Streamwise ingest", version="1", lifespan=lifespan)
    install_error_handlers(app)
    require_key = Depends(ApiKeyCheck(settings.api_key_list))

    @app.post("/v1/events", status_code=202, response_model=Accepted, dependencies=[require_key], openapi_extra=BODY_DOC)
    async def post_events(request: Request) -> Accepted:
        """Accept one event, a JSON list of events, or NDJSON; all or nothing."""
        items = parse_items(
            await read_body(request, settings.max_body_bytes),
            request.headers.get("content-type", "application/json"),
            max_items=settings.max_items_per_request,
        )
        events = validate_events(spec, items)
        await request.app.state.sink.write(topics.events, [(e.id.encode(), e.to_bytes()) for e in events])
        return Accepted(accepted=len(events), ids=[e.id for e in events])

    @app.post("/v1/labels", status_code=202, response_model=Accepted, dependencies=[require_key], openapi_extra=BODY_DOC)
    async def post_labels(request: Request) -> Accepted:
        """Accept labels for earlier events, by event id; all or nothing."""
        items = parse_items(
            await read_body(request, settings.max_body_bytes),
            request.headers.get("content-type", "application/json"),
            max_items=settings.max_items_per_request,
        )
        labels = validate_labels(spec, items)
        await request.app.state.sink.write(topics.labels, [(x.id.encode(), x.to_bytes()) for x in labels])
        return Accepted(accepted=len(labels), ids=[x.id for x in labels])

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        producer = request.app.state.producer
        ready = bool(producer.client.cluster.brokers())
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    return app
