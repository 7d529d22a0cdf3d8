"""The demo stream driver against a tiny real HTTP server that records what arrives."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from typer.testing import CliRunner

from streamwise_devstack.demo_stream import (
    IngestRejected,
    IngestUnavailable,
    StreamSummary,
    TokenBucket,
    app,
    stream,
)
from streamwise_devstack.fraud import FraudStream, LateLabels
from streamwise_devstack.ports import free_port

API_KEY = "test-key"
DEADLINE_S = 60.0
"""How long a wait for something that takes a fraction of a second may take before the test fails."""


@dataclass
class Recorder:
    """What the fake ingest accepted, in arrival order, and how it should misbehave."""

    accepted: list[tuple[int, str, list[dict[str, Any]]]] = field(default_factory=list)
    fail_first: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    reject_status: int | None = None
    attempts: int = 0
    seq: int = 0

    def events(self) -> list[tuple[int, dict[str, Any]]]:
        """Every accepted event with the sequence number of its request."""
        return [(seq, item) for seq, path, body in self.accepted if path == "/v1/events" for item in body]

    def labels(self) -> list[tuple[int, dict[str, Any]]]:
        """Every accepted late label with the sequence number of its request."""
        return [(seq, item) for seq, path, body in self.accepted if path == "/v1/labels" for item in body]


def _make_app(rec: Recorder) -> web.Application:
    """A fake ingest: checks the key, answers 503 first when told, records bodies."""

    async def handle(request: web.Request) -> web.Response:
        rec.attempts += 1
        if request.headers.get("X-API-Key") != API_KEY:
            return web.json_response({"detail": "invalid API key"}, status=401)
        path = request.path
        if rec.fail_first.get(path, 0) > 0:
            rec.fail_first[path] -= 1
            rec.failures += 1
            return web.json_response({"detail": "kafka unavailable"}, status=503, headers={"Retry-After": "0"})
        body = await request.json()
        if rec.reject_status is not None:
            detail = [{"index": 0, "id": body[0].get("id"), "loc": ["features", "amount"], "msg": "expected a number"}]
            return web.json_response({"detail": detail}, status=rec.reject_status)
        rec.seq += 1
        rec.accepted.append((rec.seq, path, body))
        return web.json_response({"ids": [item["id"] for item in body]}, status=202)

    application = web.Application()
    application.router.add_post("/v1/events", handle)
    application.router.add_post("/v1/labels", handle)
    return application


@pytest.fixture
def ingest() -> Iterator[tuple[Recorder, str]]:
    """The fake ingest on a free loopback port, served from a background thread."""
    rec = Recorder()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    address: list[int] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(_make_app(rec))
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
        address.append(runner.addresses[0][1])
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, name="fake-ingest", daemon=True)
    thread.start()
    assert ready.wait(DEADLINE_S), "fake ingest did not start"
    yield rec, f"http://127.0.0.1:{address[0]}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(DEADLINE_S)


async def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        assert time.monotonic() < deadline, f"timed out after {DEADLINE_S}s waiting for {what}"
        await asyncio.sleep(0.02)


class _Refusals(logging.Handler):
    """Counts the demo stream's "POST ... failed" warnings (one per request that starts retrying)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("POST /v1/events failed"):
            self.count += 1


def _expected(seed: int, n: int, drift_at: int, late_fraction: float) -> tuple[dict[str, Any], set[str]]:
    """The events a run should send, by id, and the ids whose labels go late."""
    events = FraudStream(seed, drift_at=drift_at).take(n)
    late = LateLabels(seed, late_fraction=late_fraction)
    held = {e.id for e in events if not late.route(e)}
    return {e.id: e for e in events}, held


def _check_delivery(rec: Recorder, summary: StreamSummary, seed: int, n: int, drift_at: int) -> None:
    """Every event exactly once, every label exactly once and never before its event."""
    expected, held = _expected(seed, n, drift_at, 0.3)
    events = rec.events()
    ids = [item["id"] for _, item in events]
    assert ids == list(expected)
    event_seq = {item["id"]: seq for seq, item in events}
    for _, item in events:
        gen = expected[item["id"]]
        assert item["features"] == gen.features
        assert datetime.fromisoformat(item["timestamp"]).utcoffset() == UTC.utcoffset(None)
        if "label" in item:
            assert item["label"] is gen.label
    inline = {item["id"] for _, item in events if "label" in item}
    assert inline == set(expected) - held

    labels = rec.labels()
    label_ids = [item["id"] for _, item in labels]
    assert len(label_ids) == len(set(label_ids))
    assert set(label_ids) == held
    for seq, item in labels:
        assert seq > event_seq[item["id"]]
        assert item["label"] is expected[item["id"]].label
        assert set(item) == {"id", "label"}

    assert summary.sent == n
    assert summary.inline_labels == len(inline)
    assert summary.late_labels == len(held)


@pytest.mark.integration
async def test_every_event_and_label_arrives_once_in_order(ingest: tuple[Recorder, str]) -> None:
    rec, url = ingest
    summary = await stream(url, API_KEY, total=1000, rate=0, batch=50, drift_at=500, seed=3, progress=False)
    _check_delivery(rec, summary, seed=3, n=1000, drift_at=500)
    assert summary.retries == 0
    assert all(len(body) <= 50 for _, _, body in rec.accepted)


