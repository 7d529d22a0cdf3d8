"""Faults under load: the broker, Redis and PostgreSQL die and come back while clients work.

Every test starts PRIVATE servers (the session-wide ones are shared and never killed),
runs the services as processes, records what clients saw, and checks the histories with
``histories.check``: acknowledged means stored and learned exactly once, and no client
sees the served version go back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.adapters.registry import Registry
from streamwise_core.adapters.settings import Topics
from streamwise_core.contracts.events import EventReceived
from streamwise_devstack import KafkaBroker, PostgresServer, RedisServer, free_port
from streamwise_devstack.fraud import FraudStream, holdout
from streamwise_devstack.suite import Suite, service_specs, suite_env

from .conftest import APP_SPEC, ROOT
from .histories import History, Observation, Request, TrainerView, check, first_occurrences, max_elapsed

pytestmark = pytest.mark.e2e
API_KEY = {"X-API-Key": "dev-api-key"}
APP, MODEL = "fraud", "fraud-lr"
PRODUCE_TIMEOUT_S = 3.0
ANSWER_GUARD_S = 10 * PRODUCE_TIMEOUT_S
"""How long a client waits for ingest: only a hang, not a slow machine, gets no answer within it."""
T = TypeVar("T")


# --- harness -------------------------------------------------------------------------------


def make_suite(
    tmp_path: Path, *, bootstrap: str, redis_url: str, database_url: str, names: tuple[str, ...],
    extra: dict[str, str] | None = None,
) -> Suite:
    ports = {name: free_port() for name in ("webapp", "ingest", "predictor", "trainer")}
    env = suite_env(
        bootstrap=bootstrap, idempotence=True, redis_url=redis_url, database_url=database_url,
        app_spec=APP_SPEC, topic_prefix=f"f{uuid.uuid4().hex[:8]}",
        extra={"STREAMWISE_POLL_INTERVAL_MS": "300", **(extra or {})},
    )
    return Suite(env, tmp_path / "logs", [s for s in service_specs(ports) if s.name in names], cwd=ROOT)


@contextmanager
def running(suite: Suite) -> Iterator[Suite]:
    try:
        suite.start()
        yield suite
    finally:
        suite.stop()


def topics(suite: Suite) -> Topics:
    return Topics.for_app(suite.env["STREAMWISE_TOPIC_PREFIX"], APP)


def alive(suite: Suite, name: str) -> bool:
    proc = suite.procs.get(name)
    return proc is not None and proc.poll() is None


async def eventually(check: Callable[[], Awaitable[T | None]], timeout_s: float, what: str, interval_s: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)


async def trainer_status(http: httpx.AsyncClient, suite: Suite) -> dict[str, Any] | None:
    try:
        r = await http.get(f"{suite.url('trainer')}/v1/status", timeout=10, headers={"X-API-Key": "dev-api-key"})
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


async def stored_ids(bootstrap: str, topic: str, timeout_s: float = 120) -> list[str]:
    """Every event id on ``topic``, in topic order (one partition), repeats included."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, 0)]  # one partition: the learning order is the topic order
        consumer.assign(tps)
        end = (await consumer.end_offsets(tps))[tps[0]]
        ids: list[str] = []
        deadline = time.monotonic() + timeout_s
        while await consumer.position(tps[0]) < end:
            assert time.monotonic() < deadline, f"could not read {topic} up to offset {end}"
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                ids.extend(EventReceived.from_bytes(m.value).id for m in batch if m.value is not None)
        return ids
    finally:
        await consumer.stop()


@dataclass
class Recorder:
    """What the clients did and saw, with times relative to ``t0``."""

    t0: float = field(default_factory=time.monotonic)
    requests: list[Request] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)
    predictions_ok: int = 0
    predictions_failed: list[str] = field(default_factory=list)
    prediction_times: list[tuple[float, float]] = field(default_factory=list)
    """(started, seconds to answer) of every prediction request answered."""

    def slowest_prediction(self, start: float = float("-inf"), end: float = float("inf")) -> float:
        return max((d for at, d in self.prediction_times if start <= at <= end), default=0.0)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def acked_since(self, t: float) -> int:
        return sum(len(r.ids) for r in self.requests if r.acknowledged and r.started >= t)

    def failed_since(self, t: float) -> int:
        return sum(1 for r in self.requests if not r.acknowledged and r.started >= t)


