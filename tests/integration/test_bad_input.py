"""Bad input against ingest and the predictor, both served by uvicorn on real Kafka and Redis.

Every malformed request gets an exact 4xx whose body names the problem (``index``/``id``/
``loc`` where there are items), never echoes a secret, and stays small; and nothing of it
is written: after the corpus, the events, labels and predictions topics hold only the
valid sentinels sent at the end (and the one label this file expects ingest to accept).

Labels for events ingest never saw are accepted (202): ingest cannot know every event
(events and labels travel on different topics and labels may come first), so the trainer
keeps such a label waiting for its event, or evicts it when its join buffer is full.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition

from streamwise_core.adapters.kafka import ensure_topics
from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.adapters.settings import KafkaSettings, Settings, Topics
from streamwise_core.contracts.codec import ModelMeta, pack
from streamwise_core.contracts.events import EventReceived, LabelReceived, PredictionMade
from streamwise_core.contracts.schema import to_model_input
from streamwise_core.contracts.signing import Signer
from streamwise_core.domain.pipeline import build_model
from streamwise_devstack.fraud import FraudStream
from streamwise_ingest.app import create_app as create_ingest
from streamwise_ingest.settings import IngestSettings
from streamwise_predictor.app import create_app as create_predictor
from streamwise_predictor.settings import PredictorSettings
from tests.threaded_server import serve

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
APP_SPEC = ROOT / "examples" / "fraud" / "streamwise.toml"
API_KEY = f"it-key-{uuid.uuid4().hex}"
SIGNING_SECRET = f"it-signing-{uuid.uuid4().hex}"
SECRETS = (API_KEY, SIGNING_SECRET)
MAX_ERROR_BODY = 32 * 1024
"""An error body stays this small whatever the request was."""
ONE_MB = 1024 * 1024


# --------------------------------------------------------------------------- serving


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def kafka_settings(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap=bootstrap, idempotence=True, partitions=1)


def common(bootstrap: str, redis_url: str, prefix: str) -> dict[str, Any]:
    return {
        "kafka": kafka_settings(bootstrap),
        "redis_url": redis_url,
        "topic_prefix": prefix,
        "app_spec": APP_SPEC,
        "api_keys": API_KEY,
        "signing_keys": f"it:{SIGNING_SECRET}",
    }


async def publish_model(settings: Settings, version: int = 1, n: int = 300) -> ModelMeta:
    """A real model version, trained on the demo stream and signed, as the trainer publishes it."""
    spec = settings.spec
    model = build_model(spec)
    for g in FraudStream(seed=5, drift_at=10**9).take(n):
        model.learn_one(to_model_input(spec, g.features), g.label)
    meta = ModelMeta(app=spec.name, model=spec.model.name, version=version, task=spec.task.value, examples_seen=n)
    signed = pack(model, meta, Signer(settings.signing_key_map))
    store = ModelStore.from_url(settings.redis_url, settings.topic_prefix, spec.name)
    try:
        await store.publish(spec.model.name, version, signed)
    finally:
        await store.close()
    return ModelMeta.model_validate_json(signed.meta)


@dataclass
class Served:
    url: str
    topics: Topics
    bootstrap: str
    settings: Settings
    client: httpx.Client


@pytest.fixture(scope="module")
def ingest(kafka_broker: Any, redis_server: Any) -> Iterator[Served]:
    settings = IngestSettings(**common(kafka_broker.bootstrap, redis_server.url, f"bad{uuid.uuid4().hex[:10]}"))
    topics = settings.topics
    asyncio.run(ensure_topics(settings.kafka, [topics.events, topics.labels], timeout_s=30))
    with serve(create_ingest(settings), "ingest") as url, httpx.Client(base_url=url, timeout=60) as client:
        yield Served(url, topics, kafka_broker.bootstrap, settings, client)


@pytest.fixture(scope="module")
def predictor(kafka_broker: Any, redis_server: Any) -> Iterator[Served]:
    settings = PredictorSettings(
        **common(kafka_broker.bootstrap, redis_server.url, f"bad{uuid.uuid4().hex[:10]}"), poll_interval_ms=200
    )
    topics = settings.topics
    asyncio.run(ensure_topics(settings.kafka, [topics.predictions], timeout_s=30))
    asyncio.run(publish_model(settings))
    with serve(create_predictor(settings), "predictor") as url, httpx.Client(base_url=url, timeout=60) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, 30, "the predictor to load v1")
        yield Served(url, topics, kafka_broker.bootstrap, settings, client)


async def consume(bootstrap: str, topic: str, done: Callable[[list[ConsumerRecord]], bool], timeout: float = 30.0) -> list[ConsumerRecord]:
    """Every record of ``topic`` (one partition) from the beginning, until ``done`` says so."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while not done(records):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out reading {topic}: {len(records)} records so far")
            batches = await consumer.getmany(timeout_ms=200)
            records += [r for rs in batches.values() for r in rs]
    finally:
        await consumer.stop()
    return records


