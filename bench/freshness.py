"""Freshness: from ingest's 202 for an event to the predictor serving a version that learned it.

Labelled events go through ingest (``POST /v1/events``, JSON lists of ``--batch`` events) at a
fixed rate, open loop: each request leaves at its scheduled time whether or not earlier ones
were answered. Every event's 202 time is kept. Ingest's answer holds ids, not Kafka offsets,
so after the run the events topic is read back to map each id (the record key) to its
partition and offset. The trainer writes the offsets it has learned up to into each version's
meta; the bench follows the versions the way the predictor does (Redis pub/sub) and, after
each announcement, polls the predictor's ``GET /v1/model`` every few ms until the new version
is served, so it knows when the predictor started serving each version and up to which
offsets that version learned. An event's freshness is the first such time covering its
offset minus its 202 time.

Baseline, measured in the same run: 202 → the trainer's next publication, whatever it
learned. A trainer that publishes every ``--publish-every-n`` examples or
``--publish-every-ms`` makes every event wait for the next publication at least; that wait
is the floor this design allows, and the ratio says how far above it the pipeline runs
(consuming, learning, signing and storing, the predictor's swap, and any backlog). Beside it,
for scale: the raw Kafka hop, measured right after on the same broker with the same records,
rate and batching, from handing a record to a producer configured like ingest's (acks=all,
idempotent, linger 2 ms; each batch sent, then awaited, as ingest's Kafka sink does) to an
aiokafka consumer in this process receiving it.

    .venv/bin/python bench/freshness.py                    # 5,000 ev/s for 20 s
    .venv/bin/python bench/freshness.py --rate 1000 --rate 5000
    .venv/bin/python bench/freshness.py --smoke            # 500 ev/s for 3 s, for CI
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import os
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import _common as c
import aiohttp
import typer
from _common import console
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from streamwise_core.adapters.kafka import make_producer
from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.adapters.settings import KafkaSettings
from streamwise_core.contracts.codec import ModelMeta
from streamwise_predictor.settings import PredictorSettings
from streamwise_trainer.settings import TrainerSettings

MODEL = "fraud-lr"
TARGET_P99_MS = 250.0
TARGET_RATE = 5000.0


# ----------------------------------------------------------------------------------- Kafka


def _consumer(bootstrap: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest")


async def _assign_from_start(consumer: AIOKafkaConsumer, topic: str, partitions: int) -> list[TopicPartition]:
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return tps


async def read_offsets(bootstrap: str, topic: str, partitions: int) -> dict[bytes, tuple[int, int]]:
    """Record key (the event id) → (partition, offset), for the whole topic as it is now."""
    consumer = _consumer(bootstrap)
    await consumer.start()
    try:
        tps = await _assign_from_start(consumer, topic, partitions)
        end = await consumer.end_offsets(tps)
        out: dict[bytes, tuple[int, int]] = {}
        while any([await consumer.position(tp) < end[tp] for tp in tps]):
            for tp, messages in (await consumer.getmany(timeout_ms=1000, max_records=20_000)).items():
                for m in messages:
                    out[m.key] = (tp.partition, m.offset)
        return out
    finally:
        await consumer.stop()


async def kafka_hop(bootstrap: str, topic: str, partitions: int, batches: list[list[tuple[bytes, bytes]]], per_s: float) -> dict[str, Any]:
    """Raw Kafka transport at the rate and batching of the pipeline run: from handing a record
    to a producer configured like ingest's (each batch sent, then awaited, as ingest's Kafka
    sink does) to an aiokafka consumer in this process receiving it."""
    producer = make_producer(KafkaSettings(bootstrap=bootstrap), client_id="bench-hop")
    consumer = _consumer(bootstrap)
    await producer.start()
    await consumer.start()
    received: dict[bytes, float] = {}
    try:
        await _assign_from_start(consumer, topic, partitions)

        async def consume() -> None:
            while True:
                for messages in (await consumer.getmany(timeout_ms=100)).values():
                    now = time.monotonic()
                    for m in messages:
                        received[m.key] = now

        reader = asyncio.create_task(consume())

        async def send(k: int) -> bool:
            futures = [await producer.send(topic, value, key=key) for key, value in batches[k]]
            await asyncio.gather(*futures)
            return True

        run = await c.open_loop(send, len(batches), per_s)
        total = sum(map(len, batches))
        deadline = time.monotonic() + 30
        while len(received) < total and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    finally:
        await consumer.stop()
        await producer.stop()
    hop = [(received[key] - run.sent[k]) * 1000 if key in received else math.inf
           for k, batch in enumerate(batches) for key, _ in batch]
    return {"hop_ms": c.summary(hop), "cdf": c.cdf_points(hop), "events": total, "received": len(received),
            "ack_ms": c.summary([(d - s) * 1000 for d, s in zip(run.done, run.sent, strict=True)]),
            "achieved_eps": total / (max(run.done) - run.sent[0]), "late_ms": c.summary(run.late_ms)}


# ----------------------------------------------------------------------------------- pipeline


def first_cover(history: list[tuple[float, dict[str, int]]], key: str) -> tuple[list[float], list[int]]:
    """Times and (running max) offsets of ``key`` in a time-ordered version history, for bisect."""
    times, offsets, top = [], [], -1
    for t, offs in history:
        top = max(top, offs.get(key, -1))
        times.append(t)
        offsets.append(top)
    return times, offsets


def covered_at(index: tuple[list[float], list[int]], offset: int) -> float:
    """When the first version whose offset reaches ``offset`` appears; inf if none."""
    times, offsets = index
    k = bisect.bisect_left(offsets, offset)
    return times[k] if k < len(times) else math.inf


def run_queue_s(pid: int) -> float:
    """Seconds the main thread of ``pid`` has spent runnable but waiting for a CPU (Linux
    schedstat; nan elsewhere): what tells a starved process from an idle one."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return math.nan


