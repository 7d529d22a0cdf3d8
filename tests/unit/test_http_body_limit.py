"""``BodyLimit`` inside the request metrics, as ingest, the predictor and the web app use it: its
answers, its reads (none before the app asks, none past a declared length over the limit), and
what the metrics and ``on_response`` count."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import Depends, FastAPI, HTTPException, Request
from prometheus_client import CollectorRegistry
from starlette.types import Message, Receive, Scope, Send

from streamwise_core.adapters.http import ApiKeyGate, BodyLimit, BodyTooLarge
from streamwise_core.adapters.telemetry import HttpMetrics, http_metrics, instrument_app, metrics_registry

LIMIT = 100


def _refuse() -> None:
    raise HTTPException(status_code=401, detail="no")


def _routes(app: FastAPI) -> None:
    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @app.post("/guarded", dependencies=[Depends(_refuse)])
    async def guarded(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}


def _app() -> tuple[FastAPI, CollectorRegistry, list[tuple[str, str, int]]]:
    """As ingest builds it: ``BodyLimit``, then ``instrument_app``."""
    seen: list[tuple[str, str, int]] = []
    app = FastAPI()
    app.add_middleware(BodyLimit, max_bytes=LIMIT)
    _routes(app)
    registry = metrics_registry(process=False)
    instrument_app(app, "t", registry, on_response=lambda *a: seen.append(a))
    return app, registry, seen


def _scope(path: str, headers: list[tuple[bytes, bytes]]) -> Scope:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}


async def _call(app: Any, path: str, chunks: list[bytes], declared: int | None) -> tuple[list[Message], int]:
    headers = [(b"host", b"t"), (b"content-type", b"application/json")]
    if declared is not None:
        headers.append((b"content-length", str(declared).encode()))
    messages = [{"type": "http.request", "body": c, "more_body": k < len(chunks) - 1} for k, c in enumerate(chunks)]
    reads = 0

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)  # a client that sends nothing more
        raise AssertionError

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await app(_scope(path, headers), receive, send)
    return sent, reads


CASES = {
    "small, declared": ("/echo", [b"x" * 40], 40),
    "at the limit, chunked": ("/echo", [b"x" * 50, b"x" * 50], None),
    "declared over the limit": ("/echo", [b"x" * 500], 500),
    "chunked over the limit": ("/echo", [b"x" * 60, b"x" * 60, b"x" * 60], None),
    "a lying Content-Length": ("/echo", [b"x" * 60, b"x" * 60], 10),
    "refused before the body": ("/guarded", [b"x" * 500], 500),
    "no route": ("/nope", [b"x" * 500], 500),
}


@pytest.mark.parametrize("case", CASES)
async def test_the_limit_answers_reads_and_counts(case: str) -> None:
    path, chunks, declared = CASES[case]
    app, registry, seen = _app()
    sent, reads = await _call(app, path, chunks, declared)
    counted = {(s.labels["route"], s.labels["status"]): s.value for m in registry.collect() for s in m.samples
               if s.name == "streamwise_http_requests_total"}
    expected = {"small, declared": 200, "at the limit, chunked": 200, "refused before the body": 401, "no route": 404}.get(case, 413)
    route = path if expected != 404 else "<unmatched>"
    assert sent[0]["status"] == expected and seen == [(route, "POST", expected)]
    assert counted == {(route, str(expected)): 1.0}
    if expected == 413:
        assert sent[1]["body"] == b'{"detail":"body larger than 100 bytes"}'
    if case in ("declared over the limit", "refused before the body", "no route"):
        assert reads == 0  # nothing read before the app asks, nor past a declared length over the limit
    if case == "chunked over the limit":
        assert reads == 2  # refused at the chunk that passes the limit


async def _raw_reader(scope: Scope, receive: Receive, send: Send) -> None:
    """An ASGI app with no exception handling that reads its whole body, then answers."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _answers_then_reads(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 202, "headers": []})
    await send({"type": "http.response.body", "body": b"", "more_body": True})
    while (await receive()).get("more_body"):
        pass


def _wrapped(inner: Any) -> tuple[Any, CollectorRegistry]:
    registry = CollectorRegistry()
    requests, latency = http_metrics(registry)
    return HttpMetrics(BodyLimit(inner, max_bytes=LIMIT), requests=requests, latency=latency, service="t"), registry


async def test_an_unhandled_overrun_is_answered_413_and_counted() -> None:
    app, registry = _wrapped(_raw_reader)
    sent, _ = await _call(app, "/raw", [b"x" * 60, b"x" * 60], None)
    assert [m.get("status") for m in sent] == [413, None]
    assert sent[1]["body"] == b'{"detail":"body larger than 100 bytes"}'
    assert registry.get_sample_value("streamwise_http_requests_total", {"service": "t", "route": "<unmatched>", "method": "POST", "status": "413"}) == 1


async def test_an_overrun_after_the_answer_started_is_raised_not_answered() -> None:
    app, registry = _wrapped(_answers_then_reads)
    with pytest.raises(BodyTooLarge):
        await _call(app, "/raw", [b"x" * 60, b"x" * 60], None)
    assert registry.get_sample_value("streamwise_http_requests_total", {"service": "t", "route": "<unmatched>", "method": "POST", "status": "202"}) == 1


def test_ingest_limits_bodies_inside_its_metrics_middleware() -> None:
    from pathlib import Path

    from streamwise_ingest.app import create_app
    from streamwise_ingest.settings import IngestSettings

    spec = Path(__file__).resolve().parents[2] / "examples" / "fraud" / "streamwise.toml"
    app = create_app(IngestSettings(app_spec=spec, log_level="WARNING", max_body_bytes=1234))
    # outermost first: the metrics see every answer, the key gate's 401s and the limit's 413s
    assert [(m.cls, m.kwargs.get("max_bytes")) for m in app.user_middleware] == [
        (HttpMetrics, None), (ApiKeyGate, None), (BodyLimit, 1234),
    ]
