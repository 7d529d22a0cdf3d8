"""What the single-request speedups must not change: the API key check (a gate before routing
now, not a dependency: the same OpenAPI security scheme, the same answers, the same metrics),
and ingest's batches (closed, the same records and partitions as ``send_batches``). A single
prediction's record: ``test_event_encoding.py``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute

from streamwise_core.adapters.http import ApiKeyGate, RequestRoute, include_request_routes, require_api_key
from streamwise_core.adapters.kafka import send_batches
from streamwise_core.adapters.telemetry import metrics_registry
from streamwise_ingest import sink as ingest_sink
from streamwise_ingest.app import create_app as create_ingest
from streamwise_ingest.deps import Services
from streamwise_ingest.observability import IngestMetrics
from streamwise_ingest.settings import IngestSettings
from streamwise_predictor.app import create_app as create_predictor
from streamwise_predictor.settings import PredictorSettings

PARTITIONER = DefaultPartitioner()

ROOT = Path(__file__).resolve().parents[2]
APP_SPEC = ROOT / "examples" / "fraud" / "streamwise.toml"
EVENT = b'{"id":"e-1","features":{"amount":12.5,"hour":3,"distance_km":1.5,"is_foreign":false,"card_present":true,"merchant":"grocery","txn_last_hour":0}}'


# --------------------------------------------------------------------------- the API key check


def _ingest(keys: str = "k-one,k-two") -> FastAPI:
    settings = IngestSettings(app_spec=APP_SPEC, api_keys=keys, log_level="WARNING")
    app = create_ingest(settings)

    class Sink:
        async def write(self, topic: str, records: list[tuple[bytes, bytes]]) -> None:
            pass

    # What the lifespan would make, without Kafka. Its own metrics: these tests count refusals
    # only, which the app's request metrics do (``IngestMetrics.on_response``, wired by create_app).
    app.state.services = Services(
        settings=settings, metrics=IngestMetrics(metrics_registry(process=False)), producer=FakeProducer(1, 1000), sink=Sink(),
    )
    return app


async def _call(
    app: FastAPI, path: str, headers: list[tuple[bytes, bytes]], body: bytes = EVENT, *, read: bool = True,
    method: str = "POST", root_path: str = "",
) -> tuple[int, bytes, list[Any]]:
    """One request through the ASGI app; with ``read`` False, reading the body fails the test."""

    async def receive() -> dict[str, Any]:
        assert read, "the body was read"
        return {"type": "http.request", "body": body, "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http", "path": path,
        "raw_path": path.encode(), "query_string": b"", "root_path": root_path, "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
    }
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), sent[0]["headers"]


REFUSED = (401, b'{"detail":"missing or invalid X-API-Key"}')
ACCEPTED = (202, b'{"accepted":1,"ids":["e-1"]}')


@pytest.mark.parametrize("path", ["/v1/events", "/v1/labels"])
async def test_write_routes_solve_no_dependency(path: str) -> None:
    [route] = [r for r in _ingest().routes if isinstance(r, APIRoute) and r.path == path]
    assert route.dependant.dependencies == []  # the key is checked by the gate, before routing
    # ... and FastAPI calls the endpoint as it is: no dependency solving, no response model
    assert isinstance(route, RequestRoute) and route.get_route_handler() is route.endpoint


@pytest.mark.parametrize("path", ["/v1/predict", "/v1/predict/batch"])
def test_prediction_routes_solve_no_dependency(path: str) -> None:
    app = create_predictor(PredictorSettings(app_spec=APP_SPEC, log_level="WARNING"))
    # the app's own routes (as ingest's above), not behind an included router's node
    [route] = [r for r in app.routes if isinstance(r, APIRoute) and r.path == path]
    assert isinstance(route, RequestRoute) and route.dependant.dependencies == [] and route.get_route_handler() is route.endpoint


def test_only_request_routes_are_included_flat() -> None:
    router = APIRouter()

    @router.get("/r")
    async def read() -> None:
        pass

    with pytest.raises(TypeError, match="not a RequestRoute"):
        include_request_routes(FastAPI(), router)


def test_a_request_route_takes_only_an_async_endpoint_of_the_request() -> None:
    async def plain(request: Request) -> Response:
        return Response(b"ok")

    async def two(request: Request, q: int) -> Response:
        return Response(b"ok")

    def blocking(request: Request) -> Response:
        return Response(b"ok")

    async def key() -> None:
        return None

    from fastapi import Depends

    assert RequestRoute("/w", plain, methods=["POST"]).get_route_handler() is plain
    for endpoint, extra in ((two, {}), (blocking, {}), (plain, {"dependencies": [Depends(key)]})):
        with pytest.raises(TypeError, match="RequestRoute"):
            RequestRoute("/w", endpoint, methods=["POST"], **extra)


async def test_the_write_routes_are_documented_as_before() -> None:
    post = _ingest().openapi()["paths"]["/v1/events"]["post"]
    assert post["operationId"] == "post_events_v1_events_post" and post["summary"] == "Post Events"
    assert post["responses"]["202"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Accepted"}
    assert set(post["requestBody"]["content"]) == {"application/json", "application/x-ndjson"}
    assert {"401", "413", "415", "422", "503"} <= set(post["responses"])


def test_the_gate_guards_exactly_the_write_routes() -> None:
    [gate] = [m for m in _ingest().user_middleware if m.cls is ApiKeyGate]
    assert {pair: route.path for pair, route in gate.kwargs["guarded"].items()} == {
        ("POST", "/v1/events"): "/v1/events", ("POST", "/v1/labels"): "/v1/labels",
    }


async def test_the_openapi_security_scheme_is_unchanged() -> None:
    app = _ingest()
    doc = app.openapi()
    assert doc["components"]["securitySchemes"] == {"APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    for path in ("/v1/events", "/v1/labels"):
        assert doc["paths"][path]["post"]["security"] == [{"APIKeyHeader": []}]
        assert [p for p in doc["paths"][path]["post"].get("parameters", []) if p["in"] == "header"] == []
    assert "security" not in doc["paths"]["/healthz"]["get"] and "security" not in doc["paths"]["/readyz"]["get"]
    # cached, and patched once however often it is asked for
    assert app.openapi() is doc and doc["paths"]["/v1/events"]["post"]["security"] == [{"APIKeyHeader": []}]
    status, served, _ = await _call(app, "/openapi.json", [], method="GET")
    assert status == 200 and json.loads(served) == doc


@pytest.mark.parametrize("headers", [[], [(b"x-api-key", b"")], [(b"x-api-key", b"k-three")], [(b"x-api-key", b"k-one ")],
                                     [(b"authorization", b"k-one")]])
@pytest.mark.parametrize("path", ["/v1/events", "/v1/labels"])
async def test_a_missing_or_wrong_key_is_refused_before_the_body_is_read(headers: list[tuple[bytes, bytes]], path: str) -> None:
    status, body, sent_headers = await _call(_ingest(), path, headers, read=False)
    assert (status, body) == REFUSED
    assert dict(sent_headers) == {b"content-type": b"application/json", b"content-length": str(len(body)).encode()}


@pytest.mark.parametrize("key", [b"k-one", b"k-two"])
async def test_every_configured_key_is_admitted(key: bytes) -> None:
    status, body, _ = await _call(_ingest(), "/v1/events", [(b"x-api-key", key)])
    assert (status, body) == ACCEPTED


@pytest.mark.parametrize(("first", "second", "answer"), [(b"k-one", b"wrong", ACCEPTED), (b"wrong", b"k-one", REFUSED)])
async def test_the_first_key_header_counts(first: bytes, second: bytes, answer: tuple[int, bytes]) -> None:
    """As ``request.headers.get``: the first ``X-API-Key`` of the request, the others are not looked at."""
    headers = [(b"x-api-key", first), (b"x-api-key", second)]
    assert (await _call(_ingest(), "/v1/events", headers, read=answer == ACCEPTED))[:2] == answer


@pytest.mark.parametrize(("sent", "answer"), [(b"d\xe9j\xe0", ACCEPTED), ("déjà".encode(), REFUSED)])
async def test_key_headers_are_read_as_latin_1(sent: bytes, answer: tuple[int, bytes]) -> None:
    """HTTP header values are bytes; Starlette reads them as latin-1, and so does the gate."""
    assert (await _call(_ingest("déjà"), "/v1/events", [(b"x-api-key", sent)], read=answer == ACCEPTED))[:2] == answer


@pytest.mark.parametrize(("root_path", "path"), [
    ("/ingest", "/ingest/v1/events"), ("/ingest", "/v1/events"), ("/v", "/v1/events"), ("", "/v1/events\n"),
])
async def test_the_gate_sees_the_path_the_router_matches(root_path: str, path: str) -> None:
    """Behind a proxy's ``root_path`` (stripped as the router strips it: only where it ends at a
    ``/``), and with the final newline the router's pattern lets through: the write route, so
    the key is checked."""
    app = _ingest()
    assert (await _call(app, path, [], read=False, root_path=root_path))[:2] == REFUSED
    assert (await _call(app, path, [(b"x-api-key", b"k-two")], root_path=root_path))[:2] == ACCEPTED


@pytest.mark.parametrize(("method", "path", "root_path", "status", "body"), [
    ("GET", "/v1/events", "", 405, b'{"detail":"Method Not Allowed"}'),
    ("PUT", "/v1/labels", "", 405, b'{"detail":"Method Not Allowed"}'),
    ("POST", "/v1/events/", "", 307, b""),
    ("POST", "/v1/Events", "", 404, b'{"detail":"Not Found"}'),
    ("POST", "/ingest/v1/events", "/ing", 404, b'{"detail":"Not Found"}'),
    ("GET", "/healthz", "", 200, b'{"status":"ok"}'),
    ("GET", "/metrics", "", 200, None),
    ("GET", "/docs", "", 200, None),
    ("GET", "/openapi.json", "", 200, None),
])
async def test_other_routes_and_methods_answer_without_a_key(
    method: str, path: str, root_path: str, status: int, body: bytes | None,
) -> None:
    answered = await _call(_ingest(), path, [], method=method, root_path=root_path, read=False)
    assert answered[0] == status and body in (None, answered[1])


async def test_refusals_are_counted_under_their_route() -> None:
    app = _ingest()
    for path in ("/v1/events", "/v1/events", "/v1/labels"):
        assert (await _call(app, path, [], read=False))[:2] == REFUSED
    _, metrics, _ = await _call(app, "/metrics", [], method="GET")
    text = metrics.decode()
    assert 'streamwise_http_requests_total{method="POST",route="/v1/events",service="ingest",status="401"} 2.0' in text
    assert 'streamwise_http_requests_total{method="POST",route="/v1/labels",service="ingest",status="401"} 1.0' in text
    assert 'streamwise_ingest_rejected_requests_total{kind="events",reason="unauthorized"} 2.0' in text


@pytest.mark.parametrize("guarded", [{("POST", "/nope")}, {("GET", "/w")}, {("POST", "/w/{item}")}])
def test_only_existing_literal_routes_can_be_guarded(guarded: set[tuple[str, str]]) -> None:
    app = FastAPI()

    @app.post("/w")
    @app.post("/w/{item}")
    async def write() -> None:
        pass

    with pytest.raises(ValueError, match="no route"):
        require_api_key(app, ["k"], guarded)


# --------------------------------------------------------------------------- ingest: closed batches


class FakeBatch:
    """A batch as aiokafka's ``BatchBuilder`` behaves: ``append`` gives ``None`` once full
    (and closes it), ``close`` stops further appends."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes, bytes]] = []
        self._closed = False

    def append(self, *, key: bytes, value: bytes, timestamp: float | None) -> object | None:
        assert timestamp is None  # the broker-side default: the time of the append
        if self._closed or len(self.records) >= self.capacity:
            self._closed = True
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self._closed = True

    def closed(self) -> bool:
        return self._closed


