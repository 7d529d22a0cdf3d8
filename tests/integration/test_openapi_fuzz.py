"""Property-based fuzzing of every HTTP API from its own OpenAPI document (schemathesis).

Ingest, the predictor and the web app run for real (uvicorn in threads, real Kafka, Redis and
a SQLite registry, a signed model version published). ``schemathesis run`` (the CLI, in a
subprocess, against the live URLs) generates valid, near-valid and invalid requests from
each service's OpenAPI document (examples, coverage and fuzzing phases; positive and
negative data; the API key supplied for ingest) and checks every answer: never a 5xx, only
documented status codes and content types, bodies that match their documented schema,
schema-violating requests refused, 405 for undocumented methods, and (ingest) 401 without
the key. Every exchange is read back from the HAR report: no response echoes a secret, and
each test prints its responses by operation and status.

Ingest documents its events and labels from the app spec's features, so the fuzzer sends
event-shaped bodies and valid ones are accepted (202); NDJSON bodies, which schemathesis
cannot serialize, are fuzzed with the same generated items by hypothesis directly. The
web app's live stream never ends and is left out.

``STREAMWISE_FUZZ_EXAMPLES`` (default 150) bounds the cases per operation and phase,
``STREAMWISE_FUZZ_SEED`` picks the (deterministic) seed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from streamwise_core.adapters.kafka import ensure_topics
from streamwise_core.adapters.registry import Registry, migrate
from streamwise_ingest.app import create_app as create_ingest
from streamwise_ingest.settings import IngestSettings
from streamwise_predictor.app import create_app as create_predictor
from streamwise_predictor.settings import PredictorSettings
from streamwise_webapp.app import create_app as create_webapp
from streamwise_webapp.settings import WebappSettings

from .test_bad_input import API_KEY, SECRETS, common, publish_model, serve, wait_until

FUZZ_EXAMPLES = int(os.environ.get("STREAMWISE_FUZZ_EXAMPLES", "150"))
RUN_GUARD_S = 20 * FUZZ_EXAMPLES
"""A hang guard for one schemathesis run, about ten times what the slowest (the web app's, mostly
the fuzzer's own CPU) takes on two cores: the work is fixed, the machine's speed is not."""
pytestmark = [pytest.mark.integration, pytest.mark.timeout(RUN_GUARD_S + 600)]
SEED = int(os.environ.get("STREAMWISE_FUZZ_SEED", "20260131"))
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "unsupported_method",
    "negative_data_rejection",
]
STREAMING = ("/api/v1/live",)
"""Endpoints whose answer never ends (Server-Sent Events): not fuzzed, a request would never return."""


@pytest.fixture(scope="module")
def services(kafka_broker: Any, redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The three services with HTTP APIs, on one topic prefix, with model v1 published."""
    prefix = f"fz{uuid.uuid4().hex[:10]}"
    database_url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'registry.db'}"
    base = common(kafka_broker.bootstrap, redis_server.url, prefix)
    ingest = IngestSettings(**base)
    predictor = PredictorSettings(**base, poll_interval_ms=200)
    webapp = WebappSettings(**base, database_url=database_url, poll_interval_ms=200)
    asyncio.run(_prepare(predictor, database_url))
    with (
        serve(create_ingest(ingest), "ingest") as ingest_url,
        serve(create_predictor(predictor), "predictor") as predictor_url,
        serve(create_webapp(webapp), "webapp") as webapp_url,
    ):
        for url in (predictor_url, webapp_url, ingest_url):
            wait_until(lambda url=url: httpx.get(f"{url}/readyz", timeout=30).status_code == 200, 60, f"{url} ready")
        yield {"ingest": ingest_url, "predictor": predictor_url, "webapp": webapp_url}


async def _prepare(settings: PredictorSettings, database_url: str) -> None:
    await ensure_topics(settings.kafka, settings.topics.all(), timeout_s=30)
    await asyncio.to_thread(migrate, database_url)
    meta = await publish_model(settings)
    registry = Registry.from_url(database_url)
    try:
        await asyncio.to_thread(registry.record_version, meta, "it")
    finally:
        registry.close()


def fuzz(name: str, url: str, out: Path, *extra: str) -> tuple[Counter[tuple[str, int]], float]:
    """Run ``schemathesis run`` against ``url``; fail with its report unless every check passed.

    Returns the responses by operation and status, read from the HAR of every exchange.
    """
    har = out / f"{name}.har"
    argv = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
        "--phases", "examples,coverage,fuzzing",
        "--mode", "all",
        "--checks", ",".join(CHECKS),
        "--max-examples", str(FUZZ_EXAMPLES),
        "--seed", str(SEED),
        "--workers", "1",
        "--request-timeout", "60",
        "--generation-database", "none",
        "--suppress-health-check", "all",
        "--continue-on-failure",
        "--report", "har", "--report-har-path", str(har),
        "--no-color",
        *extra,
    ]
    started = time.monotonic()
    run = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_GUARD_S, cwd=out)
    elapsed = time.monotonic() - started
    output = run.stdout + run.stderr
    (out / f"{name}.log").write_text(output)
    stats = _har_stats(har)
    text = output
    for secret in SECRETS:
        text = text.replace(secret, "<secret>")
    assert run.returncode == 0, f"schemathesis found problems in {name} (exit {run.returncode}):\n{text[-12000:]}"
    return stats, elapsed