# --------------------------------------------------------------------------- the corpus


def features(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "amount": 123.45, "hour": 14, "distance_km": 3.5, "is_foreign": False, "card_present": True,
        "merchant": "grocery", "txn_last_hour": 1,
    }
    base.update(changes)
    return base


def without(name: str) -> dict[str, Any]:
    f = features()
    del f[name]
    return f


def event(event_id: str | None, **top: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"features": features(), "label": False}
    if event_id is not None:
        out["id"] = event_id
    out.update(top)
    return out


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def chunked(payload: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(payload), size):
        yield payload[start : start + size]


@dataclass
class Case:
    """One refused request and what its answer must say."""

    name: str
    path: str
    status: int
    body: Any = None
    """JSON-encodable value, or raw ``bytes``, or a callable returning an iterator (chunked)."""
    content_type: str | None = "application/json"
    where: list[tuple[int | None, str | None, list[Any]]] = field(default_factory=list)
    """``(index, id, loc)`` that must each be named in ``detail`` (422 only)."""
    msg: str = ""
    """A fragment of the message of the first matching problem (or of ``detail`` if a string)."""
    only: bool = False
    """``where`` lists every problem: nothing else may be reported."""
    headers: dict[str, str] = field(default_factory=dict)
    auth: bool = True


def raw(text: str) -> bytes:
    return text.encode()


