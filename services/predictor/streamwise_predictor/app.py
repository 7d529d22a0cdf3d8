"""Composition root of the predictor: serve the current model, swap in each new version."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from streamwise_core.events import utcnow
from streamwise_core.http import (
    JSON_TYPES,
    BodyLimit,
    Problem,
    install_error_handlers,
    post_request_route,
    problem_responses,
    require_media_type,
)
from streamwise_core.kafka import RecordBuffer, make_producer
from streamwise_core.modelstore import ModelStore
from streamwise_core.signing import Signer
from streamwise_core.telemetry import configure_logging, fastapi_telemetry, instrument_app, metrics_registry

from .holder import ServedModel
from .loading import LoadPolicy, ModelLoader
from .observability import ObservedHolder, PredictorMetrics, RefusedVersions
from .predictions import (
    Answer,
    BatchResponse,
    PredictionResponse,
    batch_schema,
    encode_answers,
    encode_prediction,
    encode_predictions,
    instance_schema,
    predict_checked,
    prediction_records,
    read_request,
)
from .settings import PredictorSettings
from .shadow import ShadowModels, ShadowScorer
from .watcher import VersionWatcher

log = logging.getLogger(__name__)
RECORD_LINGER_S = 0.05
"""Predictions are written to Kafka off the request path, gathered for this long into one batch:
a produce request costs the process CPU whatever its size (docs/benchmarks.md, *Serving*)."""
SHUTDOWN_GRACE_S = 3.0


class Ready(BaseModel):
    ready: bool
    version: int | None


def create_app(settings: PredictorSettings | None = None) -> FastAPI:
    settings = settings or PredictorSettings()
    configure_logging(settings.log_level, "predictor", json=settings.log_format == "json")
    spec, topics = settings.spec, settings.topics
    model_name = spec.model.name
    registry = metrics_registry()
    metrics = PredictorMetrics(registry, model_name)
    holder = ObservedHolder(metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = ModelStore.from_url(settings.redis_url, settings.topic_prefix, spec.name)
        loader = ModelLoader(LoadPolicy(cpu_share=settings.swap_load_cpu_share, gc_freeze=settings.swap_gc_freeze))
        watcher = VersionWatcher(
            store, Signer(settings.signing_key_map), holder, model_name, settings.poll_interval_ms / 1000, loader=loader,
        )
        watcher.refused = RefusedVersions(metrics)
        producer = make_producer(settings.kafka, client_id=f"{spec.name}-predictor")
        await producer.start()
        recorder = RecordBuffer(producer, topics.predictions, linger_s=RECORD_LINGER_S)
        recorder.start()
        shadows = ShadowModels(store, watcher, holder)
        app.state.shadow_models = shadows
        app.state.shadow = ShadowScorer(
            spec, shadows.challengers, recorder, sample=settings.shadow_sample,
        )
        app.state.watcher = watcher
        app.state.producer = producer
        app.state.recorder = recorder
        tasks = [asyncio.create_task(watcher.poll()), asyncio.create_task(watcher.listen())]
        if settings.shadow_sample > 0:
            tasks += [
                asyncio.create_task(shadows.poll(settings.poll_interval_ms / 1000)),
                asyncio.create_task(app.state.shadow.run()),
            ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            # Shutdown must not hang on a backend that is down or a read being torn down.
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), SHUTDOWN_GRACE_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(recorder.close(), SHUTDOWN_GRACE_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(producer.stop(), SHUTDOWN_GRACE_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(store.close(), SHUTDOWN_GRACE_S)

    app = FastAPI(title="Streamwise predictor", version="1", lifespan=lifespan, telemetry=fastapi_telemetry(settings.otel))
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    errors = problem_responses(413, 415, 422, 503)

    def body_doc(schema: dict[str, object]) -> dict[str, object]:
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}

    def served() -> ServedModel:
        current = holder.current
        if current is None:
            raise HTTPException(status_code=503, detail="no verified model loaded yet")
        return current

    def record(request: Request, model: ServedModel, answers: list[Answer], encoded: bytes | None = None) -> None:
        """Queue the predictions for their topic; written in the background (``RecordBuffer``),
        so no answer waits for Kafka, and a broker that is down only loses records (logged).
        ``encoded``: the answers' JSON (``encode_answers``) when the response has it already."""
        request.app.state.recorder.add(
            prediction_records(answers, model.meta.model, model.meta.version, utcnow(), encoded=encoded),
        )

    # The prediction routes read and answer for themselves (RequestRoute): no dependency solving
    # or response-model serialisation per request.
    @post_request_route(app, "/v1/predict", response_model=PredictionResponse, responses=errors, openapi_extra=body_doc(instance_schema(spec)))
    async def predict_one(request: Request) -> Response:
        """Predict one instance with the current model version."""
        require_media_type(request.headers.get("content-type"), JSON_TYPES)
        items = read_request(spec, await request.body(), None)
        model = served()
        started = time.perf_counter()
        answers = predict_checked(spec, model, items)
        metrics.predicted("single", 1, time.perf_counter() - started)
        record(request, model, answers)
        request.app.state.shadow.offer(items, answers)
        return Response(encode_prediction(answers[0], model.meta.model, model.meta.version), media_type="application/json")

    @post_request_route(
        app, "/v1/predict/batch", response_model=BatchResponse, responses=errors,
        openapi_extra=body_doc(batch_schema(spec, settings.max_batch)),
    )
    async def predict_batch(request: Request) -> Response:
        """Predict many instances with one model version; all or nothing."""
        require_media_type(request.headers.get("content-type"), JSON_TYPES)
        items = read_request(spec, await request.body(), settings.max_batch)
        model = served()
        started = time.perf_counter()
        answers = predict_checked(spec, model, items)
        metrics.predicted("batch", len(answers), time.perf_counter() - started)
        encoded = encode_answers(answers)  # once, for the response and the records
        record(request, model, answers, encoded)
        request.app.state.shadow.offer(items, answers)
        return Response(
            encode_predictions(answers, model.meta.model, model.meta.version, encoded=encoded), media_type="application/json",
        )

    @app.get("/v1/model", responses={503: {"model": Problem, "description": "No verified model loaded yet."}})
    async def current_model(request: Request) -> dict[str, object]:
        """The version being served, its metrics, and any refused versions."""
        model = served()
        return {
            "meta": model.meta.model_dump(mode="json"),
            "generation": model.generation,
            "swaps": holder.swaps,
            "refused": request.app.state.watcher.refused,
            "missing_versions": request.app.state.watcher.missing,
            "shadow": {
                "models": {m.meta.model: m.meta.version for m in request.app.state.shadow_models.challengers()},
                "sample": settings.shadow_sample, "scored": request.app.state.shadow.scored,
                "dropped": request.app.state.shadow.dropped,
            },
        }

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=Ready, responses={503: {"model": Ready, "description": "No verified model loaded yet."}})
    async def readyz() -> JSONResponse:
        """Ready means a verified model is loaded."""
        version = holder.version
        return JSONResponse({"ready": version is not None, "version": version}, status_code=200 if version is not None else 503)

    instrument_app(app, "predictor", registry)
    return app