async def served_meta(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    """The predictor's served version's meta, None before it serves one."""
    async with session.get(f"{url}/v1/model") as r:
        return (await r.json())["meta"] if r.status == 200 else None


async def trainer_status(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/v1/status", headers=c.API_HEADERS) as r:
        r.raise_for_status()
        return await r.json()  # type: ignore[no-any-return]


async def pipeline(
    svc: c.Services, infra: c.Infra, bodies: list[bytes], ids: list[list[bytes]], per_s: float, *,
    poll_s: float, drain_timeout_s: float, progress: Any,
) -> dict[str, Any]:
    ingest, predictor, trainer = svc.url("ingest"), svc.url("predictor"), svc.url("trainer")
    store = ModelStore.from_url(infra.redis.url, svc.prefix, "fraud")
    headers = {**c.API_HEADERS, "content-type": "application/json"}
    total = sum(map(len, ids))
    announced: dict[int, float] = {}
    served: list[tuple[float, int, dict[str, int]]] = []
    samples: list[dict[str, Any]] = []
    stop, news = asyncio.Event(), asyncio.Event()
    # aiohttp, not httpx: at 100 requests/s httpx cost this process ~0.4 of a core (4 ms of CPU
    # per request, measured), which the services under test then did not get.
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), connector=aiohttp.TCPConnector(limit=64)) as client,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as probe,
    ):
        warm = c.labelled_events(200, seed=99, run=f"warm-{svc.prefix}")
        async with client.post(f"{ingest}/v1/events", data=c.json_body(warm), headers=headers) as r:
            r.raise_for_status()
        first = await c.wait_until(lambda: served_meta(probe, predictor), 90, what="a first version served")
        base_seen = (await trainer_status(probe, trainer))["examples_seen"]

        async def listen() -> None:
            while True:
                async for note in store.announcements():
                    if note.get("model") == MODEL:
                        announced.setdefault(note["version"], time.monotonic())
                        news.set()

        async def watch() -> None:
            current = first["version"]
            while not stop.is_set():
                news.clear()
                try:
                    meta = await served_meta(probe, predictor)
                except aiohttp.ClientError:
                    meta = None
                now = time.monotonic()
                if meta and meta["version"] != current:
                    current = meta["version"]
                    served.append((now, current, meta.get("offsets") or {}))
                if announced and max(announced) > current:
                    await asyncio.sleep(poll_s)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(news.wait(), 0.1)

        async def sample(task: Any) -> None:
            while not stop.is_set():
                try:
                    st = await trainer_status(probe, trainer)
                    samples.append({"t": time.monotonic(), "examples_seen": st["examples_seen"] - base_seen, "version": st["version"]})
                    progress.update(task, completed=min(total, samples[-1]["examples_seen"]), description=(
                        f"{per_s:,.0f} ev/s · learned {samples[-1]['examples_seen']:,}/{total:,} · "
                        f"serving v{served[-1][1] if served else first['version']}"))
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.5)

        task = progress.add_task(f"{per_s:,.0f} ev/s", total=total)
        helpers = [asyncio.create_task(listen()), asyncio.create_task(watch()), asyncio.create_task(sample(task))]
        await asyncio.sleep(0.3)  # subscribed before the first measured event

        async def send(k: int) -> bool:
            try:
                async with client.post(f"{ingest}/v1/events", data=bodies[k], headers=headers) as r:
                    await r.read()
                    return r.status == 202
            except aiohttp.ClientError:
                return False

        loadavg = [round(x, 2) for x in os.getloadavg()]
        names = ("ingest", "trainer", "predictor")
        backing = {"kafka": infra.broker._process, "redis": infra.redis._process}  # noqa: SLF001 - pids to read CPU from

        def cpu_now() -> dict[str, float]:
            own = {n: c.cpu_s(svc.pid(n)) for n in names} | {"bench": time.process_time()}
            return own | {n: c.cpu_s(p.pid) for n, p in backing.items() if p is not None and p.pid is not None}

        cpu_start, waits_start = cpu_now(), run_queue_s(svc.pid("trainer"))
        t0 = time.monotonic()
        run = await c.open_loop(send, len(bodies), per_s / max(len(b) for b in ids))
        t_input_end = max(run.done)
        cpu_end, waits_end, t_cpu_end = cpu_now(), run_queue_s(svc.pid("trainer")), time.monotonic()
        cpu_share = {n: (cpu_end[n] - cpu_start[n]) / (time.monotonic() - t0) for n in cpu_start}
        where = await read_offsets(infra.bootstrap, svc.topics.events, infra.partitions)
        last = {p: max(o for q, o in where.values() if q == p) for p in {q for q, _ in where.values()}}
        events_key = f"{svc.topics.events}:{{}}"

        async def drained() -> bool:
            offs = served[-1][2] if served else {}
            return all(offs.get(events_key.format(p), -1) >= o for p, o in last.items())

        try:
            await c.wait_until(drained, drain_timeout_s, what="the last event served")
            t_drained = time.monotonic()
        except TimeoutError:
            t_drained = math.nan
        stop.set()
        await asyncio.sleep(0.6)
        for h in helpers:
            h.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        progress.update(task, completed=samples[-1]["examples_seen"] if samples else 0)

        published: list[tuple[float, dict[str, int]]] = []
        for version, t in sorted(announced.items()):
            signed = await store.load(MODEL, version)
            if signed is not None:
                published.append((t, ModelMeta.model_validate_json(signed.meta).offsets or {}))
    await store.close()

    served_index = {p: first_cover([(t, o) for t, _, o in served], events_key.format(p)) for p in last}
    published_index = {p: first_cover(published, events_key.format(p)) for p in last}
    publications = sorted(announced.values())
    fresh, to_publish, floor, acked_at = [], [], [], []
    missing = 0
    for k, batch in enumerate(ids):
        if not run.ok[k]:
            continue
        for key in batch:
            if key not in where:
                missing += 1
                continue
            p, off = where[key]
            fresh.append((covered_at(served_index[p], off) - run.done[k]) * 1000)
            to_publish.append((covered_at(published_index[p], off) - run.done[k]) * 1000)
            after = bisect.bisect_right(publications, run.done[k])
            floor.append((publications[after] - run.done[k]) * 1000 if after < len(publications) else math.inf)
            acked_at.append(run.done[k])
    swap = [(t - announced[v]) * 1000 for t, v, _ in served if v in announced]
    acked = sum(len(b) for b, ok in zip(ids, run.ok, strict=True) if ok)
    during = [s for s in samples if t0 <= s["t"] <= t_input_end]
    learn_eps = ((during[-1]["examples_seen"] - during[0]["examples_seen"]) / (during[-1]["t"] - during[0]["t"])
                 if len(during) >= 2 else math.nan)
    at_end = min(samples, key=lambda s: abs(s["t"] - t_input_end)) if samples else {"examples_seen": 0}
    request_ms = [(d - s) * 1000 for d, s in zip(run.done, run.sent, strict=True)]
    return {
        "rate_target_eps": per_s,
        "loadavg_at_start": loadavg,
        "cpu_share_during_input": cpu_share,
        "events": total, "acked": acked, "requests": len(bodies), "failed_requests": run.ok.count(False),
        "not_in_topic": missing,
        "achieved_eps": acked / (t_input_end - run.sent[0]),
        "input_s": t_input_end - t0,
        "request_ms": c.summary(request_ms),
        "send_late_ms": c.summary(run.late_ms),
        "trainer_learn_eps_during_input": learn_eps,
        "trainer_runnable_not_running_share": (waits_end - waits_start) / (t_cpu_end - t0),
        "trainer_cpu_us_per_event": cpu_share["trainer"] / learn_eps * 1e6 if learn_eps else math.nan,
        "backlog_at_input_end": acked - at_end["examples_seen"],
        "drain_s": t_drained - t_input_end,
        "versions_published": len(announced), "versions_served": len(served),
        "freshness_ms": c.summary(fresh),
        "ack_to_published_ms": c.summary(to_publish),
        "swap_ms": c.summary(swap),
        "next_publication_ms": c.summary(floor),
        "publication_interval_ms": c.summary([(b - a) * 1000 for a, b in zip(publications, publications[1:], strict=False)]),
        "floor_cdf": c.cdf_points(floor),
        "unserved": sum(1 for f in fresh if math.isinf(f)),
        "cdf": c.cdf_points(fresh),
        "histogram_10ms": c.histogram(fresh, 10.0),
        "timeline": c.per_second(acked_at, fresh, t0),
        "trainer_samples": [{"t": round(s["t"] - t0, 2), "examples_seen": s["examples_seen"], "version": s["version"]} for s in samples],
        "sent_per_s": c.per_second(run.done, request_ms, t0, weight=[len(b) for b in ids]),
    }