def ingest_cases() -> list[Case]:
    e, lb = "/v1/events", "/v1/labels"
    huge_body = json.dumps([event(f"huge-{i}", features=features(merchant="x" * 1000)) for i in range(9000)]).encode()
    assert len(huge_body) > 8 * ONE_MB
    over_max = json.dumps([event(f"many-{i}") for i in range(10_001)]).encode()
    many_errors = [event(f"errs-{i}", features=features(extra=1)) for i in range(500)]
    return [
        # broken JSON and non-JSON bodies
        Case("broken-json", e, 422, raw('{"id": "bj-1", "features": {"amount": 1'), where=[(None, None, ["body"])], msg="invalid JSON"),
        Case("single-quotes", e, 422, raw("{'id': 'bj-2'}"), where=[(None, None, ["body"])], msg="invalid JSON"),
        Case("trailing-garbage", e, 422, raw(json.dumps(event("bj-3")) + " x"), where=[(None, None, ["body"])], msg="invalid JSON"),
        Case("ndjson-broken-line", e, 422, raw(json.dumps(event("nd-1")) + "\n{nope\n"), content_type="application/x-ndjson",
             where=[(None, None, ["body", 1])], msg="invalid JSON"),
        Case("empty-body", e, 422, b"", where=[(None, None, ["body"])], msg="empty body"),
        Case("whitespace-body", e, 422, b"  \n ", where=[(None, None, ["body"])], msg="empty body"),
        Case("empty-list", e, 422, [], where=[(None, None, ["body"])], msg="no items"),
        Case("empty-ndjson", e, 422, b"\n\n", content_type="application/x-ndjson", where=[(None, None, ["body"])], msg="no items"),
        Case("scalar-body", e, 422, 5, where=[(0, None, [])], msg="dictionary"),
        Case("null-body", e, 422, None, where=[(0, None, [])], msg="dictionary"),
        Case("invalid-utf8", e, 422, b'{"id": "u-1", "features": {"merchant": "\xff\xfe"}}', where=[(None, None, ["body"])],
             msg="not UTF-8 (byte 40)"),
        Case("deep-nesting", e, 422, raw(f'{{"id": "deep-1", "features": {{"amount": {nested(100)}}}}}'),
             where=[(None, None, ["body"])], msg="nested deeper than 32"),
        Case("abysmal-nesting", e, 422, raw(nested(200_000)), where=[(None, None, ["body"])], msg="nested too deeply"),
        # NaN and Infinity, as JSON constants and as strings
        Case("nan-constant", e, 422, raw('{"id": "nan-1", "features": {"amount": NaN}}'), where=[(None, None, ["body"])],
             msg="NaN is not valid JSON"),
        Case("infinity-constant", e, 422, raw('[{"id": "inf-1", "features": {"amount": Infinity}}]'),
             where=[(None, None, ["body"])], msg="Infinity is not valid JSON"),
        Case("minus-infinity-ndjson", e, 422, raw('{"id": "inf-2", "features": {"distance_km": -Infinity}}\n'),
             content_type="application/x-ndjson", where=[(None, None, ["body", 0])], msg="-Infinity is not valid JSON"),
        Case("nan-strings", e, 422, [event("nans-1", features=features(amount="NaN", distance_km="Infinity", hour="-Infinity"))],
             where=[(0, "nans-1", ["features", "amount"]), (0, "nans-1", ["features", "distance_km"]),
                    (0, "nans-1", ["features", "hour"])], msg="expected a number, got str", only=True),
        # wrong types
        Case("wrong-types", e, 422,
             [event("ok-1"), event("wt-1", features=features(amount="lots", hour=1.5, is_foreign=1, merchant=7, txn_last_hour=True))],
             where=[(1, "wt-1", ["features", "amount"]), (1, "wt-1", ["features", "hour"]), (1, "wt-1", ["features", "is_foreign"]),
                    (1, "wt-1", ["features", "merchant"]), (1, "wt-1", ["features", "txn_last_hour"])],
             msg="expected a number", only=True),
        Case("features-not-object", e, 422, [event("fn-1", features=[1, 2])], where=[(0, "fn-1", ["features"])], msg="dictionary"),
        Case("id-not-string", e, 422, [event(None, id=12345)], where=[(0, None, ["id"])], msg="string"),
        Case("id-bad-pattern", e, 422, [event("has space")], where=[(0, "has space", ["id"])], msg="pattern"),
        Case("id-too-long", e, 422, [event("a" * 5000)], where=[(0, "a" * 128 + "…", ["id"])], msg="pattern"),
        Case("label-wrong-type", e, 422, [event("lw-1", label="yes")], where=[(0, "lw-1", ["label"])], msg="true or false"),
        # missing and unknown features and fields
        Case("missing-feature", e, 422, [event("mf-1", features=without("hour"))], where=[(0, "mf-1", ["features", "hour"])],
             msg="missing required feature", only=True),
        Case("null-feature", e, 422, [event("nf-1", features=features(amount=None))], where=[(0, "nf-1", ["features", "amount"])],
             msg="missing required feature", only=True),
        Case("no-features", e, 422, [{"id": "nof-1"}], where=[(0, "nof-1", ["features"])], msg="Field required"),
        Case("unknown-feature", e, 422, [event("uf-1", features=features(colour="red"))],
             where=[(0, "uf-1", ["features", "colour"])], msg="unknown feature", only=True),
        Case("unknown-field", e, 422, [event("ux-1", labels=True)], where=[(0, "ux-1", ["labels"])], msg="Extra inputs"),
        Case("huge-unknown-feature-name", e, 422, [event("hf-1", features=features(**{"k" * ONE_MB: 1}))],
             where=[(0, "hf-1", ["features", "k" * 128])], msg="unknown feature"),
        # absurd timestamps
        Case("absurd-timestamps", e, 422, [
            event("ts-0", timestamp="0001-01-01T00:00:00Z"),
            event("ts-1", timestamp="9999-12-31T23:59:59Z"),
            event("ts-2", timestamp="2026-13-45T00:00:00Z"),
            event("ts-3", timestamp="2026-02-01T00:00:00"),
            event("ts-4", timestamp=10**20),
            event("ts-5", timestamp="yesterday"),
            event("ts-6", timestamp=True),
            event("ts-7", timestamp="1999-12-31T23:59:59+00:00"),
            event("ts-8", timestamp=1.7e9),
            event("ts-9", timestamp="1700000000"),
            event("ts-10", timestamp="2026-01-01T00:00:00+25:00"),
            event("ts-11", timestamp="2026-01-01"),
        ], where=[(i, f"ts-{i}", ["timestamp"]) for i in range(12)], only=True),
        # duplicates, numbers and strings too big
        Case("duplicate-ids", e, 422, [event("dup-1"), event("dup-2"), event("dup-1")], where=[(2, "dup-1", ["id"])],
             msg="duplicate id", only=True),
        Case("duplicate-ids-ndjson", e, 422, raw(json.dumps(event("dn-1")) + "\n" + json.dumps(event("dn-1")) + "\n"),
             content_type="application/x-ndjson", where=[(1, "dn-1", ["id"])], msg="duplicate id", only=True),
        Case("huge-int-float-feature", e, 422, [event("hi-1", features=features(amount=10**400))],
             where=[(0, "hi-1", ["features", "amount"])], msg="finite", only=True),
        Case("huge-int-int-feature", e, 422, [event("hi-2", features=features(hour=10**400))],
             where=[(0, "hi-2", ["features", "hour"])], msg="too large", only=True),
        Case("int-past-python-digits", e, 422, raw('{"id": "hi-3", "features": {"amount": 1' + "0" * 5000 + "}}"),
             where=[(None, None, ["body"])], msg="invalid JSON"),
        Case("megabyte-category", e, 422, [event("mb-1", features=features(merchant="m" * ONE_MB))],
             where=[(0, "mb-1", ["features", "merchant"])], msg="unknown value", only=True),
        Case("many-errors", e, 422, many_errors, where=[(i, f"errs-{i}", ["features", "extra"]) for i in range(100)]),
        # sizes
        Case("over-max-items", e, 422, over_max, where=[(None, None, ["body"])], msg="at most 10000 items"),
        Case("huge-declared", e, 413, huge_body, msg="body larger than 8388608 bytes"),
        Case("huge-chunked", e, 413, lambda: chunked(huge_body), msg="body larger than 8388608 bytes"),
        Case("huge-declared-no-key", e, 401, huge_body, msg="X-API-Key", auth=False),
        Case("huge-chunked-no-key", lb, 401, lambda: chunked(huge_body), msg="X-API-Key", auth=False),
        # media types and keys
        Case("text-plain", e, 415, raw(json.dumps(event("ct-1"))), content_type="text/plain", msg="unsupported Content-Type"),
        Case("form", e, 415, raw("id=ct-2"), content_type="application/x-www-form-urlencoded", msg="unsupported Content-Type"),
        Case("xml", lb, 415, raw("<label id='ct-3'/>"), content_type="application/xml", msg="unsupported Content-Type"),
        Case("multipart", e, 415, raw("--b\r\n\r\n--b--"), content_type="multipart/form-data; boundary=b", msg="unsupported"),
        Case("no-key", e, 401, [event("nk-1")], msg="X-API-Key", auth=False),
        Case("wrong-key", lb, 401, [{"id": "nk-2", "label": True}], msg="X-API-Key", auth=False,
             headers={"X-API-Key": API_KEY[:-1]}),
        Case("key-with-suffix", e, 401, [event("nk-3")], msg="X-API-Key", auth=False, headers={"X-API-Key": API_KEY + "x"}),
        # labels
        Case("label-types", lb, 422, [
            {"id": "lt-0", "label": "yes"}, {"id": "lt-1", "label": 1}, {"id": "lt-2", "label": None},
            {"id": "lt-3", "label": {"v": True}}, {"id": "lt-4", "label": [True]}, {"id": "lt-5", "label": 0.0},
        ], where=[(i, f"lt-{i}", ["label"]) for i in range(6)], msg="true or false", only=True),
        Case("label-no-id", lb, 422, [{"label": True}], where=[(0, None, ["id"])], msg="Field required", only=True),
        Case("label-no-label", lb, 422, [{"id": "ln-1"}], where=[(0, "ln-1", ["label"])], msg="Field required", only=True),
        Case("label-extra-field", lb, 422, [{"id": "le-1", "label": True, "features": {}}], where=[(0, "le-1", ["features"])]),
        Case("label-duplicates", lb, 422, [{"id": "ld-1", "label": True}, {"id": "ld-1", "label": False}],
             where=[(1, "ld-1", ["id"])], msg="duplicate id", only=True),
        Case("label-bad-timestamp", lb, 422, [{"id": "lts-1", "label": True, "timestamp": "3000-01-01T00:00:00Z"}],
             where=[(0, "lts-1", ["timestamp"])], msg="outside", only=True),
        Case("label-nan", lb, 422, raw('{"id": "lnan-1", "label": NaN}'), where=[(None, None, ["body"])], msg="NaN"),
        Case("label-broken-json", lb, 422, raw('[{"id": "lb-1", "label": tru}]'), where=[(None, None, ["body"])], msg="invalid JSON"),
    ]


