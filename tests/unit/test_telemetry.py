"""Logs and metrics without servers: the JSON formatter, logging setup, /metrics on FastAPI apps,
multiprocess mode, what ingest and the predictor count, and FastAPI's OpenTelemetry (off unless set)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from opentelemetry import trace as otel_trace
from opentelemetry.trace import NoOpTracer, Span, Tracer, TracerProvider
from opentelemetry.util._once import Once
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streamwise_core.adapters import telemetry
from streamwise_core.adapters.settings import Settings
from streamwise_core.adapters.telemetry import (
    JsonFormatter,
    configure_logging,
    exposition,
    fastapi_telemetry,
    instrument_app,
    metrics_registry,
)
from streamwise_core.contracts.codec import ModelMeta
from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_ingest import app as ingest_app
from streamwise_ingest.app import create_app as create_ingest
from streamwise_ingest.settings import IngestSettings
from streamwise_predictor.app import create_app as create_predictor
from streamwise_predictor.holder import ServedModel
from streamwise_predictor.observability import ObservedHolder, PredictorMetrics, RefusedVersions, refusal_class
from streamwise_predictor.settings import PredictorSettings
from streamwise_webapp.app import create_app as create_webapp
from streamwise_webapp.settings import WebappSettings

ROOT = Path(__file__).resolve().parents[2]
APP_SPEC = ROOT / "examples" / "fraud" / "streamwise.toml"
API_KEY = {"X-API-Key": "dev-api-key"}


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of sample ``name`` with exactly ``labels`` in a Prometheus text exposition."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def scrape(registry: CollectorRegistry) -> str:
    return exposition(registry, None)[0].decode()


def record(message: str = "hello %s", *args: Any, exc: bool = False, **extra: Any) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    rec = logging.LogRecord("streamwise.test", logging.WARNING, __file__, 1, message, args or ("world",), exc_info)
    for key, val in extra.items():
        setattr(rec, key, val)
    return rec


# --------------------------------------------------------------------------- logs


def test_json_lines_carry_the_fields() -> None:
    created = datetime(2026, 1, 1, 12, 30, 5, 250_000, tzinfo=UTC).timestamp()
    line = json.loads(JsonFormatter("trainer").format(record(event_id="tx-1", created=created)))
    assert set(line) == {"time", "level", "service", "logger", "message", "event_id"}
    assert line["level"] == "WARNING" and line["service"] == "trainer" and line["logger"] == "streamwise.test"
    assert line["message"] == "hello world" and line["event_id"] == "tx-1"
    assert line["time"] == "2026-01-01T12:30:05.250Z"  # when the record was made, in UTC


def test_json_lines_without_an_event_id_have_none() -> None:
    line = json.loads(JsonFormatter("ingest").format(record()))
    assert "event_id" not in line


def test_json_line_is_one_line_with_the_traceback_inside() -> None:
    text = JsonFormatter("predictor").format(record("multi\nline ünïcode %s", exc=True))
    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == "multi\nline ünïcode world"
    assert "ValueError: boom" in line["exception"] and "Traceback" in line["exception"]


@pytest.fixture
def clean_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    server = {
        name: (list(lg.handlers), lg.propagate, lg.level, lg.disabled)
        for name in names for lg in [logging.getLogger(name)]
    }
    for name in names:  # servers started by earlier tests may have set levels or disabled them
        logging.getLogger(name).setLevel(logging.NOTSET)
        logging.getLogger(name).disabled = False
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)
    for name, (server_handlers, propagate, server_level, disabled) in server.items():
        lg = logging.getLogger(name)
        lg.handlers[:] = server_handlers
        lg.propagate = propagate
        lg.setLevel(server_level)
        lg.disabled = disabled


def _ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, "_streamwise_handler", False)]


def test_configure_logging_is_idempotent_and_leaves_other_handlers(clean_logging: None) -> None:
    other = logging.NullHandler()
    logging.getLogger().addHandler(other)
    # as uvicorn leaves them: its own handler on uvicorn.error; access log off (--no-access-log)
    logging.getLogger("uvicorn.error").handlers[:] = [logging.StreamHandler(io.StringIO())]
    logging.getLogger("uvicorn.error").propagate = False
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False
    configure_logging("INFO", "ingest", json=True)
    handler = configure_logging("debug", "ingest", json=True)
    assert _ours() == [handler] and other in logging.getLogger().handlers
    assert logging.getLogger().level == logging.DEBUG
    # uvicorn's own loggers hand their records to the root: every line of the process is JSON
    uvicorn_error = logging.getLogger("uvicorn.error")
    assert uvicorn_error.handlers == [] and uvicorn_error.propagate is True
    assert logging.getLogger("uvicorn.access").propagate is False, "a silenced access log stays silent"
    stream = io.StringIO()
    handler.setStream(stream)  # type: ignore[attr-defined]
    uvicorn_error.info("Started server process [%d]", 42)
    logging.getLogger("streamwise_trainer.runtime").warning("dead letter", extra={"event_id": "tx-9"})
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert [(x["logger"], x["message"], x.get("event_id")) for x in lines] == [
        ("uvicorn.error", "Started server process [42]", None), ("streamwise_trainer.runtime", "dead letter", "tx-9"),
    ]


def test_text_format_is_for_people(clean_logging: None) -> None:
    handler = configure_logging("INFO", "webapp", json=False)
    stream = io.StringIO()
    handler.setStream(stream)  # type: ignore[attr-defined]
    logging.getLogger("streamwise.x").info("now serving v%s", 3)
    assert stream.getvalue().rstrip().endswith("INFO streamwise.x now serving v3")
    with pytest.raises(json.JSONDecodeError):
        json.loads(stream.getvalue())


def test_log_format_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).log_format == "text"  # type: ignore[call-arg]
    monkeypatch.setenv("STREAMWISE_LOG_FORMAT", "json")
    assert Settings(_env_file=None).log_format == "json"  # type: ignore[call-arg]
    monkeypatch.setenv("STREAMWISE_LOG_FORMAT", "xml")
    with pytest.raises(ValueError):
        Settings(_env_file=None)  # type: ignore[call-arg]


# --------------------------------------------------------------------------- /metrics on FastAPI


def _tiny_app() -> tuple[FastAPI, CollectorRegistry]:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        if item_id == 0:
            raise HTTPException(status_code=404)
        return {"id": item_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    return app, instrument_app(app, "tiny", metrics_registry(process=False))


async def _get(app: FastAPI, *paths: str, headers: dict[str, str] | None = None) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        return [await client.get(p, headers=headers) for p in paths]


def test_requests_are_counted_by_route_template_and_status() -> None:
    app, _ = _tiny_app()
    *_, metrics = asyncio.run(_get(app, "/items/1", "/items/2", "/items/0", "/nope/7", "/boom", "/metrics"))
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert value(text, "streamwise_http_requests_total", service="tiny", route="/items/{item_id}", method="GET", status="200") == 2
    assert value(text, "streamwise_http_requests_total", service="tiny", route="/items/{item_id}", method="GET", status="404") == 1
    assert value(text, "streamwise_http_requests_total", service="tiny", route="<unmatched>", method="GET", status="404") == 1
    assert value(text, "streamwise_http_requests_total", service="tiny", route="/boom", method="GET", status="500") == 1
    assert "/nope/7" not in text and "/items/1" not in text, "raw paths never become labels"
    assert value(text, "streamwise_http_request_duration_seconds_count", service="tiny", route="/items/{item_id}", method="GET") == 3


def test_metrics_stay_out_of_the_api_document() -> None:
    app, _ = _tiny_app()
    [document] = asyncio.run(_get(app, "/openapi.json"))
    assert "/items/{item_id}" in document.json()["paths"] and "/metrics" not in document.json()["paths"]


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    app, _ = _tiny_app()
    [r] = asyncio.run(_get(app, "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}))
    assert r.headers["content-type"].startswith("application/openmetrics-text") and r.text.endswith("# EOF\n")


def test_process_metrics_are_in_the_registry_unless_asked_not_to() -> None:
    with_process, without = scrape(metrics_registry()), scrape(metrics_registry(process=False))
    assert value(with_process, "process_cpu_seconds_total") is not None and "python_info" in with_process
    assert "process_cpu_seconds_total" not in without and "python_info" not in without


WORKER = textwrap.dedent(
    """
    import sys
    from streamwise_core.adapters.telemetry import metrics_registry
    from streamwise_predictor.observability import PredictorMetrics
    metrics = PredictorMetrics(metrics_registry(), "fraud-lr")
    metrics.predicted("single", int(sys.argv[1]), 0.002)
    metrics.version.labels("fraud-lr").set(int(sys.argv[2]))
    """
)
SCRAPE = "from streamwise_core.adapters.telemetry import exposition, metrics_registry; print(exposition(metrics_registry(), None)[0].decode())"


def test_multiprocess_mode_adds_up_every_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers write to PROMETHEUS_MULTIPROC_DIR; a scrape of a third process sees both."""
    monkeypatch.setenv(telemetry.MULTIPROC_ENV, str(tmp_path))
    for count, version in ((3, 7), (4, 9)):
        subprocess.run([sys.executable, "-c", WORKER, str(count), str(version)], check=True, timeout=60)
    assert list(tmp_path.glob("*.db")), "the workers wrote their values to files"
    out = subprocess.run([sys.executable, "-c", SCRAPE], check=True, timeout=60, capture_output=True, text=True).stdout
    assert value(out, "streamwise_predictor_predictions_total", model="fraud-lr", kind="single") == 7
    assert value(out, "streamwise_predictor_predict_duration_seconds_count", model="fraud-lr", kind="single") == 2
    # livemax: the workers exited without marking themselves dead, so both count; the max wins
    assert value(out, "streamwise_predictor_model_version", model="fraud-lr") == 9