async def sender(
    name: str, ingest: str, stream: FraudStream, rec: Recorder, stop: asyncio.Event, *, batch: int, pace_s: float,
) -> None:
    """Send labelled events in small batches; retry a batch with the same ids until it is acknowledged."""
    async with httpx.AsyncClient(base_url=ingest, headers=API_KEY) as http:
        while not stop.is_set():
            events = stream.take(batch)
            ids = tuple(e.id for e in events)
            body = [{"id": e.id, "features": e.features, "label": e.label} for e in events]
            while True:
                started = rec.now()
                try:
                    r = await http.post("/v1/events", json=body, timeout=ANSWER_GUARD_S)
                    status: int | None = r.status_code
                    if status == 202:
                        assert r.json()["ids"] == list(ids), r.text
                except httpx.HTTPError:
                    status = None
                rec.requests.append(Request(name, ids, status, started, rec.now() - started))
                if status == 202:
                    break
                assert status in (503, None), f"ingest answered {status} to a valid batch"
                await asyncio.sleep(0.2)
            await asyncio.sleep(pace_s)


async def version_poller(name: str, predictor: str, rec: Recorder, stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(base_url=predictor) as http:
        while not stop.is_set():
            at = rec.now()
            try:
                r = await http.get("/v1/model", timeout=5)
                if r.status_code == 200:
                    rec.observations.append(Observation(name, at, r.json()["meta"]["version"]))
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)


async def predicting_client(name: str, predictor: str, rec: Recorder, stop: asyncio.Event, *, with_ids: bool = False) -> None:
    """Ask for predictions continuously; once a model is served, every answer must be a 200.

    With ids, the predictor also writes each prediction to Kafka (joinable with its label).
    """
    probes = holdout(50, seed=4, after_drift=False)
    async with httpx.AsyncClient(base_url=predictor) as http:
        k = 0
        while not stop.is_set():
            at = rec.now()
            e = probes[k % len(probes)]
            k += 1
            body: dict[str, Any] = {"features": e.features}
            if with_ids:
                body["id"] = f"{name}-q{k}"
            try:
                r = await http.post("/v1/predict", json=body, timeout=20)
                rec.prediction_times.append((at, rec.now() - at))
            except httpx.HTTPError as exc:
                rec.predictions_failed.append(f"{at:.2f}s {exc!r}")
                continue
            if r.status_code == 503 and not rec.predictions_ok:
                await asyncio.sleep(0.05)  # no model loaded yet: the suite is still starting
                continue
            if r.status_code != 200:
                rec.predictions_failed.append(f"{at:.2f}s {r.status_code} {r.text[:200]}")
                continue
            rec.predictions_ok += 1
            rec.observations.append(Observation(name, at, r.json()["version"]))
            await asyncio.sleep(0.02)


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def finish(tasks: list[asyncio.Task[None]], timeout_s: float, what: str) -> None:
    """Wait for tasks that were asked to stop; re-raise the first failure among them."""
    done, pending = await asyncio.wait(tasks, timeout=timeout_s)
    if pending:
        await cancel_all(list(pending))
        raise AssertionError(f"{what}: {len(pending)} task(s) did not finish within {timeout_s}s")
    for t in done:
        t.result()