def predictor_cases() -> list[Case]:
    one, batch = "/v1/predict", "/v1/predict/batch"
    huge = json.dumps({"instances": [{"id": f"big-{i}", "features": features(merchant="x" * 1000)} for i in range(2200)]}).encode()
    assert len(huge) > 2 * ONE_MB

    def inst(instance_id: str | None, **changes: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"features": features(**changes)}
        if instance_id is not None:
            out["id"] = instance_id
        return out

    return [
        Case("broken-json", one, 422, raw('{"id": "p-bj", "features": {'), where=[(None, None, ["body"])], msg="invalid JSON"),
        Case("broken-json-batch", batch, 422, raw('{"instances": [}'), where=[(None, None, ["body"])], msg="invalid JSON"),
        Case("empty-body", one, 422, b"", where=[(None, None, ["body"])], msg="empty body"),
        Case("scalar-body", one, 422, 5, where=[(0, None, [])], msg="dictionary"),
        Case("list-body", batch, 422, [inst("p-l1")], where=[(None, None, ["body"])], msg="'instances'"),
        Case("invalid-utf8", one, 422, b'{"id": "p-u", "features": {"merchant": "\xc3\x28"}}', where=[(None, None, ["body"])],
             msg="not UTF-8"),
        Case("deep-nesting", one, 422, raw(f'{{"id": "p-deep", "features": {{"amount": {nested(64)}}}}}'),
             where=[(None, None, ["body"])], msg="nested deeper"),
        Case("abysmal-nesting", batch, 422, raw('{"instances": ' + nested(100_000) + "}"), where=[(None, None, ["body"])],
             msg="nested too deeply"),
        Case("nan-constant", one, 422, raw('{"id": "p-nan", "features": {"amount": NaN}}'), where=[(None, None, ["body"])],
             msg="NaN is not valid JSON"),
        Case("infinity-constant", batch, 422, raw('{"instances": [{"id": "p-inf", "features": {"amount": -Infinity}}]}'),
             where=[(None, None, ["body"])], msg="-Infinity is not valid JSON"),
        Case("nan-strings", one, 422, inst("p-nans", amount="NaN", distance_km="Infinity"),
             where=[(0, "p-nans", ["features", "amount"]), (0, "p-nans", ["features", "distance_km"])], msg="got str", only=True),
        Case("wrong-types", batch, 422, {"instances": [inst("p-ok"), inst("p-wt", hour="3", card_present="yes")]},
             where=[(1, "p-wt", ["features", "card_present"]), (1, "p-wt", ["features", "hour"])], only=True),
        Case("missing-feature", one, 422, {"id": "p-mf", "features": without("merchant")},
             where=[(0, "p-mf", ["features", "merchant"])], msg="missing required feature", only=True),
        Case("unknown-feature", batch, 422, {"instances": [inst("p-u0"), inst("p-u1", colour="red")]},
             where=[(1, "p-u1", ["features", "colour"])], msg="unknown feature", only=True),
        Case("label-is-not-an-input", one, 422, {**inst("p-lab"), "label": True}, where=[(0, "p-lab", ["label"])], msg="Extra inputs"),
        Case("no-features", one, 422, {"id": "p-nof"}, where=[(0, "p-nof", ["features"])], msg="Field required", only=True),
        Case("bad-id", batch, 422, {"instances": [inst("p ok")]}, where=[(0, "p ok", ["id"])], msg="pattern", only=True),
        Case("duplicate-ids", batch, 422, {"instances": [inst("p-d1"), inst("p-d2"), inst("p-d1")]},
             where=[(2, "p-d1", ["id"])], msg="duplicate id", only=True),
        Case("no-instances", batch, 422, {"instances": []}, where=[(None, None, ["body", "instances"])], msg="non-empty"),
        Case("instances-not-list", batch, 422, {"instances": {"id": "p-nl"}}, where=[(None, None, ["body", "instances"])]),
        Case("batch-extra-field", batch, 422, {"instances": [inst("p-x1")], "model": "other"},
             where=[(None, None, ["body", "model"])], msg="unknown field", only=True),
        Case("over-max-batch", batch, 422, {"instances": [inst(f"p-m{i}") for i in range(1001)]},
             where=[(None, None, ["body", "instances"])], msg="at most 1000 instances", only=True),
        Case("huge-int-float", one, 422, inst("p-hi1", amount=10**400), where=[(0, "p-hi1", ["features", "amount"])],
             msg="finite", only=True),
        Case("huge-int-int", batch, 422, {"instances": [inst("p-hi2", txn_last_hour=-(10**400))]},
             where=[(0, "p-hi2", ["features", "txn_last_hour"])], msg="too large", only=True),
        Case("megabyte-category", one, 422, inst("p-mb", merchant="m" * ONE_MB), where=[(0, "p-mb", ["features", "merchant"])],
             msg="unknown value", only=True),
        Case("huge-declared", batch, 413, huge, msg="body larger than 2097152 bytes"),
        Case("huge-chunked", batch, 413, lambda: chunked(huge), msg="body larger than 2097152 bytes"),
        Case("text-plain", one, 415, raw(json.dumps(inst("p-ct"))), content_type="text/plain", msg="unsupported Content-Type"),
        Case("form", batch, 415, raw("instances=1"), content_type="application/x-www-form-urlencoded", msg="unsupported"),
    ]


