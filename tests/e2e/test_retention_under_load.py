"""Retention with the real suite: the trainer deletes old version blobs while predictors keep
swapping under request load, and no predictor is ever told of a version it cannot fetch."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamwise_core.adapters.modelstore import ModelStore
from streamwise_devstack.fraud import FraudStream

from .conftest import start_suite
from .loop_client import LoopClient, wait_for

pytestmark = pytest.mark.e2e

MODEL = "fraud-lr"
KEEP_LAST, ROLLBACK_WINDOW, GRACE_S = 3, 2, 10


def stored_and_latest(redis_url: str, prefix: str, app: str) -> tuple[list[int], int | None]:
    async def read() -> tuple[list[int], int | None]:
        store = ModelStore.from_url(redis_url, prefix, app)
        try:
            return await store.stored_versions(MODEL), await store.latest_version(MODEL)
        finally:
            await store.close()

    return asyncio.run(read())


class Predicting(threading.Thread):
    """A client predicting back to back until told to stop, counting answers and failures."""

    def __init__(self, url: str, features: list[dict[str, Any]]) -> None:
        super().__init__(daemon=True)
        self.url, self.features = url, features
        self.answers = 0
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    r = client.post("/v1/predict", json={"features": self.features[self.answers % len(self.features)]})
                    if r.status_code == 200:
                        self.answers += 1
                    else:
                        self.failures.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))


def test_old_blobs_go_while_predictors_swap_under_load_and_never_miss_one(tmp_path: Path, kafka_broker, redis_server) -> None:  # type: ignore[no-untyped-def]
    suite = start_suite(
        tmp_path, kafka_broker.bootstrap, True, redis_server.url, ("trainer", "ingest", "predictor"),
        extra_env={
            "STREAMWISE_RETENTION__KEEP_LAST": str(KEEP_LAST),
            "STREAMWISE_RETENTION__ROLLBACK_WINDOW": str(ROLLBACK_WINDOW),
            "STREAMWISE_RETENTION__GRACE_S": str(GRACE_S),
            "STREAMWISE_PUBLISH_EVERY_N": "50",
            "STREAMWISE_POLL_INTERVAL_MS": "50",
        },
    )
    prefix, app = suite.env["STREAMWISE_TOPIC_PREFIX"], "fraud"
    loop = LoopClient(suite.url("ingest"), suite.url("predictor"))
    stream = FraudStream(seed=21, drift_at=10**9)
    events = stream.take(40_000)
    clients = [Predicting(suite.url("predictor"), [e.features for e in events[:200]]) for _ in range(3)]
    try:
        loop.send(events[:500])
        loop.wait_examples(1, timeout_s=180)
        for client in clients:
            client.start()
        sent = 500

        def pruned_while_serving() -> bool:
            nonlocal sent
            if sent < len(events):
                loop.send(events[sent:sent + 500])
                sent += 500
            stored, latest = stored_and_latest(redis_server.url, prefix, app)
            # Versions older than the grace period went, and many versions were swapped in meanwhile.
            return latest is not None and latest >= 40 and len(stored) < latest - 20 and min(c.answers for c in clients) >= 50

        wait_for(pruned_while_serving, timeout_s=300, what="old versions pruned while the predictor serves", interval_s=0.5)
    finally:
        for client in clients:
            client.stop.set()
        for client in clients:
            client.join(timeout=60)
    served = loop.served()
    suite.stop()
    assert served is not None
    assert served["missing_versions"] == 0, "the predictor was told of a version that was deleted before it fetched it"
    assert [f for c in clients for f in c.failures] == []
    stored, latest = stored_and_latest(redis_server.url, prefix, app)
    assert latest is not None and stored[-1] == latest
    assert len(stored) <= latest - 20
