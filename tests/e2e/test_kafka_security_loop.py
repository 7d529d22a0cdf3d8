"""The whole loop over SASL_SSL: ingest, trainer, predictor and web app each connect to a broker
that speaks only TLS with SCRAM users and enforces ACLs, each as its own Kafka user with only its
``kafka_access`` rights; events are learned, versions served, predictions recorded."""

from __future__ import annotations

import uuid
from pathlib import Path

from streamwise_core.adapters.kafka_access import SERVICE_ACCESS
from streamwise_core.adapters.settings import Topics
from streamwise_devstack.fraud import FraudStream
from streamwise_devstack.kafka_secured import SecuredKafkaBroker

from .conftest import APP_SPEC, start_suite
from .loop_client import LoopClient, wait_for


def test_every_service_works_as_its_own_kafka_user_over_tls(tmp_path: Path, redis_server) -> None:  # type: ignore[no-untyped-def]
    prefix = f"sec{uuid.uuid4().hex[:8]}"
    with SecuredKafkaBroker(tmp_path / "kafka", users=list(SERVICE_ACCESS)) as broker:
        for service in SERVICE_ACCESS:
            broker.grant(service, service, Topics.for_app(prefix, "fraud"))
        suite = start_suite(
            tmp_path, broker.bootstrap, True, redis_server.url, ("trainer", "ingest", "predictor", "webapp"),
            app_spec=APP_SPEC, topic_prefix=prefix, service_env={s: broker.env(s) for s in SERVICE_ACCESS},
        )
        try:
            client = LoopClient(suite.url("ingest"), suite.url("predictor"))
            events = FraudStream(seed=17, run_id=prefix).take(1_500)
            client.send(events, batch=500)
            served = client.wait_examples(len(events), timeout_s=180)
            assert served["meta"]["examples_seen"] == len(events)
            assert client.accuracy(FraudStream(seed=18).take(200)) > 0.5
            # The web app reads the events topic (its live view) as its own user.
            system = f"{suite.url('webapp')}/api/v1/system"
            wait_for(lambda: (r := client.ingest.get(system)).status_code == 200 and r.json()["kafka"]["connected"], 120,
                     "the web app reading its topics")
        finally:
            suite.stop()