def send(client: httpx.Client, case: Case) -> httpx.Response:
    headers = dict(case.headers)
    if case.auth:
        headers["X-API-Key"] = API_KEY
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    if callable(case.body):
        content: Any = case.body()
    elif isinstance(case.body, bytes):
        content = case.body
    else:
        content = json.dumps(case.body).encode()
    return client.post(case.path, content=content, headers=headers)


def check_refused(response: httpx.Response, case: Case) -> None:
    assert response.status_code == case.status, (case.name, response.status_code, response.text[:2000])
    assert len(response.content) <= MAX_ERROR_BODY, (case.name, len(response.content))
    for secret in SECRETS:
        assert secret not in response.text, case.name
    assert response.headers["content-type"].startswith("application/json"), case.name
    body = response.json()
    detail = body["detail"]
    if case.status != 422:
        assert isinstance(detail, str) and case.msg in detail, (case.name, detail)
        return
    assert isinstance(detail, list) and detail, (case.name, body)
    assert body["errors"] >= len(detail) and len(detail) <= 100, case.name
    named = [(d.get("index"), d.get("id"), d["loc"]) for d in detail]
    for expected in case.where:
        assert expected in named, (case.name, expected, named[:10])
    if case.only:
        assert sorted(map(repr, named)) == sorted(map(repr, case.where)), (case.name, named)
    if case.msg:
        first = next(d for d in detail if (d.get("index"), d.get("id"), d["loc"]) in case.where)
        assert case.msg in first["msg"], (case.name, first)