# ----------------------------------------------------------------------------------- report


def report(runs: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    for r in runs:
        fr, floor, hop = r["freshness_ms"], r["next_publication_ms"], r["kafka_hop"]["hop_ms"]

        def row(name: str, x: dict[str, float], ratios: bool = True) -> list[Any]:
            return [name, x["n"], x["p50"], x["p90"], x["p99"], x["max"],
                    c.ratio(x["p50"], floor["p50"]) if ratios else math.nan, c.ratio(x["p99"], floor["p99"]) if ratios else math.nan]

        c.print_table(
            f"freshness at {r['rate_target_eps']:,.0f} labelled ev/s (achieved {r['achieved_eps']:,.0f}), ms; "
            f"the trainer publishes every {settings['publish_every_n']:,} examples or {settings['publish_every_ms']} ms",
            ["what", "n", "p50", "p90", "p99", "max", "p50 / baseline", "p99 / baseline"],
            [
                row("202 → a version that learned the event is served", fr),
                row("202 → a version that learned it is published", r["ack_to_published_ms"]),
                row("baseline: 202 → the trainer's next publication", floor),
                row("swap: published → served (per version)", r["swap_ms"], ratios=False),
                row("raw Kafka: produce → consumed (same rate, batches)", hop, ratios=False),
            ],
        )
        c.print_table("input and learning", ["what", "value"], [
            ["target / achieved input, events/s", f"{r['rate_target_eps']:,.0f} / {r['achieved_eps']:,.0f}"],
            ["requests (events each) / failed", f"{r['requests']:,} ({settings['batch']}) / {r['failed_requests']}"],
            ["202 latency p50 / p99, ms", f"{c.fmt(r['request_ms']['p50'])} / {c.fmt(r['request_ms']['p99'])}"],
            ["sends behind schedule p99, ms", c.fmt(r["send_late_ms"]["p99"])],
            ["trainer learned, events/s during the input", c.fmt(r["trainer_learn_eps_during_input"])],
            ["backlog when the input ended, events", c.fmt(r["backlog_at_input_end"])],
            ["last event served after the input ended, s", c.fmt(r["drain_s"])],
            ["versions published / served; interval p50, ms",
             f"{r['versions_published']} / {r['versions_served']}; {c.fmt(r['publication_interval_ms']['p50'])}"],
            ["events never served (within the drain timeout)", str(r["unserved"])],
            ["trainer CPU per event learned during the input, µs", c.fmt(r["trainer_cpu_us_per_event"])],
            ["trainer's time ready to run but waiting for a CPU (share of the input window)",
             f"{r['trainer_runnable_not_running_share']:.2f}"],
            ["CPU during the input, cores: " + " / ".join(r["cpu_share_during_input"]),
             " / ".join(f"{v:.2f}" for v in r["cpu_share_during_input"].values())],
            ["load average at the start (1/5/15 min)", " ".join(f"{x:.2f}" for x in r["loadavg_at_start"])],
        ])
        if r["rate_target_eps"] >= TARGET_RATE:
            met = fr["p99"] <= TARGET_P99_MS and r["achieved_eps"] >= 0.95 * TARGET_RATE
            console.print(f"target p99 ≤ {TARGET_P99_MS:.0f} ms at {TARGET_RATE:,.0f} ev/s: {'[green]met' if met else '[red]missed'}[/] "
                          f"(p99 {c.fmt(fr['p99'])} ms at {r['achieved_eps']:,.0f} ev/s)")


# ----------------------------------------------------------------------------------- main


def trainer_default(name: str) -> int:
    """The trainer's default for one of its settings (what it runs with unless told)."""
    return int(TrainerSettings.model_fields[name].default)


def main(
    rate: Annotated[list[float] | None, typer.Option(help="Labelled events/s sent to ingest (repeat for several runs)")] = None,
    duration: Annotated[float | None, typer.Option(help="Seconds of input per rate (default 20, smoke 3)")] = None,
    batch: Annotated[int, typer.Option(help="Events per POST /v1/events")] = 50,
    publish_every_n: Annotated[int | None, typer.Option(help="Trainer: STREAMWISE_PUBLISH_EVERY_N (default: the trainer's)")] = None,
    publish_every_ms: Annotated[int | None, typer.Option(help="Trainer: STREAMWISE_PUBLISH_EVERY_MS (default: the trainer's)")] = None,
    poll_ms: Annotated[float, typer.Option(help="GET /v1/model period while a new version is announced but not served yet")] = 2.0,
    drain_timeout: Annotated[float | None, typer.Option(help="Seconds to wait after the input for the last event to be served (default 180, smoke 60)")] = None,
    smoke: Annotated[bool, typer.Option(help="A few seconds at 500 ev/s, for CI")] = False,
    service_env: Annotated[list[str] | None, typer.Option(help="KEY=VALUE for the services' environment (repeatable), e.g. STREAMWISE_FETCH_MIN_KB=64")] = None,
    keep_run_dir: c.KeepRunDir = False,
) -> None:
    """Freshness (ingest 202 → version served) at fixed input rates, beside the publication schedule and the raw Kafka hop."""
    rates = rate or ([500.0] if smoke else [TARGET_RATE])
    duration = duration or (3.0 if smoke else 20.0)
    drain_timeout = drain_timeout or (60.0 if smoke else 180.0)
    publish_every_n = publish_every_n or trainer_default("publish_every_n")
    publish_every_ms = publish_every_ms or trainer_default("publish_every_ms")
    extra_env = dict(item.split("=", 1) for item in service_env or [])
    settings = {"service_env": extra_env, "batch": batch, "duration_s": duration, "publish_every_n": publish_every_n, "publish_every_ms": publish_every_ms,
                "predictor_poll_interval_ms": int(PredictorSettings.model_fields["poll_interval_ms"].default), "bench_poll_ms": poll_ms, "partitions": 1}
    runs = []
    with c.infra(keep_run_dir=keep_run_dir) as infra, c.progress_bar() as progress:
        for per_s in rates:
            items = c.labelled_events(int(per_s * duration), seed=int(per_s), run=f"fresh{uuid.uuid4().hex[:6]}")
            groups = c.chunks(items, batch)
            env = {
                "STREAMWISE_PUBLISH_EVERY_N": str(publish_every_n), "STREAMWISE_PUBLISH_EVERY_MS": str(publish_every_ms),
                **extra_env,
            }
            with infra.services(["ingest", "trainer", "predictor"], extra_env=env) as svc:
                result = asyncio.run(pipeline(
                    svc, infra, [c.json_body(g) for g in groups], [[e["id"].encode() for e in g] for g in groups], per_s,
                    poll_s=poll_ms / 1000, drain_timeout_s=drain_timeout, progress=progress))
            # Then the same records, rate and batching straight through Kafka (the broker warm by now).
            hop_task = progress.add_task(f"raw Kafka hop at {per_s:,.0f} ev/s", total=None)
            hop_topic = f"bench{uuid.uuid4().hex[:8]}.kafka-hop"
            infra.create_topics([hop_topic])
            hop = asyncio.run(kafka_hop(
                infra.bootstrap, hop_topic, infra.partitions,
                [[(e["id"].encode(), c.kafka_value(e)) for e in g] for g in groups], per_s / batch))
            progress.update(hop_task, total=1, completed=1)
            runs.append({**result, "kafka_hop": hop})
    report(runs, settings)
    c.write_results("freshness", smoke, {"host": c.host_info(), "settings": settings, "runs": runs,
                                         "target": {"p99_ms": TARGET_P99_MS, "rate_eps": TARGET_RATE}})
    if any(r["not_in_topic"] for r in runs):  # acknowledged yet not in Kafka: a bug, not a figure
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