class FakeProducer:
    def __init__(self, partitions: int, capacity: int) -> None:
        self.partitions = partitions
        self.capacity = capacity
        self.sent: list[tuple[str, int, list[tuple[bytes, bytes]], bool]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future[object]:
        self.sent.append((topic, partition, list(batch.records), batch.closed()))
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


@pytest.mark.parametrize("partitions", [1, 3])
@pytest.mark.parametrize("capacity", [1, 4, 1000])
@pytest.mark.parametrize("n", [1, 9])
async def test_batches_are_handed_over_closed_with_every_record_in_order(partitions: int, capacity: int, n: int) -> None:
    records = [(f"id-{k}".encode(), f'{{"k":{k}}}'.encode()) for k in range(n)]
    producer = FakeProducer(partitions, capacity)
    futures = await send_batches(producer, "t", records)  # type: ignore[arg-type]
    assert len(futures) == len(producer.sent)
    assert all(closed for *_, closed in producer.sent)  # closed: aiokafka sends it without lingering
    assert all(len(batch) <= capacity for _, _, batch, _ in producer.sent)
    for partition in range(partitions):  # every record once, in its partition, in the order given
        sent = [r for _, p, batch, _ in producer.sent if p == partition for r in batch]
        expected = [r for r in records if partitions == 1 or PARTITIONER(r[0], list(range(partitions)), list(range(partitions))) == partition]
        assert sent == expected


async def test_the_sink_writes_closed_batches() -> None:
    producer = FakeProducer(1, 1000)
    sink = ingest_sink.KafkaSink(producer, timeout_s=5)  # type: ignore[arg-type]
    await asyncio.gather(sink.write("t", [(b"a", b"1")]), sink.write("t", [(b"b", b"2"), (b"c", b"3")]))
    assert [r for *_, records, _ in producer.sent for r in records] == [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")]
    assert all(closed for *_, closed in producer.sent)