INGEST_CASES = ingest_cases()
PREDICTOR_CASES = predictor_cases()


@pytest.mark.parametrize("case", INGEST_CASES, ids=[c.name for c in INGEST_CASES])
def test_ingest_refuses(ingest: Served, case: Case) -> None:
    check_refused(send(ingest.client, case), case)


@pytest.mark.parametrize("case", PREDICTOR_CASES, ids=[c.name for c in PREDICTOR_CASES])
def test_predictor_refuses(predictor: Served, case: Case) -> None:
    check_refused(send(predictor.client, case), case)


def test_a_label_for_an_unknown_event_is_accepted(ingest: Served) -> None:
    """Ingest cannot know every event; the trainer holds the label until its event comes."""
    r = ingest.client.post("/v1/labels", json={"id": "never-seen-event", "label": True}, headers={"X-API-Key": API_KEY})
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 1, "ids": ["never-seen-event"]}
    assert API_KEY not in r.text


def test_the_connection_still_serves_after_refusals(ingest: Served, predictor: Served) -> None:
    """A refused upload (413 mid-body included) leaves the server answering normally."""
    for served in (ingest, predictor):
        assert served.client.get("/healthz").json() == {"status": "ok"}


async def test_nothing_refused_was_written(ingest: Served, predictor: Served) -> None:
    """Runs after the corpus: the topics hold only what this file expects to be accepted."""
    key = {"X-API-Key": API_KEY}
    sentinel = f"sentinel-{uuid.uuid4().hex[:8]}"
    r = ingest.client.post("/v1/events", json=event(sentinel), headers=key)
    assert r.status_code == 202, r.text
    r = ingest.client.post("/v1/labels", json={"id": sentinel, "label": True}, headers=key)
    assert r.status_code == 202, r.text
    r = predictor.client.post("/v1/predict", json={"id": sentinel, "features": features()})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1 and r.json()["id"] == sentinel

    def has(rs: list[ConsumerRecord]) -> bool:
        return any(x.key == sentinel.encode() for x in rs)

    events = await consume(ingest.bootstrap, ingest.topics.events, has)
    assert [EventReceived.from_bytes(x.value).id for x in events] == [sentinel]

    labels = await consume(ingest.bootstrap, ingest.topics.labels, has)
    label_ids = [LabelReceived.from_bytes(x.value).id for x in labels]
    assert label_ids in ([sentinel], ["never-seen-event", sentinel]), label_ids

    predictions = await consume(predictor.bootstrap, predictor.topics.predictions, has)
    assert [PredictionMade.from_bytes(x.value).id for x in predictions] == [sentinel]