# --------------------------------------------------------------------------- ingest


class FakeSink:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.written: list[tuple[str, int]] = []

    async def write(self, topic: str, records: list[tuple[bytes, bytes]]) -> None:
        if self.fail:
            raise BackendUnavailable("kafka: down")
        self.written.append((topic, len(records)))


def _event(i: int) -> dict[str, Any]:
    return {"id": f"e{i}", "features": {"amount": 12.5, "hour": 3, "distance_km": 4.0, "is_foreign": False,
                                        "card_present": True, "merchant": "grocery", "txn_last_hour": 1}}


class IdleProducer:
    """The producer the lifespan starts and stops, without Kafka."""

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


async def _ingest_run(sink: FakeSink, requests: list[tuple[str, dict[str, str], bytes]]) -> str:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ingest_app, "make_producer", lambda *_, **__: IdleProducer())
        app = create_ingest(IngestSettings(app_spec=APP_SPEC, max_body_bytes=4096, _env_file=None))  # type: ignore[call-arg]
        async with app.router.lifespan_context(app):
            # the services the lifespan made (its metrics among them), writing to ``sink`` instead of Kafka
            app.state.services = dataclasses.replace(app.state.services, sink=sink)
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
                for path, headers, body in requests:
                    await client.post(path, headers=headers, content=body)
                return (await client.get("/metrics")).text


