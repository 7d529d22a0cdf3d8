"""Logs and metrics every service shares: JSON log lines, Prometheus metrics on GET /metrics.

Nothing here does I/O at import time. ``configure_logging`` is called by each composition root;
``instrument_app`` gives a FastAPI app its /metrics endpoint and request metrics;
``fastapi_telemetry`` says whether FastAPI's own OpenTelemetry instrumentation runs.

Multiprocess mode: when ``PROMETHEUS_MULTIPROC_DIR`` is set (before the process starts, as
prometheus-client requires), every worker writes its values to files in that directory and a
scrape of any worker reports the sum over all of them. Gauges then need a
``multiprocess_mode``; the directory must be empty when the server starts (an ``emptyDir`` or a
fresh temporary directory).
"""

from __future__ import annotations

import json as _json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi.telemetry import TelemetryConfig
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METRICS_PATH = "/metrics"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds; from a one-millisecond prediction to a ten-second stall."""
UNMATCHED_ROUTE = "<unmatched>"
"""The route label of requests no route matched (404s): raw paths would be unbounded labels."""

# --------------------------------------------------------------------------- logs

LOG_FIELDS = ("event_id",)
"""Fields a log call may pass in ``extra`` that become keys of the JSON line."""
_HANDLER_MARK = "_streamwise_handler"
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, logger, message, and ``event_id`` when
    the call passed one in ``extra``; ``exception`` holds a traceback when there is one."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in LOG_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return _json.dumps(line, ensure_ascii=False, default=str)


class StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record comes (not when the handler was made), so
    a process that swaps its stderr (pytest does) never writes to a closed stream."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)
        self._fixed: Any = None

    @property
    def stream(self) -> Any:
        return self._fixed if self._fixed is not None else sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        self._fixed = value


def configure_logging(level: str | int, service: str, json: bool = True) -> logging.Handler:
    """Send every log record of this process to stderr, as JSON lines (``json``) or text.

    Idempotent: a second call replaces the handler the first one installed and leaves other
    handlers alone (pytest's, for instance). With JSON, the server's own loggers (uvicorn's)
    hand their records to the same handler, so every line of the process is JSON.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    handler = StderrHandler()
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter(service) if json else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.captureWarnings(json)  # Python's warnings become JSON lines too (logger py.warnings)
    if json:
        for name in _SERVER_LOGGERS:
            server_logger = logging.getLogger(name)
            if server_logger.handlers:  # a logger the server silenced (--no-access-log) stays silent
                server_logger.handlers.clear()
                server_logger.propagate = True
    return handler


# --------------------------------------------------------------------------- OpenTelemetry


def fastapi_telemetry(enabled: bool) -> TelemetryConfig:
    """The ``telemetry=`` of a service's ``FastAPI(...)``: FastAPI's native OpenTelemetry, on or off.

    On, FastAPI sends traces, metrics and logs to the globally configured OpenTelemetry
    providers (its defaults). Off, the services' metrics are Prometheus's only: FastAPI would
    otherwise look up the three global providers on every request to find them unconfigured
    (only ``opentelemetry-api`` is installed), about 6 % of a single-event request's CPU.
    """
    return {"tracing": enabled, "metrics": enabled, "logs": enabled}


# --------------------------------------------------------------------------- metrics


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode, when it is on."""
    return os.environ.get(MULTIPROC_ENV) or None


def metrics_registry(*, process: bool = True) -> CollectorRegistry:
    """A registry for one app's metrics; with ``process``, also CPU, memory, GC and Python version
    (single-process mode only: in multiprocess mode they would describe one worker)."""
    registry = CollectorRegistry(auto_describe=True)
    if process and multiprocess_dir() is None:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry, accept: str | None, *, all_workers: bool = True) -> tuple[bytes, str]:
    """The body and content type of a scrape, in the format the scraper asked for.

    In multiprocess mode (and with ``all_workers``) the values of every worker are read from
    the directory (the registry's objects write there); otherwise ``registry`` is encoded as
    it is. A single-process service with collectors of its own passes ``all_workers=False``.
    """
    source = registry
    if all_workers and multiprocess_dir() is not None:
        source = CollectorRegistry()
        _multiprocess.MultiProcessCollector(source)
    encoder, content_type = choose_encoder(accept or "")
    return encoder(source), content_type


def mark_process_dead() -> None:
    """Drop this worker's live gauges from multiprocess files (a worker that stops)."""
    directory = multiprocess_dir()
    if directory is not None:
        _multiprocess.mark_process_dead(os.getpid(), directory)


class HttpMetrics:
    """Request counts by route, method and status, and latency by route and method.

    Pure ASGI middleware, outermost, so it sees the status a client got, errors included.
    Latency is the time to the start of the response (a server-sent event stream would
    otherwise count as one request lasting hours). Routes are route templates, never raw
    paths. ``on_response(route, method, status)`` lets a service count outcomes of its own.
    """

    def __init__(
        self, app: ASGIApp, *, requests: Counter, latency: Histogram, service: str,
        on_response: Callable[[str, str, int], None] | None = None,
    ) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency
        self.service = service
        self.on_response = on_response
        # The labelled children, looked up once each: ``labels()`` costs a lock and a few tuples
        # per call. Routes are templates and statuses few, so these stay small.
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        elapsed: float | None = None

        async def timed_send(message: Message) -> None:
            nonlocal status, elapsed
            if message["type"] == "http.response.start":
                status = int(message["status"])
                elapsed = time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            route = route_of(scope)
            method = scope.get("method", "GET")
            counted = self._counted.get((route, method, status))
            if counted is None:
                counted = self._counted[route, method, status] = self.requests.labels(self.service, route, method, str(status))
            counted.inc()
            timed = self._timed.get((route, method))
            if timed is None:
                timed = self._timed[route, method] = self.latency.labels(self.service, route, method)
            timed.observe(elapsed if elapsed is not None else time.perf_counter() - started)
            if self.on_response is not None:
                self.on_response(route, method, status)

    @staticmethod
    def _lifespan_send(send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                mark_process_dead()
            await send(message)

        return lifespan_send


def route_of(scope: Scope) -> str:
    """The template of the route that handled the request (``/v1/events``, ``/static``)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED_ROUTE


def http_metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram]:
    """The request counter and latency histogram of an HTTP service, in ``registry``."""
    requests = Counter(
        "streamwise_http_requests", "HTTP requests answered, by service, route template, method and status.",
        ["service", "route", "method", "status"], registry=registry,
    )
    latency = Histogram(
        "streamwise_http_request_duration_seconds",
        "Time from a request's arrival to the start of its response, by service, route template and method.",
        ["service", "route", "method"], buckets=LATENCY_BUCKETS, registry=registry,
    )
    return requests, latency


def instrument_app(
    app: Any, service: str, registry: CollectorRegistry | None = None, *,
    on_response: Callable[[str, str, int], None] | None = None,
) -> CollectorRegistry:
    """Serve GET /metrics on the FastAPI ``app`` and count its requests; return the registry.

    /metrics stays out of the OpenAPI document: it is for Prometheus, not for API clients
    (and the schema-driven fuzz tests read that document).
    """
    registry = registry if registry is not None else metrics_registry()
    requests, latency = http_metrics(registry)

    async def metrics(request: Request) -> Response:
        body, content_type = exposition(registry, request.headers.get("accept"))
        return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})

    app.add_api_route(METRICS_PATH, metrics, methods=["GET"], include_in_schema=False)
    app.add_middleware(HttpMetrics, requests=requests, latency=latency, service=service, on_response=on_response)
    return registry
