"""Metrics and logs of the running suite: after a run of the loop, every service's /metrics shows
the learning moved, and every service logs JSON lines (the trainer's dead letter with its event id).

The suite runs with ``STREAMWISE_LOG_FORMAT=json``, as the containers do, on Apache Kafka and on
Tansu. The run:
labelled events through ingest, one request without the API key, a poison message on the events
topic, predictions single and batched, a forged version in Redis, the web app's page.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from streamwise_devstack.fraud import FraudStream
from streamwise_devstack.suite import Suite

from .conftest import start_suite
from .loop_client import LoopClient, wait_for
from .test_loop import _forge

pytestmark = pytest.mark.e2e

MODEL = "fraud-lr"
POISON_ID = "poison-e2e-1"
N_EVENTS = 800


@pytest.fixture(params=["kafka", "tansu"])
def json_suite(request: pytest.FixtureRequest, tmp_path: Path, redis_server) -> Iterator[tuple[Suite, str]]:  # type: ignore[no-untyped-def]
    """The suite with JSON logs, and the bootstrap servers of its broker."""
    broker = request.getfixturevalue(f"{request.param}_broker")
    suite = start_suite(
        tmp_path, broker.bootstrap, request.param == "kafka", redis_server.url, ("trainer", "ingest", "predictor", "webapp"),
        extra_env={"STREAMWISE_LOG_FORMAT": "json"},
    )
    yield suite, broker.bootstrap
    suite.stop()


class Scrape:
    """One scrape of a service's /metrics, read with Prometheus's own text parser."""

    def __init__(self, suite: Suite, service: str) -> None:
        response = httpx.get(f"{suite.url(service)}/metrics", timeout=10)
        assert response.status_code == 200, f"{service}: {response.status_code} {response.text[:300]}"
        assert response.headers["content-type"].startswith("text/plain"), response.headers["content-type"]
        self.service = service
        self.samples = [s for family in text_string_to_metric_families(response.text) for s in family.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples ``name`` whose labels include ``labels`` (0 when there is none)."""
        return sum(s.value for s in self.samples if s.name == name and labels.items() <= s.labels.items())

    def has(self, name: str, **labels: str) -> bool:
        return any(s.name == name and labels.items() <= s.labels.items() for s in self.samples)


def scrape_all(suite: Suite) -> dict[str, Scrape]:
    return {name: Scrape(suite, name) for name in ("trainer", "ingest", "predictor", "webapp")}


async def _poison(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"\x00this is not an event {", key=POISON_ID.encode())
    finally:
        await producer.stop()


def _json_lines(suite: Suite, service: str) -> list[dict[str, Any]]:
    """Every line the service wrote (stdout and stderr), each parsed as one JSON object."""
    lines = []
    for number, line in enumerate((suite.log_dir / f"{service}.log").read_text(errors="replace").splitlines(), 1):
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"{service}.log line {number} is not JSON: {line[:300]!r}") from None
    return lines