def test_ingest_counts_accepted_items_and_refusals_by_reason() -> None:
    json_type = {"content-type": "application/json"}
    good = json.dumps([_event(1), _event(2), _event(3)]).encode()
    text = asyncio.run(_ingest_run(FakeSink(), [
        ("/v1/events", {**API_KEY, **json_type}, good),
        ("/v1/labels", {**API_KEY, **json_type}, json.dumps({"id": "e1", "label": True}).encode()),
        ("/v1/events", json_type, good),                                              # 401
        ("/v1/events", {**API_KEY, **json_type}, b"[" + b" " * 5000 + b"]"),           # 413
        ("/v1/events", {**API_KEY, "content-type": "text/csv"}, b"a,b"),               # 415
        ("/v1/labels", {**API_KEY, **json_type}, b'{"id": "e1"}'),                     # 422
    ]))
    assert value(text, "streamwise_ingest_accepted_total", kind="events") == 3
    assert value(text, "streamwise_ingest_accepted_total", kind="labels") == 1
    for kind, reason in (("events", "unauthorized"), ("events", "too_large"), ("events", "media_type"), ("labels", "invalid")):
        assert value(text, "streamwise_ingest_rejected_requests_total", kind=kind, reason=reason) == 1, (kind, reason)
    assert value(text, "streamwise_ingest_rejected_requests_total", kind="events", reason="invalid") == 0
    assert value(text, "streamwise_ingest_broker_unavailable_total", kind="events") == 0


