"""The continuous-learning loop end to end, through HTTP only (plus one forged blob in Redis)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from streamwise_core.adapters.modelstore import ModelStore
from streamwise_devstack import free_port
from streamwise_devstack.fraud import FraudStream, holdout
from streamwise_devstack.suite import Suite, service_specs

from .loop_client import API_KEY, LoopClient, wait_for

pytestmark = pytest.mark.e2e


def _client(suite: Suite) -> LoopClient:
    return LoopClient(suite.url("ingest"), suite.url("predictor"))


def run_loop(suite: Suite, redis_url: str, *, n_train: int) -> None:
    client = _client(suite)
    stream = FraudStream(seed=11, drift_at=10**9, run_id=f"t{uuid.uuid4().hex[:6]}")
    test = holdout(1000, seed=99, after_drift=False)
    baseline = max(sum(e.label for e in test), sum(not e.label for e in test)) / len(test)

    # Stream labelled events in four waves and watch the served version advance.
    versions: list[int] = []
    for wave in range(4):
        client.send(stream.take(n_train // 4))
        served = client.wait_examples((wave + 1) * (n_train // 4))
        versions.append(served["meta"]["version"])
    assert versions == sorted(versions) and len(set(versions)) == 4, versions

    accuracy = client.accuracy(test)
    assert accuracy >= baseline + 0.1, (accuracy, baseline)

    # A late label: the event alone teaches nothing; its label, sent later, is learned.
    seen = client.examples_seen()
    [late] = stream.take(1)
    waiting = suite_status(suite)["waiting_features"]
    client.send([late], with_labels=False)
    wait_for(lambda: suite_status(suite)["waiting_features"] == waiting + 1, 120, "event waiting for its label")
    assert client.examples_seen() == seen
    client.label(late.id, late.label)
    client.wait_examples(seen + 1)
    assert suite_status(suite)["waiting_features"] == waiting

    # A forged blob is refused and the verified model keeps serving.
    served = client.served()
    assert served is not None
    good_version = served["meta"]["version"]
    forged = good_version + 1000
    asyncio.run(_forge(redis_url, suite, good_version, forged))
    wait_for(lambda: str(forged) in (client.served() or {}).get("refused", {}), 60, "forged version refused")
    served = client.served()
    assert served is not None and served["meta"]["version"] < forged
    assert client.accuracy(test[:50]) > 0.5

    # Learning and serving go on after the refusal.
    client.send(stream.take(200))
    after = client.wait_examples(seen + 201)
    assert good_version < after["meta"]["version"] < forged


def suite_status(suite: Suite) -> dict[str, Any]:
    return httpx.get(f"{suite.url('trainer')}/v1/status", timeout=5, headers=API_KEY).json()


async def _forge(redis_url: str, suite: Suite, good: int, forged: int) -> None:
    prefix = suite.env["STREAMWISE_TOPIC_PREFIX"]
    store = ModelStore.from_url(redis_url, prefix, "fraud")
    try:
        signed = await store.load("fraud-lr", good)
        assert signed is not None
        blob = bytearray(signed.blob)
        blob[len(blob) // 2] ^= 0xFF
        await store.put_raw("fraud-lr", forged, {
            "meta": signed.meta, "blob": bytes(blob), "kid": signed.signature.key_id, "sig": signed.signature.digest,
        })
        await store.set_current("fraud-lr", forged)
    finally:
        await store.close()


def test_loop_on_apache_kafka(kafka_suite: Suite, redis_server) -> None:  # type: ignore[no-untyped-def]
    run_loop(kafka_suite, redis_server.url, n_train=4000)


def test_loop_smoke_on_tansu(tansu_suite: Suite, redis_server) -> None:  # type: ignore[no-untyped-def]
    run_loop(tansu_suite, redis_server.url, n_train=2000)


def test_trainer_status_is_an_admin_read(tansu_suite: Suite) -> None:
    url = f"{tansu_suite.url('trainer')}/v1/status"
    assert httpx.get(url, timeout=5).status_code == 401
    assert httpx.get(url, timeout=5, headers={"X-API-Key": "not-the-key"}).status_code == 401
    ok = httpx.get(url, timeout=5, headers=API_KEY)
    assert ok.status_code == 200 and "examples_seen" in ok.json()



def test_a_second_trainer_for_the_same_model_refuses_to_start(kafka_suite: Suite) -> None:
    """The single-writer lease: a second trainer of the same model exits naming the first,
    which keeps running."""
    env = {**kafka_suite.env, "STREAMWISE_WRITER_LEASE_MS": "1000"}
    [spec] = [s for s in service_specs({"trainer": free_port()}) if s.name == "trainer"]
    second = Suite(env, kafka_suite.log_dir / "second", [spec], cwd=kafka_suite.cwd)
    try:
        with pytest.raises(RuntimeError, match="another trainer"):
            second.start("trainer", timeout_s=60)
        assert kafka_suite.procs["trainer"].poll() is None
    finally:
        second.stop()