def print_figures(title: str, figures: dict[str, object]) -> None:
    print(f"\n[{title}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


# --- 1. the broker dies while clients send ----------------------------------------------------


async def test_broker_killed_while_clients_send(tmp_path: Path) -> None:
    started_at = time.monotonic()
    with KafkaBroker(tmp_path / "kafka") as broker, RedisServer(tmp_path / "redis") as redis:
        suite = make_suite(
            tmp_path, bootstrap=broker.bootstrap, redis_url=redis.url,
            database_url=f"sqlite:///{tmp_path / 'registry.db'}", names=("trainer", "ingest", "predictor"),
            extra={"STREAMWISE_PRODUCE_TIMEOUT_S": str(PRODUCE_TIMEOUT_S), "STREAMWISE_BATCH_MAX": "200"},
        )
        with running(suite):
            rec = Recorder()
            stop_sending, stop_polling = asyncio.Event(), asyncio.Event()
            prefix = suite.env["STREAMWISE_TOPIC_PREFIX"]
            senders = [
                asyncio.create_task(sender(
                    f"c{k}", suite.url("ingest"), FraudStream(seed=k, run_id=f"{prefix}-c{k}"), rec, stop_sending,
                    batch=20, pace_s=0.05,
                ))
                for k in range(4)
            ]
            pollers = [asyncio.create_task(version_poller(f"p{k}", suite.url("predictor"), rec, stop_polling)) for k in range(2)]
            pollers.append(asyncio.create_task(predicting_client("q0", suite.url("predictor"), rec, stop_polling, with_ids=True)))
            restarted_trainer = 0
            try:
                async with httpx.AsyncClient() as http:
                    await eventually(
                        lambda: _async(rec.acked_since(0) >= 2000 and rec.observations), 120, "a first served version",
                    )

                    t_kill = rec.now()
                    broker.kill()
                    t_dead = rec.now()  # kill() returns once the broker is dead
                    # Keep sending while it is down: a dozen refused requests (and at least 4 s, longer
                    # than the produce timeout, so requests time out inside ingest, not only fail fast).
                    await eventually(
                        lambda: _async(rec.now() - t_kill >= 4 and rec.failed_since(t_kill) >= 12), 180,
                        "ingest to refuse requests while the broker is down",
                    )
                    trainer_died_while_down = not alive(suite, "trainer")
                    # Every request recorded so far was answered before the restart begins: one sent
                    # once the broker was dead cannot have been written, so must not be acknowledged.
                    t_restart = rec.now()
                    acked_while_down = [r for r in rec.requests if r.acknowledged and r.started >= t_dead]
                    assert acked_while_down == [], f"202 while the broker was down: {acked_while_down[:3]}"
                    await asyncio.to_thread(broker.restart)
                    t_up = rec.now()

                    t_acked = await eventually(
                        lambda: _async(rec.acked_since(t_up) >= 1000 and rec.now()), 180, "acks after the broker returned",
                    )
                    if not alive(suite, "trainer"):
                        restarted_trainer += 1
                        print(f"\ntrainer exited (rc={suite.procs['trainer'].returncode}); restarting it as Kubernetes would:\n"
                              + suite.log_tail("trainer", 30))
                        await asyncio.to_thread(suite.start, "trainer")
                    stop_sending.set()
                    await finish(senders, 120, "senders retrying until acknowledged")

                    ids_on_topic = await stored_ids(broker.bootstrap, topics(suite).events)
                    learned = first_occurrences(ids_on_topic)

                    async def caught_up() -> dict[str, Any] | None:
                        if not alive(suite, "trainer"):
                            raise AssertionError("the trainer exited:\n" + suite.log_tail("trainer"))
                        s = await trainer_status(http, suite)
                        return s if s and s["examples_seen"] >= len(learned) else None

                    status = await eventually(caught_up, 180, f"the trainer to learn all {len(learned)} stored events", 0.25)
                    # The served version catches up with the trainer (it may publish after the read).
                    await eventually(
                        lambda: _async(rec.observations and rec.observations[-1].version >= status["version"]), 120,
                        "the newest version served",
                    )
                    stop_polling.set()
                    await finish(pollers, 60, "pollers")
            finally:
                stop_sending.set()
                stop_polling.set()
                await cancel_all(senders + pollers)

        report = check(History(
            requests=rec.requests, learned=learned, stored=ids_on_topic, observations=rec.observations,
            trainer=TrainerView(status["examples_seen"], status["learned_digest"], status["duplicates_ignored"]),
        ))
        down_max = max_elapsed(rec.requests, t_kill, t_restart)
        figures = {
            **report.figures(),
            "max_answer_s_while_down": round(down_max, 2),
            "predictions_ok": rec.predictions_ok,
            "predictions_failed": len(rec.predictions_failed),
            "slowest_prediction_s_while_down": round(rec.slowest_prediction(t_kill, t_up), 2),
            "slowest_prediction_s_otherwise": round(max(rec.slowest_prediction(end=t_kill), rec.slowest_prediction(t_up)), 2),
            "broker_down_s": round(t_up - t_kill, 1),
            "recovered_after_s": round(t_acked - t_up, 1),
            "duplicates_ignored_by_trainer": status["duplicates_ignored"],
            "trainer_died_while_down": trainer_died_while_down,
            "trainer_restarted": restarted_trainer,
            "runtime_s": round(time.monotonic() - started_at, 1),
        }
        print_figures("broker killed", figures)
        assert report.ok, report.violations
        assert report.ids_never_acknowledged == 0
        # While the broker was down ingest answered 503 (the sender fails on any other status);
        # how fast is not asserted (bench/ measures speed), only that it answered at all.
        assert report.unanswered_requests == 0, (
            f"ingest must answer (503) rather than let clients time out: {report.unanswered_requests} request(s)"
            f" got no answer within {ANSWER_GUARD_S:g}s"
        )
        assert report.unavailable_requests >= 12
        # A trainer that died with the broker is restarted above (as Kubernetes would) and said so;
        # its checkpoint makes that invisible to the checks, which is the point of checkpoints.



# --- 2. Redis dies and comes back (AOF on) ----------------------------------------------------


async def served_meta(http: httpx.AsyncClient, suite: Suite) -> dict[str, Any] | None:
    try:
        r = await http.get(f"{suite.url('predictor')}/v1/model", timeout=10)
    except httpx.HTTPError:
        return None
    return r.json()["meta"] if r.status_code == 200 else None


async def registry_versions(database_url: str) -> list[int]:
    def read() -> list[int]:
        registry = Registry.from_url(database_url)
        try:
            return sorted(row.version for row in registry.versions(APP, MODEL, limit=1_000_000))
        finally:
            registry.close()

    return await asyncio.to_thread(read)


async def redis_versions(redis_url: str, suite: Suite) -> tuple[int | None, list[int]]:
    """The current pointer and the versions 1..current that Redis holds."""
    store = ModelStore.from_url(redis_url, suite.env["STREAMWISE_TOPIC_PREFIX"], APP)
    try:
        current = await store.current_version(MODEL)
        held = [v for v in range(1, (current or 0) + 1) if await store.load(MODEL, v) is not None]
        return current, held
    finally:
        await store.close()


async def subscribers(redis_url: str, suite: Suite) -> int:
    channel = ModelStore(None, suite.env["STREAMWISE_TOPIC_PREFIX"], APP).channel  # type: ignore[arg-type]
    client = aioredis.from_url(redis_url)
    try:
        [(_, count)] = await client.pubsub_numsub(channel)
        return int(count)
    finally:
        await client.aclose()


def newest_seen(rec: Recorder, since: float = float("-inf")) -> int:
    return max((o.version for o in rec.observations if o.at >= since), default=0)


async def drain(http: httpx.AsyncClient, suite: Suite, rec: Recorder, timeout_s: float = 180) -> dict[str, Any]:
    """Once the senders finished: wait until the trainer learned every acknowledged id, published
    and recorded a version of all it learned, and the predictor serves that version.

    That state is final without waiting for it to hold still: senders retry a batch with the same
    ids until it is acknowledged, so every id sent is acknowledged (and learned) by now, and what
    ingest may still write for a request that failed is a repeat, which the trainer ignores and
    which makes no new version (versions are only made of newly learned examples)."""
    acked = len({i for r in rec.requests if r.acknowledged for i in r.ids})
    sent = len({i for r in rec.requests for i in r.ids})
    assert acked == sent, f"drain before every sender finished: {sent - acked} id(s) never acknowledged"

    async def settled() -> dict[str, Any] | None:
        if not alive(suite, "trainer"):
            raise AssertionError("the trainer exited:\n" + suite.log_tail("trainer"))
        status = await trainer_status(http, suite)
        meta = await served_meta(http, suite)
        if status and meta and status["examples_seen"] >= acked and meta["examples_seen"] == status["examples_seen"] \
                and meta["version"] == status["version"] \
                and status.get("registry_backlog", 0) == 0 and status.get("publish_pending") is None:
            return status
        return None

    return await eventually(settled, timeout_s, f"{acked} examples learned, published and recorded", 0.25)


async def test_redis_restart(tmp_path: Path, kafka_broker) -> None:  # type: ignore[no-untyped-def]
    started_at = time.monotonic()
    database_url = f"sqlite:///{tmp_path / 'registry.db'}"
    with RedisServer(tmp_path / "redis", appendonly=True) as redis:
        suite = make_suite(
            tmp_path, bootstrap=kafka_broker.bootstrap, redis_url=redis.url, database_url=database_url,
            names=("trainer", "ingest", "predictor"),
        )
        with running(suite):
            rec = Recorder()
            stop_sending, stop_predicting = asyncio.Event(), asyncio.Event()
            prefix = suite.env["STREAMWISE_TOPIC_PREFIX"]
            senders = [asyncio.create_task(sender(
                "c0", suite.url("ingest"), FraudStream(seed=21, run_id=f"{prefix}-c0"), rec, stop_sending, batch=50, pace_s=0.05,
            ))]
            predictors = [asyncio.create_task(predicting_client(f"p{k}", suite.url("predictor"), rec, stop_predicting)) for k in range(2)]
            try:
                async with httpx.AsyncClient() as http:
                    await eventually(
                        lambda: _async(rec.acked_since(0) >= 1000 and len({o.version for o in rec.observations}) >= 2), 120,
                        "two served versions",
                    )
                    before = await trainer_status(http, suite)
                    assert before is not None
                    served_at_kill = newest_seen(rec)

                    t_kill = rec.now()
                    seen_at_kill = len(rec.observations)
                    redis.kill()  # returns once Redis is dead

                    async def learning_without_redis() -> dict[str, Any] | None:
                        s = await trainer_status(http, suite)
                        return s if (
                            s and rec.now() - t_kill >= 2 and s["publish_failures"] > before["publish_failures"]
                            and s["examples_seen"] >= before["examples_seen"] + 500
                            and len(rec.observations) > seen_at_kill + 10
                        ) else None

                    down = await eventually(
                        learning_without_redis, 120,
                        "the trainer to keep learning and retry publishing, the predictor to keep answering",
                    )
                    # Answered after the kill and before the restart (no await in between, so no client
                    # records anything meanwhile).
                    answered_while_down = rec.observations[seen_at_kill:]
                    served_while_down = max((o.version for o in answered_while_down), default=0)
                    await asyncio.to_thread(redis.restart)
                    t_up = rec.now()
                    served_at_restart = newest_seen(rec)
                    await eventually(
                        lambda: _async(newest_seen(rec) > served_at_restart + 1 and rec.now()), 120,
                        "the served version to advance again",
                    )
                    t_advanced = rec.now()
                    # The predictor's pub/sub listener subscribed again (polling alone would also advance).
                    resubscribed = await eventually(lambda: subscribers(redis.url, suite), 60, "the predictor to subscribe again")

                    stop_sending.set()
                    await finish(senders, 120, "sender")
                    final = await drain(http, suite, rec)
                    stop_predicting.set()
                    await finish(predictors, 60, "predicting clients")
                    ids_on_topic = await stored_ids(kafka_broker.bootstrap, topics(suite).events)
                    current, held = await redis_versions(redis.url, suite)
                    recorded = await registry_versions(database_url)
            finally:
                stop_sending.set()
                stop_predicting.set()
                await cancel_all(senders + predictors)

    learned = first_occurrences(ids_on_topic)
    report = check(History(
        requests=rec.requests, learned=learned, stored=ids_on_topic, observations=rec.observations,
        trainer=TrainerView(final["examples_seen"], final["learned_digest"], final["duplicates_ignored"]),
    ))
    print_figures("redis restarted", {
        "predictions_ok": rec.predictions_ok,
        "predictions_failed": len(rec.predictions_failed),
        "served_at_kill": served_at_kill,
        "served_while_down": served_while_down,
        "served_at_restart": served_at_restart,
        "final_version": current,
        "examples_learned_while_down": down["examples_seen"] - before["examples_seen"],
        "publish_failures": final["publish_failures"],
        "redis_down_s": round(t_up - t_kill, 1),
        "advanced_after_s": round(t_advanced - t_up, 1),
        "pubsub_subscribers_after": resubscribed,
        "slowest_prediction_s_while_down": round(rec.slowest_prediction(t_kill, t_up), 2),
        "registry_versions": len(recorded),
        "lost": len(report.lost),
        "learned_twice": len(report.learned_twice) + report.extra_applications,
        "runtime_s": round(time.monotonic() - started_at, 1),
    })
    assert rec.predictions_failed == [], rec.predictions_failed[:5]
    assert report.ok, report.violations
    # Nothing newer than what Redis held can be served without it. Once a publication failed, the
    # trainer's version is the one it retries: Redis holds no newer one (maybe that one, written
    # before the failure was seen).
    assert served_while_down <= down["version"], (
        f"v{served_while_down} served while Redis was down, newest published v{down['version']}"
    )
    assert current == final["version"]
    assert held == list(range(1, current + 1)), f"versions missing from Redis: {sorted(set(range(1, current + 1)) - set(held))}"
    assert recorded == list(range(1, current + 1)), (
        f"registry gaps {sorted(set(range(1, current + 1)) - set(recorded))}, extra {sorted(set(recorded) - set(range(1, current + 1)))}"
    )


# --- 3. PostgreSQL (the registry) dies and comes back -----------------------------------------


async def test_postgres_restart(tmp_path: Path, kafka_broker, redis_server) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL the registry while the trainer publishes, restart it: the backlog is flushed."""
    await registry_outage(tmp_path, kafka_broker, redis_server, "kill")


async def test_postgres_frozen(tmp_path: Path, kafka_broker, redis_server) -> None:  # type: ignore[no-untyped-def]
    """SIGSTOP the registry (a hung database: connections neither answer nor fail), then SIGCONT:
    learning and publishing to Redis must not wait for it."""
    await registry_outage(tmp_path, kafka_broker, redis_server, "freeze")


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def signal_server(pid: int | None, sig: signal.Signals) -> None:
    """Signal the postmaster this test started, then its backends (each in a session of its own)."""
    assert pid is not None
    os.kill(pid, sig)
    for child in children(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, sig)


async def registry_outage(tmp_path: Path, kafka_broker: Any, redis_server: Any, fault: str) -> None:
    started_at = time.monotonic()
    with PostgresServer(tmp_path / "postgres") as pg:
        suite = make_suite(
            tmp_path, bootstrap=kafka_broker.bootstrap, redis_url=redis_server.url, database_url=pg.url,
            names=("trainer", "ingest", "predictor"),
        )
        frozen: int | None = None
        with running(suite):
            rec = Recorder()
            stop_sending, stop_polling = asyncio.Event(), asyncio.Event()
            prefix = suite.env["STREAMWISE_TOPIC_PREFIX"]
            senders = [asyncio.create_task(sender(
                "c0", suite.url("ingest"), FraudStream(seed=31, run_id=f"{prefix}-c0"), rec, stop_sending, batch=50, pace_s=0.05,
            ))]
            pollers = [asyncio.create_task(version_poller("p0", suite.url("predictor"), rec, stop_polling))]
            try:
                async with httpx.AsyncClient() as http:
                    await eventually(
                        lambda: _async(rec.acked_since(0) >= 1000 and newest_seen(rec) >= 2), 120, "two served versions",
                    )
                    recorded_before = await registry_versions(pg.url)
                    assert recorded_before, "nothing recorded in the registry before the fault"

                    t_fault = rec.now()
                    if fault == "kill":
                        pg.kill()
                    else:
                        frozen = pg.pid
                        signal_server(frozen, signal.SIGSTOP)
                    served_at_fault = newest_seen(rec)

                    async def publishing_without_registry() -> dict[str, Any] | None:
                        s = await trainer_status(http, suite)
                        return s if (
                            s and rec.now() - t_fault >= 2 and s["registry_backlog"] >= 3
                            and newest_seen(rec) >= served_at_fault + 3
                        ) else None

                    # Three versions published and served whose registry rows are not written: publishing
                    # did not wait for the registry (however long the deadline, a frozen one never answers).
                    down = await eventually(publishing_without_registry, 120, "versions to advance while the registry is away")
                    served_while_down = newest_seen(rec)
                    if fault == "kill":
                        await asyncio.to_thread(pg.restart)
                    else:
                        signal_server(frozen, signal.SIGCONT)
                        frozen = None
                    t_up = rec.now()

                    async def flushed() -> dict[str, Any] | None:
                        s = await trainer_status(http, suite)
                        return s if s and s["registry_backlog"] == 0 else None

                    await eventually(flushed, 120, "the registry backlog to be flushed")
                    t_flushed = rec.now()
                    stop_sending.set()
                    await finish(senders, 120, "sender")
                    final = await drain(http, suite, rec)
                    stop_polling.set()
                    await finish(pollers, 60, "poller")
                    current, held = await redis_versions(redis_server.url, suite)
                    recorded = await registry_versions(pg.url)
            finally:
                if frozen is not None:
                    signal_server(frozen, signal.SIGCONT)
                stop_sending.set()
                stop_polling.set()
                await cancel_all(senders + pollers)

    report = check(History(requests=rec.requests, observations=rec.observations))
    print_figures(f"postgres {fault}", {
        "served_at_fault": served_at_fault,
        "served_while_down": served_while_down,
        "backlog_before_recovery": down["registry_backlog"],
        "registry_failures": final["registry_failures"],
        "final_version": current,
        "registry_versions": len(recorded),
        "postgres_away_s": round(t_up - t_fault, 1),
        "flushed_after_s": round(t_flushed - t_up, 1),
        "runtime_s": round(time.monotonic() - started_at, 1),
    })
    assert report.regressions == [], report.regressions
    assert current == final["version"]
    assert held == list(range(1, current + 1))
    assert recorded == list(range(1, current + 1)), (
        f"registry gaps {sorted(set(range(1, current + 1)) - set(recorded))}, extra {sorted(set(recorded) - set(range(1, current + 1)))}"
    )


async def _async(value: T) -> T:
    return value