def test_ingest_counts_broker_unavailable_and_accepts_nothing() -> None:
    body = json.dumps(_event(1)).encode()
    text = asyncio.run(_ingest_run(FakeSink(fail=True), [("/v1/events", {**API_KEY, "content-type": "application/json"}, body)]))
    assert value(text, "streamwise_ingest_broker_unavailable_total", kind="events") == 1
    assert value(text, "streamwise_ingest_accepted_total", kind="events") == 0
    assert value(text, "streamwise_http_requests_total", service="ingest", route="/v1/events", method="POST", status="503") == 1


# --------------------------------------------------------------------------- predictor


def _served(version: int, created_at: datetime) -> ServedModel:
    meta = ModelMeta(app="fraud", model="fraud-lr", version=version, task="binary", examples_seen=10, created_at=created_at)
    return ServedModel(meta, object())


NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_swaps_set_the_version_and_the_lag_from_creation_to_serving() -> None:
    registry = metrics_registry(process=False)
    metrics = PredictorMetrics(registry, "fraud-lr")
    holder = ObservedHolder(metrics, clock=NOW.timestamp)
    assert value(scrape(registry), "streamwise_predictor_model_version", model="fraud-lr") == 0
    created = NOW - timedelta(seconds=2)
    assert holder.offer(_served(3, created))
    assert not holder.offer(_served(2, created)), "an older version is no swap"
    text = scrape(registry)
    assert value(text, "streamwise_predictor_model_version", model="fraud-lr") == 3
    assert value(text, "streamwise_predictor_swaps_total", model="fraud-lr") == 1 == holder.swaps
    assert value(text, "streamwise_predictor_swap_lag_seconds_count", model="fraud-lr") == 1
    assert value(text, "streamwise_predictor_swap_lag_seconds_sum", model="fraud-lr") == pytest.approx(2.0)
    assert value(text, "streamwise_predictor_swap_lag_seconds_bucket", model="fraud-lr", le="1.0") == 0
    assert value(text, "streamwise_predictor_model_created_timestamp_seconds", model="fraud-lr") == pytest.approx(created.timestamp())
    assert value(text, "streamwise_predictor_model_served_timestamp_seconds", model="fraud-lr") == NOW.timestamp()


def test_a_creation_time_ahead_of_this_clock_counts_as_no_lag() -> None:
    registry = metrics_registry(process=False)
    holder = ObservedHolder(PredictorMetrics(registry, "fraud-lr"), clock=NOW.timestamp)
    holder.offer(_served(1, NOW + timedelta(minutes=5)))
    assert value(scrape(registry), "streamwise_predictor_swap_lag_seconds_sum", model="fraud-lr") == 0


@pytest.mark.parametrize(("reason", "cls"), [
    ("bad signature", "signature"),
    ("unknown signing key id 'rogue'", "unknown_key"),
    ("river version mismatch: blob 0.1, installed 0.2", "library_version"),
    ("blob digest does not match its metadata", "digest"),
    ("malformed version hash: KeyError('meta')", "malformed"),
    ("metadata names another model or version", "metadata"),
    ("something new", "other"),
])
def test_refusal_reasons_have_a_class(reason: str, cls: str) -> None:
    assert refusal_class(reason) == cls