@pytest.mark.integration
async def test_503s_are_retried_without_losing_anything(ingest: tuple[Recorder, str]) -> None:
    rec, url = ingest
    rec.fail_first = {"/v1/events": 3, "/v1/labels": 2}
    summary = await stream(url, API_KEY, total=600, rate=0, batch=40, drift_at=300, seed=5, progress=False)
    assert rec.failures == 5
    assert summary.retries == 5
    _check_delivery(rec, summary, seed=5, n=600, drift_at=300)


@pytest.mark.integration
async def test_422_stops_with_a_clear_error(ingest: tuple[Recorder, str]) -> None:
    rec, url = ingest
    rec.reject_status = 422
    with pytest.raises(IngestRejected) as info:
        await stream(url, API_KEY, total=100, rate=0, batch=10, seed=1, progress=False)
    assert info.value.status == 422
    assert "HTTP 422" in str(info.value)
    assert "features.amount: expected a number" in str(info.value)
    assert "/v1/events" in str(info.value)
    assert rec.attempts == 1
    assert rec.accepted == []


@pytest.mark.integration
async def test_wrong_api_key_stops_with_a_hint(ingest: tuple[Recorder, str]) -> None:
    _, url = ingest
    with pytest.raises(IngestRejected, match="--api-key") as info:
        await stream(url, "wrong", total=10, rate=0, batch=10, progress=False)
    assert info.value.status == 401


@pytest.mark.integration
async def test_connection_refused_is_retried_until_ingest_listens() -> None:
    rec = Recorder()
    port = free_port()
    runner = web.AppRunner(_make_app(rec))
    await runner.setup()
    refusals = _Refusals()
    logger = logging.getLogger("streamwise_devstack.demo_stream")
    logger.addHandler(refusals)

    async def start_late() -> None:
        # Listen only once a request was refused, however long the stream takes to send its first.
        await _until(lambda: refusals.count > 0, "a refused request")
        await web.TCPSite(runner, "127.0.0.1", port).start()

    starter = asyncio.create_task(start_late())
    try:
        summary = await stream(f"http://127.0.0.1:{port}", API_KEY, total=200, rate=0, batch=50, seed=6,
                               progress=False, retry_for=DEADLINE_S)
    finally:
        logger.removeHandler(refusals)
        starter.cancel()  # done already, unless the stream gave up without a refusal
        await asyncio.gather(starter, return_exceptions=True)
        await runner.cleanup()
    assert summary.retries >= 1
    _check_delivery(rec, summary, seed=6, n=200, drift_at=20_000)


@pytest.mark.integration
async def test_unreachable_ingest_gives_up_after_the_retry_budget() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(IngestUnavailable, match="gave up"):
        await stream(url, API_KEY, total=10, rate=0, batch=10, progress=False, retry_for=0.5)


@pytest.mark.integration
async def test_rate_is_respected(ingest: tuple[Recorder, str]) -> None:
    rec, url = ingest
    summary = await stream(url, API_KEY, total=400, rate=1000, batch=50, progress=False)
    assert summary.sent == 400
    assert summary.seconds >= 0.3  # the first batch is free, the other 350 events wait for tokens
    assert len([1 for _, path, _ in rec.accepted if path == "/v1/events"]) == 8


@pytest.mark.integration
async def test_endless_stream_stops_and_sends_held_labels(ingest: tuple[Recorder, str]) -> None:
    rec, url = ingest
    stop = asyncio.Event()
    task = asyncio.create_task(
        stream(url, API_KEY, total=0, rate=5000, batch=50, seed=8, progress=False, stop=stop)
    )
    try:
        await _until(lambda: len(rec.events()) >= 600 or task.done(), "600 events")
    finally:
        stop.set()
    summary = await asyncio.wait_for(task, DEADLINE_S)
    assert summary.sent >= 600
    _check_delivery(rec, summary, seed=8, n=summary.sent, drift_at=20_000)


@pytest.mark.integration
async def test_progress_bar_mode_runs(ingest: tuple[Recorder, str]) -> None:
    rec, url = ingest
    summary = await stream(url, API_KEY, total=150, rate=0, batch=50, drift_at=100, seed=2, progress=True)
    _check_delivery(rec, summary, seed=2, n=150, drift_at=100)


@pytest.mark.integration
def test_cli_streams_and_reports(ingest: tuple[Recorder, str]) -> None:
    rec, url = ingest
    args = ["--ingest-url", url, "--api-key", API_KEY, "--total", "120", "--rate", "0", "--batch", "30",
            "--seed", "4", "--drift-at", "60", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "sent 120 events" in result.output
    assert len(rec.events()) == 120


@pytest.mark.integration
def test_cli_reports_rejection_and_exits_1(ingest: tuple[Recorder, str]) -> None:
    rec, url = ingest
    rec.reject_status = 422
    result = CliRunner().invoke(app, ["--ingest-url", url, "--api-key", API_KEY, "--total", "10", "--no-progress"])
    assert result.exit_code == 1
    assert "HTTP 422" in result.output


def test_token_bucket_paces_batches() -> None:
    now = [0.0]
    bucket = TokenBucket(100.0, capacity=50, clock=lambda: now[0])
    assert bucket.take(50) == 0.0
    assert bucket.take(50) == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take(50) == pytest.approx(0.5)
    now[0] += 60.0
    assert bucket.take(50) == 0.0  # idle time refills at most one burst
    assert bucket.take(10) == pytest.approx(0.1)
    assert TokenBucket(0, capacity=50).take(10_000) == 0.0