def _har_stats(har: Path) -> Counter[tuple[str, int]]:
    stats: Counter[tuple[str, int]] = Counter()
    if not har.exists():
        return stats
    data = json.loads(har.read_text())
    for entry in data["log"]["entries"]:
        request, response = entry["request"], entry["response"]
        stats[(f"{request['method']} {urlsplit(request['url']).path}", int(response["status"]))] += 1
        for secret in SECRETS:
            body = response.get("content", {}).get("text") or ""
            assert secret not in body, f"a response echoed a secret: {request['method']} {request['url']}"
    return stats


def _documented(url: str) -> set[str]:
    document = httpx.get(f"{url}/openapi.json", timeout=10).json()
    return {
        f"{method.upper()} {path}" for path, methods in document["paths"].items() if path not in STREAMING for method in methods
    }


def _report(name: str, stats: Counter[tuple[str, int]], elapsed: float = 0.0) -> str:
    lines = [f"fuzz statistics of {name}: {sum(stats.values())} requests in {elapsed:.0f}s, by operation and status:"]
    for op in sorted({op for op, _ in stats}):
        codes = {code: n for (o, code), n in stats.items() if o == op}
        shown = ", ".join(f"{code}: {n}" for code, n in sorted(codes.items()))
        lines.append(f"  {op:32} {sum(codes.values()):5}  ({shown})")
    return "\n".join(lines)


def _check(name: str, url: str, run: tuple[Counter[tuple[str, int]], float], capsys: pytest.CaptureFixture[str]) -> None:
    stats, elapsed = run
    with capsys.disabled():
        print("\n" + _report(name, stats, elapsed))
    server_errors = {key: n for key, n in stats.items() if key[1] >= 500}
    assert server_errors == {}, server_errors
    missing = {op for op in _documented(url) if not any(_matches(op, seen) for seen, _ in stats)}
    assert not missing, f"operations never exercised: {missing}"


def _matches(template: str, request: str) -> bool:
    """``POST /a/{b}/c`` matches ``POST /a/x/c``: path parameters stand for one segment."""
    pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in re.split(r"(\{[^}]+\})", template))
    return re.fullmatch(pattern, request) is not None


def test_fuzz_ingest(services: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fuzz("ingest", services["ingest"], tmp_path, "--header", f"X-API-Key: {API_KEY}", "--checks", "ignored_auth")
    _check("ingest", services["ingest"], run, capsys)
    stats = run[0]
    # The documented event schema makes the fuzzer send events the service accepts, not only junk.
    assert stats[("POST /v1/events", 202)] > 0 and stats[("POST /v1/labels", 202)] > 0, _report("ingest", stats)


def test_fuzz_predictor(services: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fuzz("predictor", services["predictor"], tmp_path)
    _check("predictor", services["predictor"], run, capsys)
    stats = run[0]
    assert stats[("POST /v1/predict", 200)] > 0 and stats[("POST /v1/predict/batch", 200)] > 0, _report("predictor", stats)


def test_fuzz_webapp(services: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = fuzz("webapp", services["webapp"], tmp_path, *(x for path in STREAMING for x in ("--exclude-path", path)))
    _check("webapp", services["webapp"], run, capsys)


def test_fuzz_ingest_ndjson(services: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """The same generated events and labels, sent as NDJSON (which schemathesis cannot serialize),
    with blank and broken lines mixed in: always 202 or a 422 naming the problem."""
    schema = schemathesis.openapi.from_url(f"{services['ingest']}/openapi.json")
    stats: Counter[tuple[str, int]] = Counter()
    started = time.monotonic()
    with httpx.Client(base_url=services["ingest"], headers={"X-API-Key": API_KEY}, timeout=60) as client:
        for path in ("/v1/events", "/v1/labels"):
            _ndjson_fuzz(client, schema[path]["POST"], path, stats)()
    with capsys.disabled():
        print("\n" + _report("ingest (NDJSON)", stats, time.monotonic() - started))
    assert stats[("POST /v1/events (NDJSON)", 202)] > 0 and stats[("POST /v1/labels (NDJSON)", 202)] > 0


def _ndjson_fuzz(client: httpx.Client, operation: Any, path: str, stats: Counter[tuple[str, int]]) -> Any:
    bodies = st.one_of(
        *(operation.as_strategy(generation_mode=mode, media_type="application/json") for mode in GenerationMode)
    ).map(lambda case: case.body)
    junk = st.lists(st.sampled_from(["", "  ", "{", "null", "[]", "NaN", '{"id": 1}', "\ufeff{}", "\r", "1e999"]), max_size=3)

    @settings(
        max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=bodies, extra=junk, where=st.integers(min_value=0, max_value=1000))
    def post(body: Any, extra: list[str], where: int) -> None:
        items = body if isinstance(body, list) else [body]
        lines = [item if isinstance(item, bytes) else json.dumps(item).encode() for item in items]
        at = where % (len(lines) + 1)
        lines[at:at] = [x.encode() for x in extra]
        r = client.post(path, content=b"\n".join(lines), headers={"Content-Type": "application/x-ndjson"})
        stats[(f"POST {path} (NDJSON)", r.status_code)] += 1
        assert r.status_code in (202, 422), (r.status_code, r.text[:500])
        if r.status_code == 422:
            assert r.json()["detail"], r.text[:500]
        assert len(r.content) <= 32 * 1024
        for secret in SECRETS:
            assert secret not in r.text

    return post
