"""Ingest throughput: events acknowledged per second through HTTP, against a raw Kafka producer.

Ingest runs as a real process with its production command and writes to a private Apache
Kafka 4 broker. Two baselines in the same run, on the same broker, in this process, writing the
same records (the ``EventReceived`` bytes ingest would write for the same events, keyed by id)
in the same groups; a group counts when every record of it is acknowledged, as a 202 does:

- ``raw`` (**the issue's target: ingest ≥ 0.5 × raw**): a plain ``AIOKafkaProducer`` configured
  like ingest's (acks=all, idempotent, linger 2 ms, the same request timeout and size limit; see
  ``streamwise_core.adapters.kafka.make_producer``), used the way a developer would without our sink:
  ``producer.send()`` for each record of a group, then the group's deliveries awaited
  (aiokafka appends concurrent records to the same open batch itself). ``--raw batch``
  instead hands each group over alone as one record batch per partition (``send_batches``,
  ingest before group commit: one broker round trip at a time per partition).
- ``sink`` (a stronger bound, shown beside it so that nobody is misled): ingest's own Kafka
  adapter (``streamwise_ingest.sink.KafkaSink``) on its own producer made by ``make_producer``:
  the groups of concurrent clients gathered into one record batch per partition while the
  previous one is on its way (group commit). That is exactly what ingest does after HTTP and
  validation, so the ratio to it is the cost of those two alone.

All three are driven by the same closed-loop generator (``bench/_load.py``, ``--workers`` at
once): one event per request (a JSON object), and ``--batch`` events per request as a JSON
list and as NDJSON. Targets and modes are interleaved in rounds. The results' ``rows`` hold
ingest and the raw producer; ``sink_rows`` the sink.

    .venv/bin/python bench/ingest_throughput.py            # 4 rounds × 5 s per target and mode
    .venv/bin/python bench/ingest_throughput.py --smoke    # a few seconds, for CI
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import _common as c
import _load
import aiohttp
import typer
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streamwise_core.adapters.kafka import make_producer, send_batches
from streamwise_core.adapters.settings import KafkaSettings
from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_ingest.sink import KafkaSink

TARGETS = ("ingest", "raw", "sink")
MODES = ("single", "json-list", "ndjson")
TARGET_RATIO = 0.5
"""The issue's target: ingest ≥ 0.5 × the raw producer (not the sink)."""
TIMEOUT_S = 10.0
"""As ingest's ``STREAMWISE_PRODUCE_TIMEOUT_S``: a group not acknowledged by then counts as failed (503)."""
POOL = 64
"""Distinct request bodies per mode, cycled (ids are unique within a request, as ingest requires)."""
RAW_USES = ("send", "batch")


def groups_of(mode: str, batch: int) -> list[list[dict[str, Any]]]:
    size = 1 if mode == "single" else batch
    items = c.labelled_events(POOL * size, seed=5, run=f"in{uuid.uuid4().hex[:6]}")
    return [list(g) for g in c.chunks(items, size)]


def http_request(mode: str, groups: list[list[dict[str, Any]]]) -> _load.Request:
    if mode == "single":
        bodies, kind = [c.json_body(g)[1:-1] for g in groups], "application/json"  # the object, not a list
    elif mode == "json-list":
        bodies, kind = [c.json_body(g) for g in groups], "application/json"
    else:
        bodies, kind = [c.ndjson_body(g) for g in groups], "application/x-ndjson"
    headers = {**c.API_HEADERS, "content-type": kind}

    async def request(session: aiohttp.ClientSession, worker: int, i: int) -> _load.Reply:
        return await _load.post(session, "/v1/events", bodies[(worker * 7 + i) % len(bodies)], headers)

    return request


def raw_producer(bootstrap: str) -> AIOKafkaProducer:
    """A plain aiokafka producer with ingest's settings (``make_producer``'s arguments, spelled out)."""
    kafka = KafkaSettings(bootstrap=bootstrap)
    return AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, client_id="bench-raw", acks="all", enable_idempotence=kafka.idempotence,
        linger_ms=2, request_timeout_ms=kafka.request_timeout_ms, max_request_size=8 * 1024 * 1024,
    )


