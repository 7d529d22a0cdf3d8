"""Composition root of the predictor: serve the current model, swap in each new version
(``uvicorn streamwise_predictor.app:create_app --factory``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from streamwise_core.adapters.http import BodyLimit, include_request_routes, install_error_handlers
from streamwise_core.adapters.kafka import RecordBuffer, make_producer
from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.adapters.telemetry import configure_logging, fastapi_telemetry, instrument_app, metrics_registry
from streamwise_core.contracts.signing import Signer

from . import health_api, model_api, predictions_api
from .deps import Services
from .loading import LoadPolicy, ModelLoader
from .observability import ObservedHolder, PredictorMetrics, RefusedVersions
from .settings import PredictorSettings
from .shadow import ShadowModels, ShadowScorer
from .watcher import VersionWatcher

log = logging.getLogger(__name__)
RECORD_LINGER_S = 0.05
"""Predictions are written to Kafka off the request path, gathered for this long into one batch:
a produce request costs the process CPU whatever its size (docs/benchmarks.md, *Serving*)."""
SHUTDOWN_GRACE_S = 3.0


def create_app(settings: PredictorSettings | None = None) -> FastAPI:
    """Build the app; Redis and Kafka are connected, and the model watched, only when the lifespan starts."""
    settings = settings or PredictorSettings()
    configure_logging(settings.log_level, "predictor", json=settings.log_format == "json")
    registry = metrics_registry()
    metrics = PredictorMetrics(registry, settings.spec.model.name)
    holder = ObservedHolder(metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await _start(settings, metrics, holder)
        app.state.services = services
        watcher, shadows = services.watcher, services.shadow_models
        tasks = [asyncio.create_task(watcher.poll()), asyncio.create_task(watcher.listen())]
        if settings.shadow_sample > 0:
            tasks += [
                asyncio.create_task(shadows.poll(settings.poll_interval_ms / 1000)),
                asyncio.create_task(services.shadow.run()),
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
                await asyncio.wait_for(services.recorder.close(), SHUTDOWN_GRACE_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(services.producer.stop(), SHUTDOWN_GRACE_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(services.store.close(), SHUTDOWN_GRACE_S)

    app = FastAPI(title="Streamwise predictor", version="1", lifespan=lifespan, telemetry=fastapi_telemetry(settings.otel))
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    include_request_routes(app, predictions_api.router(settings))  # not a router node to match through per request
    app.include_router(model_api.router(settings))
    app.include_router(health_api.router(settings))
    instrument_app(app, "predictor", registry)
    return app


async def _start(settings: PredictorSettings, metrics: PredictorMetrics, holder: ObservedHolder) -> Services:
    """Every client wired, the producer and the prediction records' buffer started; the watchers
    not yet running (the lifespan runs them)."""
    spec = settings.spec
    store = ModelStore.from_url(settings.redis_url, settings.topic_prefix, spec.name)
    loader = ModelLoader(LoadPolicy(cpu_share=settings.swap_load_cpu_share, gc_freeze=settings.swap_gc_freeze))
    watcher = VersionWatcher(
        store, Signer(settings.signing_key_map), holder, spec.model.name, settings.poll_interval_ms / 1000, loader=loader,
    )
    watcher.refused = RefusedVersions(metrics)
    producer = make_producer(settings.kafka, client_id=f"{spec.name}-predictor")
    await producer.start()
    recorder = RecordBuffer(producer, settings.topics.predictions, linger_s=RECORD_LINGER_S)
    recorder.start()
    shadows = ShadowModels(store, watcher, holder)
    return Services(
        settings=settings, metrics=metrics, holder=holder, store=store, watcher=watcher, producer=producer,
        recorder=recorder, shadow_models=shadows,
        shadow=ShadowScorer(spec, shadows.challengers, recorder, sample=settings.shadow_sample),
    )
