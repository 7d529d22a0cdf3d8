"""Composition root of ingest: HTTP in, Kafka out (``uvicorn streamwise_ingest.app:create_app --factory``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from streamwise_core.adapters.http import BodyLimit, include_request_routes, install_error_handlers, require_api_key
from streamwise_core.adapters.kafka import make_producer
from streamwise_core.adapters.telemetry import configure_logging, fastapi_telemetry, instrument_app, metrics_registry

from . import events_api, health_api
from .deps import Services
from .observability import IngestMetrics
from .settings import IngestSettings
from .sink import KafkaSink

log = logging.getLogger(__name__)

WRITE_ROUTES = frozenset({("POST", "/v1/events"), ("POST", "/v1/labels")})
"""The routes that need an API key (``require_api_key``)."""


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    """Build the app; Kafka is connected only when the lifespan starts."""
    settings = settings or IngestSettings()
    configure_logging(settings.log_level, "ingest", json=settings.log_format == "json")
    registry = metrics_registry()
    metrics = IngestMetrics(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = make_producer(settings.kafka, client_id=f"{settings.spec.name}-ingest")
        await producer.start()
        app.state.services = Services(
            settings=settings, metrics=metrics, producer=producer, sink=KafkaSink(producer, settings.produce_timeout_s),
        )
        try:
            yield
        finally:
            await producer.stop()

    app = FastAPI(title="Streamwise ingest", version="1", lifespan=lifespan, telemetry=fastapi_telemetry(settings.otel))
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    include_request_routes(app, events_api.router(settings))  # not a router node to match through per request
    app.include_router(health_api.router(settings))
    require_api_key(app, settings.api_key_list, WRITE_ROUTES)
    instrument_app(app, "ingest", registry, on_response=metrics.on_response)
    return app