def records_of(groups: list[list[dict[str, Any]]]) -> list[list[tuple[bytes, bytes]]]:
    return [[(e["id"].encode(), c.kafka_value(e)) for e in g] for g in groups]


def answered(write: Any, records: list[list[tuple[bytes, bytes]]]) -> _load.Request:
    """A request of the closed loop that writes one group and answers like ingest (202, or 503
    when Kafka fails or does not acknowledge within ``TIMEOUT_S``)."""

    async def request(session: aiohttp.ClientSession, worker: int, i: int) -> _load.Reply:
        try:
            await write(records[(worker * 7 + i) % len(records)])
        except (KafkaError, BackendUnavailable, TimeoutError):
            return _load.Reply(503, b"")
        return _load.Reply(202, b"")

    return request


def raw_request(producer: AIOKafkaProducer, topic: str, groups: list[list[dict[str, Any]]], use: str) -> _load.Request:
    """The same records straight to Kafka through a plain producer."""

    async def write(group: list[tuple[bytes, bytes]]) -> None:
        async with asyncio.timeout(TIMEOUT_S):
            if use == "send":
                await asyncio.gather(*[await producer.send(topic, value, key=key) for key, value in group])
            else:
                await asyncio.gather(*await send_batches(producer, topic, group))

    return answered(write, records_of(groups))


def sink_request(sink: KafkaSink, topic: str, groups: list[list[dict[str, Any]]]) -> _load.Request:
    """The same records through ingest's own ``KafkaSink`` (group commit), without HTTP."""
    return answered(lambda group: sink.write(topic, group), records_of(groups))


async def measure(
    url: str, pid: int, bootstrap: str, topics: dict[str, str], settings: dict[str, Any], *, progress: Any, profile: Path | None = None,
) -> dict[str, Any]:
    workers, batch = settings["workers"], settings["batch"]
    raw = raw_producer(bootstrap)
    sink_producer = make_producer(KafkaSettings(bootstrap=bootstrap), client_id="bench-sink")
    await raw.start()
    await sink_producer.start()
    try:
        sink = KafkaSink(sink_producer, timeout_s=TIMEOUT_S)
        groups = {mode: groups_of(mode, batch) for mode in MODES}
        requests = {("ingest", mode): http_request(mode, groups[mode]) for mode in MODES}
        requests |= {("raw", mode): raw_request(raw, topics["raw"], groups[mode], settings["raw"]) for mode in MODES}
        requests |= {("sink", mode): sink_request(sink, topics["sink"], groups[mode]) for mode in MODES}

        own_cpu: dict[tuple[str, str], list[float]] = {}

        async def run(mode: str, target: str, until: float) -> _load.LoadResult:
            used = time.process_time()
            try:
                return await _load.run_load(url, workers, until, [], requests[target, mode])
            finally:
                own_cpu.setdefault((mode, target), []).append(time.process_time() - used)

        result = await c.interleaved(run, MODES, TARGETS, settings, progress=progress, pids={"ingest": pid}, profile=profile)
    finally:
        await raw.stop()
        await sink_producer.stop()
    rows = c.load_rows(result, {m: 1 if m == "single" else batch for m in MODES}, ok=202)
    for row in rows.values():
        # This process's CPU in the measured blocks (the first call of each is the warm-up): the
        # load generator's HTTP clients for ingest, the load generator and the producer for the baselines.
        row["bench_cpu_s"] = sum(own_cpu[row["mode"], row["target"]][1:1 + settings["rounds"]])
        row["bench_cpu_cores"] = row["bench_cpu_s"] / row["seconds"]
        row["server_cpu_cores"] = row["server_cpu_s"] / row["seconds"]
    return rows


