"""Any Kafka client can feed Streamwise and read what it writes (docs/record-formats.md).

The trainer and the predictor run on Apache Kafka 4 with three partitions a topic. Events and
labels go straight onto the topics, without ingest, from two clients that share no code with
the services: confluent-kafka (librdkafka, bundled with the wheel) and Debian's kcat (Debian's
librdkafka), the documentation's examples among them, run as written. The trainer learns every
one of them and dead-letters one undecodable record from each client; then both clients read
back the predictions of ``POST /v1/predict`` and ``/v1/predict/batch``, the model announcements
and the dead letters, and every record read is validated against the committed schema files.
Consumer groups of both protocols (classic, and Kafka 4's KIP-848) and kcat's read and commit.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamwise_core.adapters.settings import Topics
from streamwise_core.contracts.record_schemas import check_record, load_schema
from streamwise_devstack.fraud import FraudStream, GeneratedEvent
from streamwise_devstack.packages import ensure_debian_packages
from streamwise_devstack.suite import Suite

from .conftest import ROOT, start_suite
from .loop_client import API_KEY, wait_for

pytestmark = pytest.mark.e2e

DOC = ROOT / "docs" / "record-formats.md"
SCHEMAS = ROOT / "docs" / "schemas"
PARTITIONS = 3
DOC_EXAMPLES_LEARNED = 3
"""txn-0001 (labelled) and txn-0002 (label later) from kcat, txn-0003 (label later) from Python."""


@pytest.fixture(scope="module")
def kcat() -> str:
    return ensure_debian_packages({"kcat": "kcat"})["kcat"]


@pytest.fixture
def suite(tmp_path: Path, kafka_broker, redis_server, kcat: str) -> Iterator[Suite]:  # type: ignore[no-untyped-def]
    started = start_suite(
        tmp_path, kafka_broker.bootstrap, True, redis_server.url, ("trainer", "predictor"),
        extra_env={"STREAMWISE_KAFKA__PARTITIONS": str(PARTITIONS)},
    )
    yield started
    started.stop()


# --------------------------------------------------------------------------- the documentation's examples


def doc_example(name: str) -> str:
    """The code block after ``<!-- example: name -->`` in docs/record-formats.md."""
    match = re.search(rf"<!-- example: {re.escape(name)} -->\n```[a-z]+\n(.*?)```", DOC.read_text(), flags=re.S)
    assert match is not None, f"no example {name} in {DOC}"
    return match[1]


def run_example(name: str, kcat: str, **env: str) -> str:
    """Run example ``name`` as written (sh with bash, python with this interpreter); its stdout."""
    code = doc_example(name)
    argv = [sys.executable, "-c", code] if name.startswith("python") else ["bash", "-euo", "pipefail", "-c", code]
    path = f"{Path(kcat).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    done = subprocess.run(
        argv, env={**os.environ, "PATH": path, **env}, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, f"example {name} failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return done.stdout


def read_topic(reader: str, kcat: str, bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """Every record on ``topic`` now, as the documented reader ``reader`` prints it (kcat's ``-J`` envelope)."""
    out = run_example(reader, kcat, BOOTSTRAP=bootstrap, TOPIC=topic)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


READERS = ("kcat-read", "python-read")


# --------------------------------------------------------------------------- producing with each client


def event_value(g: GeneratedEvent, *, with_label: bool) -> bytes:
    """An event as a client of its own writes it: plain JSON, no Streamwise code."""
    record: dict[str, Any] = {
        "schema_version": 1, "kind": "event_received", "id": g.id, "features": g.features,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    if with_label:
        record["label"] = g.label
    return json.dumps(record).encode()


def label_value(g: GeneratedEvent, source: str) -> bytes:
    record = {"schema_version": 1, "kind": "label_received", "id": g.id, "label": g.label,
              "timestamp": datetime.now(UTC).isoformat(), "source": source}
    return json.dumps(record).encode()


def confluent_produce(bootstrap: str, records: list[tuple[str, str, bytes]]) -> dict[tuple[str, str], tuple[int, int]]:
    """Produce ``(topic, key, value)`` with confluent-kafka; ``(partition, offset)`` by ``(topic, key)``."""
    delivered: dict[tuple[str, str], tuple[int, int]] = {}
    errors: list[Any] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered[(msg.topic(), msg.key().decode())] = (msg.partition(), msg.offset())

    producer = Producer({
        "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "partitioner": "murmur2_random",
    })
    for topic, key, value in records:
        producer.produce(topic, key=key.encode(), value=value, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(60) == 0, "records still undelivered after 60 s"
    assert not errors, errors
    assert len(delivered) == len(records)
    return delivered


def kcat_produce(kcat: str, bootstrap: str, topic: str, records: list[tuple[str, bytes]]) -> None:
    """Produce ``(key, value)`` records with kcat, a line each: key, tab, value."""
    lines = b"".join(key.encode() + b"\t" + value + b"\n" for key, value in records)
    assert all(b"\n" not in value and b"\t" not in key.encode() for key, value in records)
    done = subprocess.run(
        [kcat, "-P", "-b", bootstrap, "-t", topic, "-K", "\\t", "-X", "partitioner=murmur2_random", "-X", "acks=all"],
        input=lines, capture_output=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def wait_for_topics(bootstrap: str, topics: Topics) -> None:
    """The trainer creates the topics: producing before would let the broker make them with one partition."""
    admin = AdminClient({"bootstrap.servers": bootstrap})

    def ready() -> bool:
        try:
            metadata = admin.list_topics(timeout=5).topics
        except KafkaException:
            return False
        return all(name in metadata and len(metadata[name].partitions) == PARTITIONS for name in topics.all())

    wait_for(ready, 120, "the trainer's topics with three partitions", interval_s=0.5)


def status(suite: Suite) -> dict[str, Any]:
    r = httpx.get(f"{suite.url('trainer')}/v1/status", headers=API_KEY, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


# --------------------------------------------------------------------------- reading back, checked against the schemas


def checked(envelopes: list[dict[str, Any]], schema_name: str) -> list[dict[str, Any]]:
    """The records of ``envelopes``, each validated against the committed schema file."""
    schema = load_schema(SCHEMAS, schema_name)
    records = []
    for envelope in envelopes:
        record = check_record(envelope["payload"].encode(), schema)
        records.append({**record, "_key": envelope["key"], "_partition": envelope["partition"], "_offset": envelope["offset"]})
    return records


def read_until(
    reader: str, kcat: str, bootstrap: str, topic: str, schema_name: str, done: Any, what: str,
) -> list[dict[str, Any]]:
    """Read ``topic`` again and again until ``done(records)``; the records of the last reading."""
    last: list[list[dict[str, Any]]] = [[]]

    def attempt() -> bool:
        last[0] = checked(read_topic(reader, kcat, bootstrap, topic), schema_name)
        return bool(done(last[0]))

    wait_for(attempt, 120, f"{what} read by {reader}", interval_s=0.5)
    return last[0]


def test_kcat_and_confluent_kafka_feed_the_trainer_and_read_its_records(suite: Suite, kcat: str) -> None:
    bootstrap = suite.env["STREAMWISE_KAFKA__BOOTSTRAP"]
    prefix = suite.env["STREAMWISE_TOPIC_PREFIX"]
    topics = Topics.for_app(prefix, "fraud")
    wait_for_topics(bootstrap, topics)
    event_schema, label_schema = load_schema(SCHEMAS, "event"), load_schema(SCHEMAS, "label")

    # The documentation's examples, as written.
    run_example("kcat-produce", kcat, BOOTSTRAP=bootstrap, PREFIX=prefix)
    run_example("python-produce", kcat, BOOTSTRAP=bootstrap, PREFIX=prefix)

    # Each client writes labelled events, and events whose labels the other client writes later.
    stream = FraudStream(seed=31, drift_at=10**9, run_id=f"any{uuid.uuid4().hex[:6]}")
    by_confluent, by_kcat = stream.take(100), stream.take(100)
    unlabelled_confluent, unlabelled_kcat = stream.take(40), stream.take(40)
    for value in [event_value(g, with_label=True) for g in by_confluent] + [label_value(g, "kcat") for g in unlabelled_confluent]:
        check_record(value, event_schema if b'"event_received"' in value else label_schema)  # the producers' side of the contract
    placed = confluent_produce(bootstrap, [
        *((topics.events, g.id, event_value(g, with_label=True)) for g in by_confluent),
        *((topics.events, g.id, event_value(g, with_label=False)) for g in unlabelled_confluent),
        *((topics.labels, g.id, label_value(g, "confluent-kafka")) for g in unlabelled_kcat),
        (topics.labels, "poison-confluent", b"\x00\xff{ not a label"),
    ])
    kcat_produce(kcat, bootstrap, topics.events, [
        *((g.id, event_value(g, with_label=True)) for g in by_kcat),
        *((g.id, event_value(g, with_label=False)) for g in unlabelled_kcat),
        ("poison-kcat", b"not JSON {"),
    ])
    kcat_produce(kcat, bootstrap, topics.labels, [(g.id, label_value(g, "kcat")) for g in unlabelled_confluent])

    # Both clients put a key where ingest (aiokafka, Kafka's murmur2 partitioner) would.
    partitions = list(range(PARTITIONS))
    where_ingest_would = DefaultPartitioner()
    for (topic, key), (partition, _) in placed.items():
        assert partition == where_ingest_would(key.encode(), partitions, partitions), (topic, key)
    kcat_keys = {g.id for g in by_kcat + unlabelled_kcat}
    written_events = read_topic("kcat-read", kcat, bootstrap, topics.events)
    for envelope in written_events:
        if envelope["key"] in kcat_keys:
            assert envelope["partition"] == where_ingest_would(envelope["key"].encode(), partitions, partitions), envelope
    assert kcat_keys <= {e["key"] for e in written_events}
    assert len(checked([e for e in written_events if not e["key"].startswith("poison-")], "event")) == len(written_events) - 1

    # The trainer learns every example, whichever client wrote its event and its label.
    expected = DOC_EXAMPLES_LEARNED + len(by_confluent + by_kcat + unlabelled_confluent + unlabelled_kcat)
    learned: dict[str, Any] = {}

    def learned_all() -> bool:
        learned.update(status(suite))
        return learned["examples_seen"] >= expected and learned["dead_letters"] >= 2

    try:
        wait_for(learned_all, 180, f"{expected} examples learned and 2 dead letters", interval_s=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nstatus: {learned}\ntrainer log:\n{suite.log_tail('trainer', 60)}") from None
    learned = status(suite)
    assert learned["examples_seen"] == expected, learned
    assert learned["dead_letters"] == 2, learned
    assert learned["waiting_labels"] == 0 and learned["waiting_features"] == 0, learned
    assert learned["duplicates_ignored"] == 0, learned

    # Predictions of a served version, read back with both clients.
    predictor = httpx.Client(base_url=suite.url("predictor"), timeout=30)

    def served_all() -> dict[str, Any] | None:
        r = predictor.get("/v1/model")
        return r.json() if r.status_code == 200 and r.json()["meta"]["examples_seen"] >= expected else None

    served = wait_for(served_all, 180, f"a version learned from {expected} examples served")
    asked = stream.take(3)
    single = predictor.post("/v1/predict", json={"id": f"{asked[0].id}-one", "features": asked[0].features})
    assert single.status_code == 200, single.text
    batch = predictor.post("/v1/predict/batch", json={"instances": [{"id": g.id, "features": g.features} for g in asked]})
    assert batch.status_code == 200, batch.text
    answers = {single.json()["id"]: single.json(), **{a["id"]: {**a, "version": batch.json()["version"]} for a in batch.json()["predictions"]}}
    assert len(answers) == 4

    def every_answer(records: list[dict[str, Any]]) -> bool:
        return answers.keys() <= {r["id"] for r in records}

    for reader in READERS:
        predictions = read_until(reader, kcat, bootstrap, topics.predictions, "prediction", every_answer, "the 4 predictions")
        for record in predictions:
            assert record["_key"] == record["id"], record
            assert record["model"] == "fraud-lr" and not record["shadow"], record
        for record in (r for r in predictions if r["id"] in answers):
            answer = answers[record["id"]]
            assert (record["prediction"], record["probabilities"], record["version"]) == (
                answer["prediction"], answer["probabilities"], answer["version"]), (record, answer)

    # The trainer's model announcements, up to the served version at least.
    for reader in READERS:
        models = read_until(
            reader, kcat, bootstrap, topics.models, "model_published",
            lambda rs: any(r["version"] >= served["meta"]["version"] for r in rs), f"v{served['meta']['version']} announced",
        )
        for record in models:
            assert record["_key"] == record["model"] == "fraud-lr" and record["app"] == "fraud", record
        assert max(r["examples_seen"] for r in models) >= served["meta"]["examples_seen"]

    # One dead letter for each client's undecodable record, with its position and key.
    kcat_poison = next(e for e in written_events if e["key"] == "poison-kcat")
    poisoned = {
        "poison-confluent": (topics.labels, *placed[(topics.labels, "poison-confluent")], "\x00\ufffd{ not a label"),
        "poison-kcat": (topics.events, kcat_poison["partition"], kcat_poison["offset"], "not JSON {"),
    }
    for reader in READERS:
        letters = read_until(
            reader, kcat, bootstrap, topics.dead_letters, "dead_letter",
            lambda rs: poisoned.keys() <= {r["key"] for r in rs}, "both dead letters",
        )
        assert len(letters) == 2, letters
        for letter in letters:
            topic, partition, offset, value = poisoned[letter["key"]]
            assert (letter["topic"], letter["partition"], letter["offset"], letter["value"]) == (topic, partition, offset, value), letter
            assert letter["_key"] == letter["key"] and letter["consumer"] == "trainer", letter
            assert letter["reason"].startswith("undecodable"), letter


# --------------------------------------------------------------------------- consumer groups on Kafka 4


def test_consumer_groups_of_both_protocols_and_kcats_read_and_commit(kafka_broker, kcat: str) -> None:  # type: ignore[no-untyped-def]
    """What docs/record-formats.md says of following a topic: confluent-kafka's consumer groups
    with the classic protocol and Kafka 4's ``consumer`` protocol (KIP-848), and kcat's balanced
    consumer (classic: Debian's librdkafka 2.0 predates KIP-848), each read every record once
    and commit, so the group's next member starts after them."""
    bootstrap = kafka_broker.bootstrap
    topic = f"any-client-groups-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)]).values():
        future.result(timeout=60)
    wait_for(lambda: len(admin.list_topics(topic, timeout=5).topics[topic].partitions) == PARTITIONS, 60, f"{topic} created")
    keys = [f"k-{n}" for n in range(30)]
    confluent_produce(bootstrap, [(topic, key, json.dumps({"n": n}).encode()) for n, key in enumerate(keys)])

    def group_read(protocol: str, group: str, want: int) -> list[str]:
        consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "group.protocol": protocol,
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
        })
        consumer.subscribe([topic])
        got: list[str] = []
        try:
            def more() -> bool:
                msg = consumer.poll(0.5)
                if msg is not None:
                    assert msg.error() is None, msg.error()
                    got.append(msg.key().decode())
                return len(got) >= want

            wait_for(more, 120, f"{want} records read by a {protocol} group", interval_s=0)
            if got:
                consumer.commit(asynchronous=False)
        finally:
            consumer.close()
        return got

    for protocol in ("classic", "consumer"):
        group = f"{topic}-{protocol}"
        assert sorted(group_read(protocol, group, len(keys))) == sorted(keys), protocol
        confluent_produce(bootstrap, [(topic, "k-after", b"{}")])
        assert group_read(protocol, group, 1) == ["k-after"], f"{protocol}: the group did not start from its committed offsets"
        keys.append("k-after")

    def kcat_group_read(group: str) -> list[str]:
        done = subprocess.run(
            # -X auto.offset.reset: "-o beginning" would start every member at the beginning, whatever was committed
            [kcat, "-b", bootstrap, "-G", group, "-X", "auto.offset.reset=earliest", "-e", "-q", "-f", "%k\\n", topic],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert sorted(kcat_group_read(f"{topic}-kcat")) == sorted(keys)
    assert kcat_group_read(f"{topic}-kcat") == [], "kcat's group did not commit"
