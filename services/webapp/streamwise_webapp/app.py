"""Composition root of the web app: ``uvicorn streamwise_webapp.app:create_app --factory``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from streamwise_core.adapters.http import BodyLimit, install_error_handlers, problem_body
from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.adapters.registry import Registry
from streamwise_core.adapters.telemetry import configure_logging, fastapi_telemetry, instrument_app
from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_core.contracts.signing import Signer

from .accounts import Accounts, Role
from .application_api import router as app_router
from .auth import SESSION_COOKIE, Authenticator
from .auth_api import router as auth_router
from .champions_api import router as champions_router
from .deps import Services
from .feed import DeadLetterLog, FeedBuffer, FreshnessTracker, RateMeter, Sampler
from .feed_worker import FeedWorker
from .hub import Hub
from .lifecycle_api import build_router as lifecycle_router
from .live import CurrentReader, LiveModel
from .live_api import router
from .page import CONTENT_SECURITY_POLICY, PAGES, SIGN_IN, Page, PageContext, asset_version, load_templates, render_page
from .settings import WebappSettings
from .streams import LabelWriter, StreamWatcher
from .system import KafkaStatus, ServiceHealth, SystemMonitor
from .system_api import router as system_router
from .upstream import PredictorClient, ServiceProber
from .views import InitialPage, LiveState, LiveStatus, VersionPoint, history_view

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
SHUTDOWN_GRACE_S = 3.0
MAX_BODY_BYTES = 64 * 1024
BOOTSTRAP_RETRY_S = 1.0
FASTAPI_BODY_ERROR = "There was an error parsing the body"
"""FastAPI's 400 for a body it cannot decode (not UTF-8): answered as every other bad body, 422."""
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}


