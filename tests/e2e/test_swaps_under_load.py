"""Hot swaps under load, through HTTP: clients keep predicting while dozens of versions (a
large tree ensemble among them) are swapped in. No request may fail, no client may see an
older version after a newer one, and the last version published is the one served.

Latency is not asserted here: ``bench/swap_under_load.py`` measures it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import pytest

from bench._load import (
    MODEL,
    Publisher,
    Reply,
    SwapTracker,
    app_spec,
    feature_pool,
    large_blob,
    post,
    resolve_swaps,
    run_load,
    train_small,
    versions_per_worker_monotonic,
)
from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.adapters.settings import Settings, Topics
from streamwise_core.contracts.signing import Signer
from streamwise_devstack import create_topics
from streamwise_devstack.suite import Suite

from .conftest import start_suite

pytestmark = pytest.mark.e2e

WORKERS = 8
SMALL_SWAPS = 36
LARGE_AT = (8, 20, 32)
"""After which small swaps a large version goes in (each waits until it is served)."""
LARGE_MIN_MB = 12.0
ANSWERS_PER_SMALL = 3
ANSWERS_PER_LARGE = 20
MIN_REQUESTS = 200


class Deadline:
    """Shared stop time of the load: +inf until the swaps are done."""

    value = math.inf


class CountedPredictions:
    """The load's request (the default one of ``run_load``), counting the answers per client and
    per version as they come, so the test waits for answers instead of sleeping."""

    def __init__(self, features: list[dict[str, Any]]) -> None:
        self.features = features
        self.by_worker: Counter[int] = Counter()
        self.by_version: Counter[int] = Counter()
        self.failures: list[str] = []

    async def __call__(self, session: aiohttp.ClientSession, worker: int, i: int) -> Reply:
        body = orjson.dumps({"id": f"w{worker}-{i}", "features": self.features[(worker * 7919 + i) % len(self.features)]})
        try:
            reply = await post(session, "/v1/predict", body, {"content-type": "application/json"})
        except Exception as exc:
            self.failures.append(repr(exc))
            raise  # run_load records it
        if reply.status == 200:
            self.by_worker[worker] += 1
            self.by_version[orjson.loads(reply.body)["version"]] += 1
        else:
            self.failures.append(f"{reply.status} {reply.body[:200]!r}")
        return reply

    def total(self) -> int:
        return sum(self.by_worker.values())

    async def wait(self, done: Callable[[], bool], what: str) -> None:
        """Until ``done()``; a failed request ends the wait (the test then reports it)."""
        await wait_until(lambda: bool(self.failures) or done(), what)

    async def wait_version(self, version: int, n: int) -> None:
        await self.wait(lambda: self.by_version[version] >= n, f"{n} answers from v{version}")


@pytest.fixture
def predictor(tmp_path: Path, tansu_broker, redis_server) -> Iterator[Suite]:  # type: ignore[no-untyped-def]
    suite = start_suite(tmp_path, tansu_broker.bootstrap, False, redis_server.url, ("predictor",))
    yield suite
    suite.stop()


async def served_version(client: httpx.AsyncClient) -> int | None:
    r = await client.get("/v1/model")
    return r.json()["meta"]["version"] if r.status_code == 200 else None


async def wait_until(done: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_served(client: httpx.AsyncClient, version: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        served = await served_version(client)
        if served is not None and served >= version:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"v{version} not served within {timeout_s}s (serving v{await served_version(client)})")


async def test_swaps_under_load(predictor: Suite, redis_server) -> None:  # type: ignore[no-untyped-def]
    spec = app_spec()
    small, seen = train_small(spec, n_events=1000)
    large = large_blob(spec, LARGE_MIN_MB)  # trained once, then cached on disk (see bench/_load.py)
    assert large.mb >= 10, large.mb

    prefix = predictor.env["STREAMWISE_TOPIC_PREFIX"]
    await create_topics(predictor.env["STREAMWISE_KAFKA__BOOTSTRAP"], [Topics.for_app(prefix, "fraud").predictions])
    store = ModelStore.from_url(redis_server.url, prefix, "fraud")
    publisher = Publisher(store, Signer(Settings().signing_key_map), small, seen, large)
    url = predictor.url("predictor")
    stop = asyncio.Event()
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            first = await publisher.publish("small")
            await wait_served(client, first.version)

            until = Deadline()
            answers = CountedPredictions(feature_pool())
            load = asyncio.create_task(run_load(url, WORKERS, until, answers.features, answers))
            tracker = SwapTracker(url, publisher.publications, interval_s=0.01)
            tracking = asyncio.create_task(tracker.run(stop))
            await answers.wait(
                lambda: len(answers.by_worker) == WORKERS and min(answers.by_worker.values()) >= 3,
                "every client to be answered before the first swap",
            )

            # Each version is served and answers requests before the next is published (nothing
            # newer is published meanwhile, so none is skipped), however fast the machine.
            large_versions = []
            for k in range(SMALL_SWAPS):
                small_version = (await publisher.publish("small")).version
                await wait_served(client, small_version)
                await answers.wait_version(small_version, ANSWERS_PER_SMALL)
                if k in LARGE_AT:
                    big = await publisher.publish("large")
                    large_versions.append(big.version)
                    await wait_served(client, big.version)
                    await answers.wait_version(big.version, ANSWERS_PER_LARGE)
            last = publisher.publications[-1].version
            await wait_served(client, last)
            await answers.wait_version(last, ANSWERS_PER_LARGE)
            await answers.wait(lambda: answers.total() >= MIN_REQUESTS, f"{MIN_REQUESTS} answers in all")
            until.value = time.monotonic()
            result = await asyncio.wait_for(load, 60)
            stop.set()
            await tracking
            final = (await client.get("/v1/model")).json()
    finally:
        stop.set()
        await store.close()

    failed = [(s, v) for s, v in zip(result.status, result.version, strict=True) if s != 200]
    assert not failed and not result.errors, (len(failed), failed[:5], result.errors, answers.failures[:5])
    assert len(result.status) >= MIN_REQUESTS, "the load did not run"

    # Versions only go forward, for every client, and the last one is served in the end.
    assert versions_per_worker_monotonic(result) == {}
    assert final["meta"]["version"] == last
    assert final["refused"] == {}
    published = {p.version for p in publisher.publications}
    assert final["swaps"] == len(published), (final["swaps"], len(published))
    seen_versions = set(result.version)
    assert seen_versions == published, sorted(published - seen_versions)

    # Each large version was swapped in while clients were being answered, and answered some.
    # (This compares two durations on the same machine, a 12 MB load and one request, and holds
    # whatever its speed: with every client always in flight, no answer in the window means the
    # predictor answered nobody while it loaded.)
    pubs = {p.version: p for p in publisher.publications}
    resolve_swaps(publisher.publications, result)
    for version in large_versions:
        pub = pubs[version]
        assert pub.served is not None and pub.exact, (version, pub)
        assert version in seen_versions, f"no prediction came from the large v{version}"
        answered_meanwhile = [
            t + dt for t, dt, s in zip(result.t_send, result.latency, result.status, strict=True)
            if s == 200 and pub.announced <= t + dt <= pub.served
        ]
        assert answered_meanwhile, f"no request was answered while v{version} ({large.mb:.0f} MB) was loading"
    assert {p.kind for p in publisher.publications} == {"small", "large"}
    assert all(p.served is not None for p in publisher.publications if p.version == last)
    assert final["meta"]["model"] == MODEL
