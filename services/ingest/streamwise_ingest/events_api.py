"""The write routes: POST /v1/events and /v1/labels, with their documented request bodies."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from streamwise_core.adapters.http import (
    JSON_TYPES,
    NDJSON_TYPES,
    RequestRoute,
    json_response,
    problem_responses,
    read_body,
    require_media_type,
)
from streamwise_core.contracts.appspec import AppSpec
from streamwise_core.contracts.schema import features_json_schema, label_json_schema

from .deps import services_of
from .parsing import parse_items
from .settings import IngestSettings
from .validation import ID_PATTERN, event_records, validate_labels

ERRORS = problem_responses(401, 413, 415, 422, 503)
READABLE = JSON_TYPES | NDJSON_TYPES


class Accepted(BaseModel):
    accepted: int
    ids: list[str]


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


def router(settings: IngestSettings) -> APIRouter:
    """POST /v1/events and /v1/labels, documented for this application's spec and limits.

    Both read and answer for themselves (``RequestRoute``): no dependency solving or
    response-model serialisation per request; they find the sink with ``services_of``.
    """
    spec, topics = settings.spec, settings.topics
    max_bytes, max_items = settings.max_body_bytes, settings.max_items_per_request
    api = APIRouter(route_class=RequestRoute)

    async def items_of(request: Request) -> list[Any]:
        content_type = request.headers.get("content-type")
        require_media_type(content_type, READABLE)
        return parse_items(await read_body(request, max_bytes), content_type or "application/json", max_items=max_items)

    @api.post(
        "/v1/events", status_code=202, response_model=Accepted, responses=ERRORS,
        openapi_extra=_body_doc(event_schema(spec), max_items, "event"),
    )
    async def post_events(request: Request) -> Response:
        """Accept one event, a JSON list of events, or NDJSON; all or nothing."""
        content_type = request.headers.get("content-type")
        require_media_type(content_type, READABLE)
        ids, records = event_records(
            spec, await read_body(request, max_bytes), content_type or "application/json", max_items=max_items,
        )
        services = services_of(request)
        await services.sink.write(topics.events, records)
        services.accepted_events.inc(len(ids))
        return json_response({"accepted": len(ids), "ids": ids}, status_code=202)

    @api.post(
        "/v1/labels", status_code=202, response_model=Accepted, responses=ERRORS,
        openapi_extra=_body_doc(label_schema(spec), max_items, "label"),
    )
    async def post_labels(request: Request) -> Response:
        """Accept labels for earlier events, by event id; all or nothing.

        Ingest does not look events up: a label for an id it never saw is accepted, and the
        trainer keeps it waiting until its event arrives (or evicts it).
        """
        labels = validate_labels(spec, await items_of(request))
        services = services_of(request)
        await services.sink.write(topics.labels, [(x.id.encode(), x.to_bytes()) for x in labels])
        services.accepted_labels.inc(len(labels))
        return json_response({"accepted": len(labels), "ids": [x.id for x in labels]}, status_code=202)

    return api
