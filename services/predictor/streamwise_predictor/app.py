"""Composition root of the predictor: serve the current model, swap in each new version."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka.errors import KafkaError
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from streamwise_core.events import PredictionMade, utcnow
from streamwise_core.http import BodyLimit, Problem, install_error_handlers, json_body, problem_responses
from streamwise_core.kafka import make_producer, send_batches
from streamwise_core.modelstore import ModelStore
from streamwise_core.signing import Signer
from streamwise_core.telemetry import configure_logging, instrument_app, metrics_registry

from .holder import ServedModel
from .observability import ObservedHolder, PredictorMetrics, RefusedVersions
from .service import (
    BatchResponse,
    Prediction,
    PredictionResponse,
    batch_schema,
    check_instances,
    instance_schema,
    parse_batch,
    parse_instance,
    predict_instances,
)
from .loading import LoadPolicy, ModelLoader
from .settings import PredictorSettings
from .watcher import VersionWatcher

log = logging.getLogger(__name__)
RECORD_TIMEOUT_S = 0.5
SHUTDOWN_GRACE_S = 3.0


def _log_undelivered(delivery: asyncio.Future[object]) -> None:
    if not delivery.cancelled() and delivery.exception() is not None:
        log.warning("prediction not recorded: %r", delivery.exception())


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
        app.state.watcher = watcher
        app.state.producer = producer
        tasks = [asyncio.create_task(watcher.poll()), asyncio.create_task(watcher.listen())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            # Shutdown must not hang on a backend that is down or a read being torn down.
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), SHUTDOWN_GRACE_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(producer.stop(), SHUTDOWN_GRACE_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(store.close(), SHUTDOWN_GRACE_S)

    app = FastAPI(title="Streamwise predictor", version="1", lifespan=lifespan)
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

    async def record(request: Request, model: ServedModel, predictions: list[Prediction]) -> None:
        """Write predictions to their topic; a broker that is down delays no answer by more
        than ``RECORD_TIMEOUT_S`` (the prediction is then logged as not recorded)."""
        producer = request.app.state.producer
        try:
            async with asyncio.timeout(RECORD_TIMEOUT_S):
                made_at = utcnow()  # one default-factory call per request, not per prediction
                records = [
                    (
                        p.id.encode(),
                        PredictionMade(
                            id=p.id, model=model.meta.model, version=model.meta.version,
                            prediction=p.prediction, probabilities=p.probabilities, made_at=made_at,
                        ).to_bytes(),
                    )
                    for p in predictions
                ]
                for delivery in await send_batches(producer, topics.predictions, records):
                    delivery.add_done_callback(_log_undelivered)
        except (KafkaError, TimeoutError) as exc:
            log.warning("%s prediction(s) not recorded: %r", len(predictions), exc)

    @app.post("/v1/predict", response_model=PredictionResponse, responses=errors, openapi_extra=body_doc(instance_schema(spec)))
    async def predict_one(request: Request) -> PredictionResponse:
        """Predict one instance with the current model version."""
        instance = parse_instance(await json_body(request))
        check_instances(spec, [instance])
        model = served()
        started = time.perf_counter()
        [p] = predict_instances(spec, model, [instance])
        metrics.predicted("single", 1, time.perf_counter() - started)
        await record(request, model, [p])
        return PredictionResponse(**p.model_dump(), model=model.meta.model, version=model.meta.version)

    @app.post(
        "/v1/predict/batch", response_model=BatchResponse, responses=errors,
        openapi_extra=body_doc(batch_schema(spec, settings.max_batch)),
    )
    async def predict_batch(request: Request) -> BatchResponse:
        """Predict many instances with one model version; all or nothing."""
        batch = parse_batch(await json_body(request), settings.max_batch)
        check_instances(spec, batch.instances)
        model = served()
        started = time.perf_counter()
        predictions = predict_instances(spec, model, batch.instances)
        metrics.predicted("batch", len(predictions), time.perf_counter() - started)
        await record(request, model, predictions)
        return BatchResponse(model=model.meta.model, version=model.meta.version, predictions=predictions)

    @app.get("/v1/model", responses={503: {"model": Problem, "description": "No verified model loaded yet."}})
    async def current_model(request: Request) -> dict[str, object]:
        """The version being served, its metrics, and any refused versions."""
        model = served()
        return {
            "meta": model.meta.model_dump(mode="json"),
            "generation": model.generation,
            "swaps": holder.swaps,
            "refused": request.app.state.watcher.refused,
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