def test_metrics_show_the_learning_after_a_run(json_suite: tuple[Suite, str], redis_server) -> None:  # type: ignore[no-untyped-def]
    suite, bootstrap = json_suite
    before = scrape_all(suite)
    assert before["trainer"].value("streamwise_trainer_examples_learned_total") == 0
    assert before["predictor"].value("streamwise_predictor_model_version", model=MODEL) == 0
    assert before["ingest"].value("streamwise_ingest_accepted_total", kind="events") == 0

    # --- the run
    client = LoopClient(suite.url("ingest"), suite.url("predictor"))
    stream = FraudStream(seed=17, drift_at=10**9, run_id=f"o{uuid.uuid4().hex[:6]}")
    client.send(stream.take(N_EVENTS))
    client.wait_examples(N_EVENTS)
    assert httpx.post(f"{suite.url('ingest')}/v1/events", json=[], timeout=10).status_code == 401
    prefix = suite.env["STREAMWISE_TOPIC_PREFIX"]
    asyncio.run(_poison(bootstrap, f"{prefix}.fraud.events"))
    singles = stream.take(5)
    for event in singles:
        assert client.predictor.post("/v1/predict", json={"id": event.id, "features": event.features}).status_code == 200
    client.accuracy(stream.take(40))  # one batch of 40
    served = client.served()
    assert served is not None
    good = served["meta"]["version"]
    asyncio.run(_forge(redis_server.url, suite, good, good + 1000))
    wait_for(lambda: str(good + 1000) in (client.served() or {}).get("refused", {}), 60, "forged version refused")
    assert httpx.get(f"{suite.url('webapp')}/", timeout=10).status_code == 200
    # the poison's dead letter, and a publication after the last examples
    wait_for(lambda: Scrape(suite, "trainer").value("streamwise_trainer_dead_letters_total") >= 1, 60, "dead letter counted")
    wait_for(lambda: Scrape(suite, "trainer").value("streamwise_trainer_consumer_lag") == 0
             and Scrape(suite, "trainer").has("streamwise_trainer_consumer_lag"), 120, "consumer caught up")

    after = scrape_all(suite)
    trainer, ingest, predictor = after["trainer"], after["ingest"], after["predictor"]

    # trainer: learned, scored, published; the lag and the dead letter are seen
    assert trainer.value("streamwise_trainer_examples_learned_total", model=MODEL) >= N_EVENTS
    accuracy = trainer.value("streamwise_trainer_progressive_metric", model=MODEL, metric="accuracy")
    assert 0.6 < accuracy <= 1, accuracy
    published = trainer.value("streamwise_trainer_model_version", model=MODEL)
    assert published >= 1
    assert trainer.value("streamwise_trainer_versions_published_total", model=MODEL) == published, "one process published all"
    assert trainer.value("streamwise_trainer_learned_to_published_seconds_count", model=MODEL) == published
    assert trainer.value("streamwise_trainer_publish_duration_seconds_count", model=MODEL) == published
    assert trainer.value("streamwise_trainer_checkpoint_bytes", model=MODEL) > 0
    assert trainer.value("streamwise_trainer_dead_letters_total", model=MODEL) == 1
    assert trainer.has("streamwise_trainer_consumer_lag", topic=f"{prefix}.fraud.events", partition="0")
    assert trainer.value("streamwise_trainer_consumed_offset", topic=f"{prefix}.fraud.events", partition="0") >= N_EVENTS
    assert trainer.value("process_resident_memory_bytes") > 0

    # predictor: swapped to a verified version, counted predictions, refused the forgery
    version = predictor.value("streamwise_predictor_model_version", model=MODEL)
    assert 1 <= version <= published and version < good + 1000
    assert predictor.value("streamwise_predictor_swaps_total", model=MODEL) >= 1
    assert predictor.value("streamwise_predictor_swap_lag_seconds_count", model=MODEL) >= 1
    assert predictor.value("streamwise_predictor_predictions_total", model=MODEL, kind="single") == len(singles)
    assert predictor.value("streamwise_predictor_predictions_total", model=MODEL, kind="batch") == 40
    assert predictor.value("streamwise_predictor_refused_blobs_total", model=MODEL, reason="signature") == 1
    assert predictor.value("streamwise_http_requests_total", route="/v1/predict", status="200") == len(singles)

    # ingest: every event accepted, the request without a key refused
    assert ingest.value("streamwise_ingest_accepted_total", kind="events") == N_EVENTS
    assert ingest.value("streamwise_ingest_rejected_requests_total", kind="events", reason="unauthorized") == 1
    assert ingest.value("streamwise_http_requests_total", route="/v1/events", status="202") == math.ceil(N_EVENTS / 500)
    assert ingest.value("streamwise_http_request_duration_seconds_count", route="/v1/events") >= 2

    # webapp: its page was served and counted
    assert after["webapp"].value("streamwise_http_requests_total", service="webapp", route="/", status="200") == 1

    # --- JSON logs, one object per line, named by service; the dead letter carries its event id
    for name in ("trainer", "ingest", "predictor", "webapp"):
        lines = _json_lines(suite, name)
        assert lines, f"{name} wrote no JSON log line:\n{suite.log_tail(name)}"
        assert {line["service"] for line in lines} == {name}
        assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    [letter] = [x for x in _json_lines(suite, "trainer") if x["message"].startswith("dead letter")]
    assert letter["event_id"] == POISON_ID and letter["level"] == "WARNING"
    assert any(x["message"].startswith("refused") for x in _json_lines(suite, "predictor"))
    assert any(x["logger"].startswith("uvicorn") for x in _json_lines(suite, "ingest")), "the server's lines are JSON too"
