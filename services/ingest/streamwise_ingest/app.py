"""Composition root of ingest: HTTP in, Kafka out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from streamwise_core.appspec import AppSpec
from streamwise_core.http import (
    JSON_TYPES,
    NDJSON_TYPES,
    BodyLimit,
    install_error_handlers,
    json_response,
    post_request_route,
    problem_responses,
    read_body,
    require_api_key,
    require_media_type,
)
from streamwise_core.kafka import make_producer
from streamwise_core.schema import features_json_schema, label_json_schema
from streamwise_core.telemetry import configure_logging, fastapi_telemetry, instrument_app, metrics_registry

from .observability import IngestMetrics
from .parsing import parse_items
from .settings import IngestSettings
from .sink import KafkaSink
from .validation import ID_PATTERN, event_records, validate_labels

log = logging.getLogger(__name__)

ERRORS = problem_responses(401, 413, 415, 422, 503)
WRITE_ROUTES = frozenset({("POST", "/v1/events"), ("POST", "/v1/labels")})
"""The routes that need an API key (``require_api_key``)."""


class Accepted(BaseModel):
    accepted: int
    ids: list[str]


class Ready(BaseModel):
    ready: bool


def _body_doc(item: dict[str, Any], max_items: int, what: str) -> dict[str, Any]:
    """OpenAPI request body: one item, a JSON list of items, or NDJSON (one item per line)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            item,
                            {"type": "array", "items": item, "minItems": 1, "maxItems": max_items},
                        ]
                    }
                },
                "application/x-ndjson": {
                    "schema": {"type": "string", "description": f"One {what} as JSON per line."}
                },
            },
        }
    }


TIMESTAMP = {
    "anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}],
    "description": "When it happened, with a time zone, from 2000-01-01 to now + 1 day; default (absent or null): now.",
}


def event_schema(spec: AppSpec) -> dict[str, Any]:
    """An event as clients send it, for this application's features and task."""
    return {
        "type": "object",
        "title": "Event",
        "properties": {
            "id": {
                "anyOf": [{"type": "string", "pattern": ID_PATTERN}, {"type": "null"}],
                "description": "Generated when absent or null.",
            },
            "features": features_json_schema(spec),
            "label": {"anyOf": [label_json_schema(spec), {"type": "null"}], "description": "When already known."},
            "timestamp": TIMESTAMP,
        },
        "required": ["features"],
        "additionalProperties": False,
    }


def label_schema(spec: AppSpec) -> dict[str, Any]:
    """A late label as clients send it: the id of its event and the outcome."""
    return {
        "type": "object",
        "title": "Label",
        "properties": {
            "id": {"type": "string", "pattern": ID_PATTERN, "description": "The id of the event it labels."},
            "label": label_json_schema(spec),
            "timestamp": TIMESTAMP,
        },
        "required": ["id", "label"],
        "additionalProperties": False,
    }


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    configure_logging(settings.log_level, "ingest", json=settings.log_format == "json")
    spec, topics = settings.spec, settings.topics
    registry = metrics_registry()
    metrics = IngestMetrics(registry)

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

    app = FastAPI(title="Streamwise ingest", version="1", lifespan=lifespan, telemetry=fastapi_telemetry(settings.otel))
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    readable = JSON_TYPES | NDJSON_TYPES

    async def items_of(request: Request) -> list[Any]:
        content_type = request.headers.get("content-type")
        require_media_type(content_type, readable)
        return parse_items(
            await read_body(request, settings.max_body_bytes),
            content_type or "application/json",
            max_items=settings.max_items_per_request,
        )

    accepted_events = metrics.accepted.labels("events")

    @post_request_route(
        app, "/v1/events", status_code=202, response_model=Accepted, responses=ERRORS,
        openapi_extra=_body_doc(event_schema(spec), settings.max_items_per_request, "event"),
    )
    async def post_events(request: Request) -> Response:
        """Accept one event, a JSON list of events, or NDJSON; all or nothing."""
        content_type = request.headers.get("content-type")
        require_media_type(content_type, readable)
        ids, records = event_records(
            spec, await read_body(request, settings.max_body_bytes), content_type or "application/json",
            max_items=settings.max_items_per_request,
        )
        await request.app.state.sink.write(topics.events, records)
        accepted_events.inc(len(ids))
        return json_response({"accepted": len(ids), "ids": ids}, status_code=202)

    @post_request_route(
        app, "/v1/labels", status_code=202, response_model=Accepted, responses=ERRORS,
        openapi_extra=_body_doc(label_schema(spec), settings.max_items_per_request, "label"),
    )
    async def post_labels(request: Request) -> Response:
        """Accept labels for earlier events, by event id; all or nothing.

        Ingest does not look events up: a label for an id it never saw is accepted, and the
        trainer keeps it waiting until its event arrives (or evicts it).
        """
        labels = validate_labels(spec, await items_of(request))
        await request.app.state.sink.write(topics.labels, [(x.id.encode(), x.to_bytes()) for x in labels])
        metrics.accepted.labels("labels").inc(len(labels))
        return json_response({"accepted": len(labels), "ids": [x.id for x in labels]}, status_code=202)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=Ready, responses={503: {"model": Ready, "description": "Kafka is not known."}})
    async def readyz(request: Request) -> JSONResponse:
        producer = request.app.state.producer
        try:
            # Cached metadata outlives the broker: ask it now, briefly.
            async with asyncio.timeout(2):
                ready = bool(await producer.client.fetch_all_metadata()) and bool(producer.client.cluster.brokers())
        except (KafkaError, TimeoutError, OSError):
            ready = False
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    require_api_key(app, settings.api_key_list, WRITE_ROUTES)
    instrument_app(app, "ingest", registry, on_response=metrics.on_response)
    return app