def test_each_refused_version_is_counted_once() -> None:
    registry = metrics_registry(process=False)
    refused = RefusedVersions(PredictorMetrics(registry, "fraud-lr"))
    refused[5] = "bad signature"
    refused[5] = "bad signature"
    refused[6] = "malformed version hash: x"
    assert refused == {5: "bad signature", 6: "malformed version hash: x"} and 5 in refused
    text = scrape(registry)
    assert value(text, "streamwise_predictor_refused_blobs_total", model="fraud-lr", reason="signature") == 1
    assert value(text, "streamwise_predictor_refused_blobs_total", model="fraud-lr", reason="malformed") == 1


# --------------------------------------------------------------------------- FastAPI's native OpenTelemetry


class RecordingTracerProvider(TracerProvider):
    """A configured tracer provider (as an SDK's would be) that records the spans started."""

    def __init__(self) -> None:
        self.spans: list[str] = []

    def get_tracer(self, *args: Any, **kwargs: Any) -> Tracer:
        spans = self.spans

        class RecordingTracer(NoOpTracer):
            def start_span(self, name: str, *a: Any, **k: Any) -> Span:
                spans.append(name)
                return super().start_span(name, *a, **k)

        return RecordingTracer()


@pytest.fixture
def tracer_provider(monkeypatch: pytest.MonkeyPatch) -> RecordingTracerProvider:
    """A global tracer provider set with ``opentelemetry.trace.set_tracer_provider``, for this test only."""
    # The API lets a process set its provider once: start from unset, restore afterwards.
    monkeypatch.setattr(otel_trace, "_TRACER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(otel_trace, "_TRACER_PROVIDER", None)
    provider = RecordingTracerProvider()
    otel_trace.set_tracer_provider(provider)
    assert otel_trace.get_tracer_provider() is provider
    return provider


def test_otel_is_an_off_by_default_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).otel is False  # type: ignore[call-arg]
    monkeypatch.setenv("STREAMWISE_OTEL", "true")
    assert Settings(_env_file=None).otel is True  # type: ignore[call-arg]


@pytest.mark.parametrize("enabled", [False, True])
def test_fastapi_traces_requests_only_with_telemetry_on(enabled: bool, tracer_provider: RecordingTracerProvider) -> None:
    app = FastAPI(telemetry=fastapi_telemetry(enabled))

    @app.get("/ping")
    async def ping() -> dict[str, str]:
        return {"pong": "yes"}

    [r] = asyncio.run(_get(app, "/ping"))
    assert r.status_code == 200
    assert bool(tracer_provider.spans) is enabled, tracer_provider.spans


def _ingest_app(otel: bool) -> FastAPI:
    return create_ingest(IngestSettings(app_spec=APP_SPEC, otel=otel, _env_file=None))  # type: ignore[call-arg]


def _predictor_app(otel: bool) -> FastAPI:
    return create_predictor(PredictorSettings(app_spec=APP_SPEC, otel=otel, _env_file=None))  # type: ignore[call-arg]


def _webapp_app(otel: bool) -> FastAPI:
    return create_webapp(WebappSettings(app_spec=APP_SPEC, otel=otel, _env_file=None))  # type: ignore[call-arg]


@pytest.mark.parametrize("otel", [False, True])
@pytest.mark.parametrize("build", [_ingest_app, _predictor_app, _webapp_app])
def test_each_service_honours_the_otel_setting(
    build: Callable[[bool], FastAPI], otel: bool, tracer_provider: RecordingTracerProvider, clean_logging: None,
) -> None:
    [r] = asyncio.run(_get(build(otel), "/healthz"))
    assert r.status_code == 200
    assert bool(tracer_provider.spans) is otel, tracer_provider.spans
