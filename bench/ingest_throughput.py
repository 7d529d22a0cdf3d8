"""Ingest throughput: events acknowledged per second through HTTP, against a raw Kafka producer.

Ingest runs as a real process with its production command and writes to a private Apache
Kafka 4 broker. The baseline, in the same run and on the same broker: an aiokafka producer in
this process made by ``streamwise_core.kafka.make_producer``, the very settings ingest uses
(acks=all, idempotent, linger 2 ms), writing the same records (the ``EventReceived`` bytes
ingest would write for the same events, keyed by id) in the same groups; a group counts when
every record of it is acknowledged, as a 202 does. How the raw producer is used (``--raw``):

- ``sink`` (default): through ingest's own Kafka adapter (``streamwise_ingest.sink.KafkaSink``):
  the groups of concurrent clients gathered into one record batch per partition while the
  previous one is on its way (group commit). The best use of the producer we know, and exactly
  what ingest does after HTTP and validation, so the ratio is the cost of those two.
- ``send``: ``producer.send()`` record by record, then all awaited (aiokafka appends concurrent
  records to the same open batch itself).
- ``batch``: each group alone as one record batch per partition (``send_batches``, as ingest did
  before group commit): a produce request carries one batch per partition, so groups go one
  broker round trip at a time.

Both are driven by the same closed-loop generator (``bench/_load.py``, ``--workers`` at
once): one event per request (a JSON object), and ``--batch`` events per request as a JSON
list and as NDJSON. Targets and modes are interleaved in rounds.

    .venv/bin/python bench/ingest_throughput.py            # 4 rounds × 5 s per target and mode
    .venv/bin/python bench/ingest_throughput.py --smoke    # a few seconds, for CI
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from aiokafka.errors import KafkaError

import _common as c
import _load
from streamwise_core.errors import BackendUnavailable
from streamwise_core.kafka import make_producer, send_batches
from streamwise_core.settings import KafkaSettings
from streamwise_ingest.sink import KafkaSink

TARGETS = ("ingest", "raw")
MODES = ("single", "json-list", "ndjson")
TARGET_RATIO = 0.5
POOL = 64
"""Distinct request bodies per mode, cycled (ids are unique within a request, as ingest requires)."""


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

    async def request(client: httpx.AsyncClient, worker: int, i: int) -> httpx.Response:
        return await client.post("/v1/events", content=bodies[(worker * 7 + i) % len(bodies)], headers=headers)

    return request


RAW_USES = ("sink", "send", "batch")


def raw_request(producer: Any, topic: str, groups: list[list[dict[str, Any]]], use: str) -> _load.Request:
    """The same records straight to Kafka; answers like ingest (202, or 503 when Kafka fails)."""
    records = [[(e["id"].encode(), c.kafka_value(e)) for e in g] for g in groups]
    sink = KafkaSink(producer, timeout_s=10)

    async def write(group: list[tuple[bytes, bytes]]) -> None:
        if use == "sink":
            await sink.write(topic, group)
        elif use == "send":
            await asyncio.gather(*[await producer.send(topic, value, key=key) for key, value in group])
        else:
            await asyncio.gather(*await send_batches(producer, topic, group))

    async def request(client: httpx.AsyncClient, worker: int, i: int) -> httpx.Response:
        try:
            await write(records[(worker * 7 + i) % len(records)])
        except (KafkaError, BackendUnavailable):
            return httpx.Response(503)
        return httpx.Response(202)

    return request


async def measure(
    url: str, pid: int, bootstrap: str, raw_topic: str, settings: dict[str, Any], *, progress: Any, profile: Path | None = None,
) -> dict[str, Any]:
    workers, batch = settings["workers"], settings["batch"]
    producer = make_producer(KafkaSettings(bootstrap=bootstrap), client_id="bench-raw")
    await producer.start()
    try:
        groups = {mode: groups_of(mode, batch) for mode in MODES}
        requests = {
            ("ingest", mode): http_request(mode, groups[mode]) for mode in MODES
        } | {("raw", mode): raw_request(producer, raw_topic, groups[mode], settings["raw"]) for mode in MODES}

        async def run(mode: str, target: str, until: float) -> _load.LoadResult:
            return await _load.run_load(url, workers, until, [], requests[target, mode])

        result = await c.interleaved(run, MODES, TARGETS, settings, progress=progress, pids={"ingest": pid}, profile=profile)
    finally:
        await producer.stop()
    return c.load_rows(result, {m: 1 if m == "single" else batch for m in MODES}, ok=202)


def main(
    workers: Annotated[int, typer.Option(help="Concurrent closed-loop clients (HTTP requests, or Kafka groups in flight)")] = 16,
    batch: Annotated[int, typer.Option(help="Events per batched request")] = 100,
    block: c.Block = None,
    rounds: c.Rounds = None,
    smoke: c.Smoke = False,
    keep_run_dir: c.KeepRunDir = False,
    profile: c.Profile = None,
    raw: Annotated[str, typer.Option(help=f"How the raw producer writes a group: {', '.join(RAW_USES)} (see the module docstring)")] = "sink",
) -> None:
    """Events/s acknowledged by ingest (HTTP → Kafka) against a raw aiokafka producer."""
    meta = c.ab_settings(workers=workers, batch=batch, block=block, rounds=rounds, smoke=smoke) | {
        "acks": "all", "idempotence": True, "linger_ms": 2, "raw": raw}
    if raw not in RAW_USES:
        raise typer.BadParameter(f"--raw must be one of {', '.join(RAW_USES)}")
    with c.infra(keep_run_dir=keep_run_dir) as infra:
        with infra.services(["ingest"]) as svc, c.progress_bar() as progress:
            raw_topic = f"{svc.prefix}.raw-events"
            infra.create_topics([raw_topic])
            rows = asyncio.run(measure(svc.url("ingest"), svc.pid("ingest"), infra.bootstrap, raw_topic, meta, progress=progress, profile=profile))
    c.report_ab(f"ingest: acknowledged events/s over HTTP vs a raw aiokafka producer (same acks, broker, records; "
                f"raw writes with --raw {raw}; "
                f"{workers} closed-loop clients, {meta['rounds']} rounds × {meta['block_s']:g} s)", rows, MODES, "ingest", "raw", "ev/s", TARGET_RATIO)
    c.write_results("ingest_throughput", smoke, {"host": c.host_info(), "settings": meta, "rows": rows, "target_ratio": TARGET_RATIO})
    if any(r["failed"] for r in rows.values()):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