def test_a_model_answer_that_is_not_finite_is_refused_not_a_500() -> None:
    """JSON has no NaN: an instance the model cannot score (extreme values) gets a 422 naming it."""
    from streamwise_core.contracts.appspec import load_app_spec
    from streamwise_core.contracts.errors import ValidationFailed
    from streamwise_predictor.holder import ServedModel
    from streamwise_predictor.predictions import Instance
    from tests.model_helpers import predict_instances

    class Overflowing:
        def predict_proba_one(self, x: dict[str, Any]) -> dict[bool, float]:
            nan = float("nan")
            return {True: nan, False: nan} if x["amount"] > 1e300 else {True: 0.25, False: 0.75}

    spec = load_app_spec(APP_SPEC)
    meta = ModelMeta(app=spec.name, model=spec.model.name, version=1, task=spec.task.value, examples_seen=0)
    served = ServedModel(meta, Overflowing())
    ok = predict_instances(spec, served, [Instance(id="fine", features=features())])
    assert ok[0].probabilities == {"true": 0.25, "false": 0.75}
    with pytest.raises(ValidationFailed) as info:
        predict_instances(spec, served, [Instance(id="fine", features=features()), Instance(id="x", features=features(amount=1e308))])
    assert [(e["index"], e["id"], e["loc"]) for e in info.value.errors] == [(1, "x", ["features"])]