def report(title: str, rows: dict[str, dict[str, Any]]) -> None:
    """Ingest against both baselines side by side, and the issue's target (against ``raw``)."""
    table = []
    for mode in MODES:
        ing, raw, sink = (rows[f"{mode}/{t}"] for t in TARGETS)
        table.append([
            f"{mode} ({ing['per_request']} per request)", ing["items_per_s"], raw["items_per_s"],
            c.ratio(ing["items_per_s"], raw["items_per_s"]), sink["items_per_s"], c.ratio(ing["items_per_s"], sink["items_per_s"]),
            ing["server_cpu_ms_per_item"] * 1000,
            " / ".join(c.fmt(r["latency_ms"]["p50"]) for r in (ing, raw, sink)),
            " / ".join(c.fmt(r["latency_ms"]["p99"]) for r in (ing, raw, sink)),
            f"{ing['server_cpu_cores']:.2f} / {ing['bench_cpu_cores']:.2f}",
            ing["failed"] + raw["failed"] + sink["failed"],
        ])
    c.print_table(title, ["mode", "ingest ev/s", "raw ev/s", "ingest / raw (target ≥ 0.5)", "sink ev/s",
                          "ingest / sink (stronger bound)", "ingest CPU µs/event", "p50 ms ingest / raw / sink",
                          "p99 ms ingest / raw / sink", "cores during ingest: ingest / bench", "failed"], table)
    for row in table:
        verdict = "[green]met" if row[3] >= TARGET_RATIO else "[red]missed"
        c.console.print(f"target throughput ≥ {TARGET_RATIO:g} × raw producer, {row[0]}: {verdict}[/] ({row[3]:.2f}); "
                        f"against the sink (not the target): {row[5]:.2f}")


def main(
    workers: Annotated[int, typer.Option(help="Concurrent closed-loop clients (HTTP requests, or Kafka groups in flight)")] = 16,
    batch: Annotated[int, typer.Option(help="Events per batched request")] = 100,
    block: c.Block = None,
    rounds: c.Rounds = None,
    smoke: c.Smoke = False,
    keep_run_dir: c.KeepRunDir = False,
    profile: c.Profile = None,
    raw: Annotated[str, typer.Option(help=f"How the raw producer writes a group: {', '.join(RAW_USES)} (see the module docstring)")] = "send",
) -> None:
    """Events/s acknowledged by ingest (HTTP → Kafka) against a raw aiokafka producer and against ingest's own sink."""
    if raw not in RAW_USES:
        raise typer.BadParameter(f"--raw must be one of {', '.join(RAW_USES)}")
    meta = c.ab_settings(workers=workers, batch=batch, block=block, rounds=rounds, smoke=smoke) | {
        "acks": "all", "idempotence": True, "linger_ms": 2, "raw": raw, "baselines": {
            "raw": f"plain AIOKafkaProducer, ingest's settings, {'send() per record' if raw == 'send' else 'one batch per group'}, "
                   "each group's deliveries awaited (the issue's target)",
            "sink": "streamwise_ingest.sink.KafkaSink (group commit) on make_producer: ingest without HTTP and validation"}}
    host = c.host_info()
    with c.infra(keep_run_dir=keep_run_dir) as infra, infra.services(["ingest"]) as svc, c.progress_bar() as progress:
        topics = {"raw": f"{svc.prefix}.raw-events", "sink": f"{svc.prefix}.sink-events"}
        infra.create_topics(list(topics.values()))
        rows = asyncio.run(measure(svc.url("ingest"), svc.pid("ingest"), infra.bootstrap, topics, meta, progress=progress, profile=profile))
    host["loadavg_end"] = c.host_info()["loadavg"]
    report(f"ingest: acknowledged events/s over HTTP vs a raw aiokafka producer (--raw {raw}; the issue's target: "
           f"ingest ≥ {TARGET_RATIO:g} × raw) and vs ingest's own KafkaSink without HTTP (a stronger bound); same acks, broker, "
           f"records; {workers} closed-loop clients, {meta['rounds']} rounds × {meta['block_s']:g} s", rows)
    c.console.print(f"load average at start {host['loadavg']}, at end {host['loadavg_end']}")
    c.write_results("ingest_throughput", smoke, {
        "host": host, "settings": meta, "target_ratio": TARGET_RATIO,
        "rows": {k: r for k, r in rows.items() if r["target"] != "sink"},
        "sink_rows": {k: r for k, r in rows.items() if r["target"] == "sink"},
    })
    if any(r["failed"] for r in rows.values()):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
