"""Hot swaps under load, through HTTP: clients keep predicting while dozens of versions (a
large tree ensemble among them) are swapped in. No request may fail, no client may see an
older version after a newer one, and the last version published is the one served.

Latency is not asserted here: ``bench/swap_under_load.py`` measures it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench._load import (
    MODEL,
    Publisher,
    SwapTracker,
    app_spec,
    feature_pool,
    large_blob,
    resolve_swaps,
    run_load,
    train_small,
    versions_per_worker_monotonic,
)
from streamwise_core.modelstore import ModelStore
from streamwise_core.settings import Settings, Topics
from streamwise_core.signing import Signer
from streamwise_devstack import create_topics
from streamwise_devstack.suite import Suite

from .conftest import start_suite

pytestmark = pytest.mark.e2e

WORKERS = 8
SMALL_SWAPS = 36
LARGE_AT = (8, 20, 32)
"""After which small swaps a large version goes in (each waits until it is served)."""
LARGE_MIN_MB = 12.0


class Deadline:
    """Shared stop time of the load: +inf until the swaps are done."""

    value = math.inf


@pytest.fixture
def predictor(tmp_path: Path, tansu_broker, redis_server) -> Iterator[Suite]:  # type: ignore[no-untyped-def]
    suite = start_suite(tmp_path, tansu_broker.bootstrap, False, redis_server.url, ("predictor",))
    yield suite
    suite.stop()


async def served_version(client: httpx.AsyncClient) -> int | None:
    r = await client.get("/v1/model")
    return r.json()["meta"]["version"] if r.status_code == 200 else None


async def wait_served(client: httpx.AsyncClient, version: int, timeout_s: float = 60.0) -> None:
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
            load = asyncio.create_task(run_load(url, WORKERS, until, feature_pool()))
            tracker = SwapTracker(url, publisher.publications, interval_s=0.01)
            tracking = asyncio.create_task(tracker.run(stop))
            await asyncio.sleep(0.5)  # every client is predicting before the first swap

            large_versions = []
            for k in range(SMALL_SWAPS):
                await publisher.publish("small")
                await asyncio.sleep(0.1)
                if k in LARGE_AT:
                    big = await publisher.publish("large")
                    large_versions.append(big.version)
                    await wait_served(client, big.version)  # nothing newer is published meanwhile
                    await asyncio.sleep(0.2)  # let it answer some requests
            last = publisher.publications[-1].version
            await wait_served(client, last)
            await asyncio.sleep(0.5)  # and some load on the last version
            until.value = time.monotonic()
            result = await asyncio.wait_for(load, 60)
            stop.set()
            await tracking
            final = (await client.get("/v1/model")).json()
    finally:
        stop.set()
        await store.close()

    failed = [(s, v) for s, v in zip(result.status, result.version, strict=True) if s != 200]
    assert not failed and not result.errors, (len(failed), failed[:5], result.errors)
    assert len(result.status) >= 200, "the load did not run"

    # Versions only go forward, for every client, and the last one is served in the end.
    assert versions_per_worker_monotonic(result) == {}
    assert final["meta"]["version"] == last
    assert final["refused"] == {}
    assert final["swaps"] >= SMALL_SWAPS, final["swaps"]
    seen_versions = set(result.version)
    assert len(seen_versions) >= 10, sorted(seen_versions)

    # Each large version was swapped in while clients were being answered, and answered some.
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