def create_app(settings: WebappSettings | None = None) -> FastAPI:
    """Build the app; every client is connected only when the lifespan starts."""
    settings = settings or WebappSettings()
    configure_logging(settings.log_level, "webapp", json=settings.log_format == "json")
    # One line per call to the other services every few seconds says nothing: problems are logged.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    spec = settings.spec
    templates = load_templates()
    version = asset_version()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = _build(settings)
        app.state.services = services
        tasks = [
            asyncio.create_task(coro, name=name) for name, coro in (
                ("webapp-live-model", services.live.run()),
                ("webapp-streams", services.watcher.run()),
                ("webapp-feed", services.feed_worker.run()),
                ("webapp-system", services.monitor.run()),
                ("webapp-bootstrap", _bootstrap_admin(services)),
            )
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            # A pub/sub read or a Kafka client being torn down can wait on socket timeouts:
            # give them a grace period, never more (``asyncio.wait`` does not wait past it).
            await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_S)
            app.state.services = None
            closing = [asyncio.create_task(c) for c in (services.labels.close(), services.http.aclose(), services.store.close())]
            await asyncio.wait(closing, timeout=SHUTDOWN_GRACE_S)
            services.registry.close()
            services.accounts.close()

    app = FastAPI(
        title="Streamwise web app",
        version="1",
        description=(
            "The application people use and its control plane. Sign in (`POST /api/v1/session`) for a "
            "session cookie, or send `X-API-Key`. Roles: viewer (read), operator (feedback, promote, roll "
            "back, challengers), admin (people and API keys). Writes made with the cookie need `X-CSRF-Token`."
        ),
        lifespan=lifespan,
        telemetry=fastapi_telemetry(settings.otel),
    )
    install_error_handlers(app)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == FASTAPI_BODY_ERROR:
            problem = {"loc": ["body"], "msg": "the body is not UTF-8 JSON", "type": "json_invalid"}
            return JSONResponse(status_code=422, content=problem_body([problem]))
        return await http_exception_handler(request, exc)

    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.include_router(router)
    app.include_router(auth_router)
    app.include_router(app_router)
    app.include_router(champions_router)
    app.include_router(lifecycle_router())
    app.include_router(system_router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def page_route(page: Page) -> Callable[[Request], Awaitable[HTMLResponse]]:
        async def show(request: Request) -> HTMLResponse:
            services: Services | None = getattr(request.app.state, "services", None)
            signed_in = False
            token = request.cookies.get(SESSION_COOKIE)
            if services is not None and token:
                with contextlib.suppress(BackendUnavailable):
                    signed_in = await services.auth.principal(request, None, token) is not None
            shown = page if signed_in else SIGN_IN
            initial = await initial_state(services) if services and signed_in and page.name in ("app", "models") else None
            ctx = PageContext(
                app_name=spec.name, model_name=spec.model.name, base=request.scope.get("root_path", ""),
                ingest_url=settings.ingest_url, predictor_url=settings.predictor_url,
                history_limit=settings.history_limit, asset_version=version, initial=initial,
            )
            return HTMLResponse(render_page(templates, shown, ctx, signed_in=signed_in), headers=PAGE_HEADERS)

        show.__name__ = f"page_{page.name}"
        return show

    for page in PAGES.values():
        app.add_api_route(page.path, page_route(page), methods=["GET"], response_class=HTMLResponse, include_in_schema=False)

    instrument_app(app, "webapp")
    return app


def _build(settings: WebappSettings) -> Services:
    """Every client and background worker, wired; nothing is connected yet."""
    spec = settings.spec
    store = ModelStore.from_url(settings.redis_url, settings.topic_prefix, spec.name)
    registry = Registry.from_url(settings.database_url)
    accounts = Accounts.from_url(settings.database_url)
    reader = CurrentReader(store, Signer(settings.signing_key_map), spec.model.name)
    live = LiveModel(reader, store, spec.model.name, settings.poll_interval_ms / 1000)
    hub = Hub()
    live.add_listener(lambda state: hub.publish("state", state.model_dump_json()))
    http_client = httpx.AsyncClient(timeout=settings.upstream.timeout_s)
    predictor = PredictorClient(http_client, settings.upstream.predictor)
    feed = FeedBuffer(settings.feed_size)
    feed_worker = FeedWorker(predictor, feed, lambda item: hub.publish("feed", item.model_dump_json()))
    meter, freshness = RateMeter(), FreshnessTracker()
    live.add_listener(ServedFollower(freshness, settings.topics.events))
    dead_letters = DeadLetterLog(settings.dead_letters_kept)
    watcher = StreamWatcher(
        settings.kafka, settings.topics, f"{spec.name}-webapp", sampler=Sampler(settings.feed_rate), meter=meter,
        freshness=freshness, dead_letters=dead_letters, on_sample=feed_worker.offer,
    )

    def webapp_health() -> ServiceHealth:
        state = live.state
        ready = state is not None and state.status is not LiveStatus.UNAVAILABLE
        return ServiceHealth(name="webapp", url="", healthy=True, ready=ready, latency_ms=None,
                             problem=None if ready else "model store unavailable")

    keys = settings.api_key_list
    monitor = SystemMonitor(
        ServiceProber(http_client, keys[0] if keys else None),
        {"ingest": settings.upstream.ingest, "predictor": settings.upstream.predictor, "trainer": settings.upstream.trainer},
        settings.system_poll_s, meter=meter, freshness=freshness, dead_letters=dead_letters,
        kafka=lambda: KafkaStatus(connected=watcher.connected, problem=watcher.problem), webapp=webapp_health,
        publish=lambda state: hub.publish("system", state.model_dump_json()),
    )
    return Services(
        settings=settings, store=store, registry=registry, reader=reader, live=live, accounts=accounts,
        auth=Authenticator(accounts, keys, Role(settings.machine_role)), hub=hub, feed=feed, feed_worker=feed_worker,
        watcher=watcher, monitor=monitor, dead_letters=dead_letters, freshness=freshness, http=http_client,
        labels=LabelWriter(settings.kafka, settings.topics.labels, f"{spec.name}-webapp-feedback"), predictor=predictor,
    )


class ServedFollower:
    """Measures freshness each time a new version starts being served (seen by the web app)."""

    def __init__(self, freshness: FreshnessTracker, events_topic: str) -> None:
        self._freshness = freshness
        self._topic = events_topic
        self._seen: int | None = None

    def __call__(self, state: LiveState) -> None:
        current = state.current
        if current is None or current.version == self._seen:
            return
        if self._seen is not None:  # the version served at start was not seen being swapped in
            self._freshness.served(self._topic, current.offsets, time.time())
        self._seen = current.version


async def _bootstrap_admin(services: Services) -> None:
    """Create the configured admin once the accounts tables exist (migrations may still run)."""
    password = services.settings.admin_password
    if password is None:
        return
    while True:
        try:
            created = await asyncio.to_thread(
                services.accounts.ensure_user, services.settings.admin_user, password.get_secret_value(), Role.ADMIN
            )
        except BackendUnavailable as exc:
            log.info("accounts not ready (%s); retrying", exc)
            await asyncio.sleep(BOOTSTRAP_RETRY_S)
            continue
        if created:
            log.info("admin %r created from STREAMWISE_ADMIN_PASSWORD", services.settings.admin_user)
        return


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
