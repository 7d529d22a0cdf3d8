"""Exactly-once effect: a trainer SIGKILLed again and again ends with the uninterrupted model."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.adapters.settings import Settings
from streamwise_core.contracts.codec import unpack
from streamwise_core.contracts.signing import Signer
from streamwise_devstack import free_port
from streamwise_devstack.fraud import FraudStream
from streamwise_devstack.suite import Suite, service_specs, suite_env

from .conftest import APP_SPEC, ROOT
from .loop_client import API_KEY, LoopClient, wait_for
from .reference_run import probe_inputs

pytestmark = pytest.mark.e2e
N_EVENTS = 30_000
KILLS = int(os.environ.get("STREAMWISE_TEST_KILLS", "5"))


def _status(suite: Suite) -> dict[str, Any] | None:
    try:
        r = httpx.get(f"{suite.url('trainer')}/v1/status", timeout=10, headers=API_KEY)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


async def _served_model(redis_url: str, prefix: str) -> tuple[Any, Any]:
    store = ModelStore.from_url(redis_url, prefix, "fraud")
    try:
        # The last version published, served or held back by the validation gate (the drift
        # in this stream can hold the final versions back).
        version = await store.latest_version("fraud-lr")
        assert version is not None
        signed = await store.load("fraud-lr", version)
        assert signed is not None
        return unpack(signed, Signer(Settings().signing_key_map))
    finally:
        await store.close()


def test_sigkilled_trainer_learns_every_event_exactly_once(tmp_path: Path, kafka_broker, redis_server) -> None:  # type: ignore[no-untyped-def]
    prefix = f"eo{uuid.uuid4().hex[:8]}"
    ports = {name: free_port() for name in ("webapp", "ingest", "predictor", "trainer")}
    env = suite_env(
        bootstrap=kafka_broker.bootstrap, idempotence=True, redis_url=redis_server.url,
        database_url=f"sqlite:///{tmp_path / 'registry.db'}", app_spec=APP_SPEC, topic_prefix=prefix,
        extra={"STREAMWISE_PUBLISH_EVERY_N": "2000", "STREAMWISE_BATCH_MAX": "200"},
    )
    suite = Suite(env, tmp_path / "logs", [s for s in service_specs(ports) if s.name in ("ingest", "trainer")], cwd=ROOT)
    try:
        suite.start("ingest")
        client = LoopClient(suite.url("ingest"), "http://127.0.0.1:1")
        events = FraudStream(seed=5, drift_at=N_EVENTS // 2, run_id=prefix).take(N_EVENTS)

        # The events go in one share per kill (and the rest after the last), so the trainer is
        # killed KILLS times before it can finish, however fast it learns.
        share = N_EVENTS // (KILLS + 1)
        rng = random.Random(2026)
        sent = 0
        suite.start("trainer")
        for _ in range(KILLS):
            before = (_status(suite) or {}).get("examples_seen", 0)
            client.send(events[sent : sent + share], batch=1000)
            sent += share
            wait_for(lambda: (s := _status(suite)) and s["examples_seen"] > before, 120, "the trainer to make progress")
            asyncio.run(asyncio.sleep(rng.uniform(0.0, 0.4)))  # a kill at a varying point of its work
            suite.kill("trainer")
            suite.start("trainer")
        client.send(events[sent:], batch=1000)
        wait_for(lambda: (s := _status(suite)) and s["examples_seen"] >= N_EVENTS and s, 180, "all events learned")
        final = _status(suite)
        assert final is not None and final["examples_seen"] == N_EVENTS

        out = subprocess.run(
            [sys.executable, "-m", "tests.e2e.reference_run", kafka_broker.bootstrap, prefix, str(N_EVENTS)],
            cwd=ROOT, capture_output=True, text=True, timeout=540, check=True,  # a hang guard under the test's 600 s
        )
        reference = json.loads(out.stdout)
        wait_for(
            lambda: asyncio.run(_served_model(redis_server.url, prefix))[0].examples_seen == N_EVENTS,
            120, "the final version published",
        )
        meta, model = asyncio.run(_served_model(redis_server.url, prefix))
        assert meta.examples_seen == reference["examples_seen"] == N_EVENTS
        assert final["learned_digest"] == reference["learned_digest"], "a different history was learned"
        assert final["duplicates_ignored"] == 0
        assert meta.metrics == reference["metrics"]
        assert [model.predict_proba_one(x)[True] for x in probe_inputs()] == reference["probe"]
    finally:
        suite.stop()
