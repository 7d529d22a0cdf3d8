"""Composition root of the web app: ``uvicorn streamwise_webapp.app:create_app --factory``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from streamwise_core.errors import BackendUnavailable
from streamwise_core.http import install_error_handlers
from streamwise_core.modelstore import ModelStore
from streamwise_core.registry import Registry
from streamwise_core.signing import Signer
from streamwise_core.telemetry import configure_logging, instrument_app

from .api import router
from .deps import Services
from .lifecycle_api import build_router as lifecycle_router
from .live import CurrentReader, LiveModel
from .page import CONTENT_SECURITY_POLICY, PageContext, asset_version, load_template, render_page
from .settings import WebappSettings
from .views import InitialPage, VersionPoint, history_view

STATIC_DIR = Path(__file__).with_name("static")

SHUTDOWN_GRACE_S = 3.0


def create_app(settings: WebappSettings | None = None) -> FastAPI:
    """Build the app; Redis and the registry are connected only when the lifespan starts."""
    settings = settings or WebappSettings()
    configure_logging(settings.log_level, "webapp", json=settings.log_format == "json")
    spec = settings.spec
    template = load_template()
    version = asset_version()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = ModelStore.from_url(settings.redis_url, settings.topic_prefix, spec.name)
        registry = Registry.from_url(settings.database_url)
        reader = CurrentReader(store, Signer(settings.signing_key_map), spec.model.name)
        live = LiveModel(reader, store, spec.model.name, settings.poll_interval_ms / 1000)
        app.state.services = Services(settings, store, registry, reader, live)
        task = asyncio.create_task(live.run(), name="webapp-live-model")
        try:
            yield
        finally:
            task.cancel()
            # A pub/sub read being torn down can wait on socket timeouts: never hold shutdown.
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, SHUTDOWN_GRACE_S)
            app.state.services = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(store.close(), SHUTDOWN_GRACE_S)
            registry.close()

    app = FastAPI(
        title="Streamwise web app",
        version="1",
        description="The current model version and its live metrics.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(lifecycle_router(settings.api_key_list))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request) -> HTMLResponse:
        services: Services | None = getattr(request.app.state, "services", None)
        ctx = PageContext(
            app_name=spec.name,
            model_name=spec.model.name,
            base=request.scope.get("root_path", ""),
            ingest_url=settings.ingest_url,
            predictor_url=settings.predictor_url,
            history_limit=settings.history_limit,
            asset_version=version,
            initial=await initial_state(services) if services else None,
        )
        return HTMLResponse(
            render_page(template, ctx),
            headers={
                "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin",
                "Cache-Control": "no-cache",
            },
        )

    instrument_app(app, "webapp")
    return app


async def initial_state(services: Services) -> dict[str, Any]:
    """What the page shows before its live stream connects: the state now and the chart history."""
    state = services.live.state or await services.live.refresh()
    spec = services.settings.spec
    try:
        rows = await asyncio.to_thread(
            services.registry.versions, spec.name, spec.model.name, services.settings.history_limit
        )
        history: list[VersionPoint] | None = history_view(rows)
    except BackendUnavailable:
        history = None  # the script asks again once it is connected
    return InitialPage(state=state, history=history).model_dump(mode="json")
