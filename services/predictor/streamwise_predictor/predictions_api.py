"""The prediction routes: POST /v1/predict and /v1/predict/batch, with their documented request bodies."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from streamwise_core.adapters.http import JSON_TYPES, RequestRoute, problem_responses, require_media_type
from streamwise_core.contracts.appspec import AppSpec
from streamwise_core.contracts.events import PredictionMade, utcnow

from .deps import Services, served, services_of
from .holder import ServedModel
from .predictions import (
    Answer,
    BatchResponse,
    Checked,
    PredictionResponse,
    batch_schema,
    encode_answers,
    encode_prediction,
    encode_predictions,
    instance_schema,
    predict_checked,
    read_request,
)
from .settings import PredictorSettings

ERRORS = problem_responses(413, 415, 422, 503)


def _body_doc(schema: dict[str, object]) -> dict[str, object]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _record(services: Services, model: ServedModel, answers: list[Answer], encoded: bytes | None = None) -> None:
    """Queue the predictions for their topic; written in the background (``RecordBuffer``),
    so no answer waits for Kafka, and a broker that is down only loses records (logged).
    ``encoded``: the answers' JSON (``encode_answers``) when the response has it already."""
    services.recorder.add(PredictionMade.records(answers, model.meta.model, model.meta.version, utcnow(), encoded=encoded))


async def _predict(
    request: Request, spec: AppSpec, max_batch: int | None, mode: str,
) -> tuple[Services, ServedModel, list[Checked], list[Answer]]:
    """Read the request's instances and predict them with the version served now (timed, as ``mode``)."""
    require_media_type(request.headers.get("content-type"), JSON_TYPES)
    items = read_request(spec, await request.body(), max_batch)
    services = services_of(request)
    model = served(services)
    started = time.perf_counter()
    answers = predict_checked(spec, model, items)
    services.metrics.predicted(mode, len(answers), time.perf_counter() - started)
    return services, model, items, answers


def router(settings: PredictorSettings) -> APIRouter:
    """POST /v1/predict and /v1/predict/batch, documented for this application's spec and batch limit.

    Both read and answer for themselves (``RequestRoute``): no dependency solving or
    response-model serialisation per request; they find the model with ``services_of``.
    """
    spec, max_batch = settings.spec, settings.max_batch
    api = APIRouter(route_class=RequestRoute)

    @api.post("/v1/predict", response_model=PredictionResponse, responses=ERRORS, openapi_extra=_body_doc(instance_schema(spec)))
    async def predict_one(request: Request) -> Response:
        """Predict one instance with the current model version."""
        services, model, items, answers = await _predict(request, spec, None, "single")
        _record(services, model, answers)
        services.shadow.offer(items, answers)
        return Response(encode_prediction(answers[0], model.meta.model, model.meta.version), media_type="application/json")

    @api.post(
        "/v1/predict/batch", response_model=BatchResponse, responses=ERRORS,
        openapi_extra=_body_doc(batch_schema(spec, max_batch)),
    )
    async def predict_batch(request: Request) -> Response:
        """Predict many instances with one model version; all or nothing."""
        services, model, items, answers = await _predict(request, spec, max_batch, "batch")
        encoded = encode_answers(answers)  # once, for the response and the records
        _record(services, model, answers, encoded)
        services.shadow.offer(items, answers)
        return Response(
            encode_predictions(answers, model.meta.model, model.meta.version, encoded=encoded), media_type="application/json",
        )

    return api
