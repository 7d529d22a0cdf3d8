"""Soak: does the suite run for weeks without filling up? Compressed time, every store sampled.

The whole suite runs as real processes (ingest, trainer, predictor, webapp with their production
commands) on a private Kafka 4 broker and redis-server, with the lifecycle spec
(``examples/fraud/lifecycle.toml``: the champion, a Hoeffding-tree challenger, a retrain
challenger, and the drift copy the champion starts when the demo's concept drifts) and a SQLite
registry (``--database postgres``: a private PostgreSQL). Time is compressed: the demo stream
(``streamwise_devstack.demo_stream``, labels inline and 30 % late, one drift 5 % into the run) at ``--rate`` events/s,
a version every ``--publish-every-ms`` per model, and every retention horizon shrunk to fit the run
(``STREAMWISE_RETENTION__*``: the grace period; ``STREAMWISE_TOPIC_RETENTION__*``: the topics'
``retention.ms`` and ``segment.ms``; the registry's full and sampled rows), so that the run spans
many horizons of each. One closed-loop client predicts (at most ``--predict-rate`` a second, so that
the predictions topic does not follow the host's load) and one web-app visitor keeps the live page
open and reloads the version history every second.

Every ``--every`` seconds: Redis ``used_memory``, its key count and the version blobs per model
(with the size of the newest and of the checkpoint); the registry's size on disk (SQLite file + WAL;
PostgreSQL ``pg_database_size``) and its rows per table and per model; the Kafka log dir's size on
disk, per topic; the RSS of every process with its children (and their PSS: a forked child's shared
pages count once); each model's version, events read and label-join buffers (trainer ``/v1/status``).

Target: after ``--warmup`` (a fraction of the run), every curve is flat (last sample / first
sample after warm-up ≤ 1.1) while the versions keep advancing. The *envelope* (peak of the last
fifth of the measured part / peak of its first fifth) tells a bounded saw-tooth from growth. The
registry defaults to production's 1,000 full and 500 sampled rows per model, compacted every 100
rows: when the trainer publishes fewer than ~10 versions a second, lower them so that the run
reaches the steady state within its warm-up.

    .venv/bin/python bench/soak.py                      # 10 minutes at 1,000 ev/s
    .venv/bin/python bench/soak.py --database postgres  # the registry in PostgreSQL
    .venv/bin/python bench/soak.py --smoke              # ~1 minute, for CI (figures sane, not the target)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import _common as c
import _load
import aiohttp
import httpx
import orjson
import psutil
import redis.asyncio as aioredis
import sqlalchemy as sa
import typer
from _common import console
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from memory import Visitor
from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy.pool import NullPool

from streamwise_core.adapters.settings import DEV_API_KEY, Topics
from streamwise_devstack import PostgresServer
from streamwise_devstack.demo_stream import StreamSummary, stream
from streamwise_trainer.publisher import COMPACT_EVERY

SERVICES = ("ingest", "trainer", "predictor", "webapp")
APP_SPEC = _load.ROOT / "examples" / "fraud" / "lifecycle.toml"
TARGET = 1.1
PARTITION_DIR = re.compile(r"^(?P<topic>.+)-\d+(\.\w+-(delete|future|stray))?$")
"""A partition's directory in the log dir: ``<topic>-<partition>``, with a suffix while it is being deleted or moved."""
HELD_BACK_KEPT = 10
"""``Registry.compact_versions(keep_held_back=)`` as the trainer calls it."""
REDIS_MEMORY = ("used_memory_dataset", "used_memory_overhead", "used_memory_scripts", "mem_clients_normal", "used_memory_rss")
BROKER_CONFIG = {
    # By default Kafka looks for segments past retention every 5 minutes and removes their files a
    # minute later: at compressed time the log would hold several retention periods at once.
    "log.retention.check.interval.ms": "1000",
    "log.segment.delete.delay.ms": "1000",
    "log.cleaner.backoff.ms": "1000",
}


@dataclass(frozen=True)
class Plan:
    """What one run does, and the settings that compress time."""

    seconds: float
    rate: float
    senders: int
    batch: int
    every_s: float
    warmup: float
    database: str
    publish_every_ms: int
    keep_last: int
    rollback_window: int
    grace_s: float
    topic_retention_s: float
    segment_s: float
    registry_full: int
    registry_sampled: int
    drift_at: int
    predict_rate: float

    def env(self) -> dict[str, str]:
        retention_ms, segment_ms = str(int(self.topic_retention_s * 1000)), str(int(self.segment_s * 1000))
        return {
            "STREAMWISE_PUBLISH_EVERY_MS": str(self.publish_every_ms),
            "STREAMWISE_RETENTION__KEEP_LAST": str(self.keep_last),
            "STREAMWISE_RETENTION__ROLLBACK_WINDOW": str(self.rollback_window),
            "STREAMWISE_RETENTION__GRACE_S": str(self.grace_s),
            "STREAMWISE_RETENTION__REGISTRY_FULL": str(self.registry_full),
            "STREAMWISE_RETENTION__REGISTRY_SAMPLED": str(self.registry_sampled),
            **{f"STREAMWISE_TOPIC_RETENTION__{k}_MS": retention_ms for k in ("EVENTS", "LABELS", "PREDICTIONS", "DEAD_LETTERS")},
            "STREAMWISE_TOPIC_RETENTION__SEGMENT_MS": segment_ms,
            "STREAMWISE_TOPIC_RETENTION__MODELS_SEGMENT_MS": segment_ms,
            "STREAMWISE_TOPIC_RETENTION__MODELS_MIN_COMPACTION_LAG_MS": "0",
        }

    @property
    def blob_bound(self) -> int:
        """Most version blobs retention keeps per model: the newest, the rollback window, and the versions made current
        within the grace period (one per publication interval at most, and the one current when it began)."""
        return self.keep_last + self.rollback_window + math.ceil(self.grace_s * 1000 / self.publish_every_ms) + 1

    @property
    def row_bound(self) -> int:
        """Most registry rows per model: what compaction keeps (the full and the sampled rows, the first version, the
        current one, the newest held back) and the rows recorded since the last compaction; audited versions add theirs."""
        return self.registry_full + self.registry_sampled + 1 + 1 + HELD_BACK_KEPT + COMPACT_EVERY


# ----------------------------------------------------------------------------------- probes


def kafka_bytes(log_dir: Path, prefix: str) -> dict[str, int]:
    """Bytes on disk per topic (allocated blocks, not file sizes: Kafka preallocates sparse index files)."""
    out: dict[str, int] = {}
    for part in os.scandir(log_dir):
        if not part.is_dir():
            continue
        match = PARTITION_DIR.match(part.name)
        topic = match["topic"].removeprefix(f"{prefix}.fraud.") if match else part.name
        total = 0
        with contextlib.suppress(FileNotFoundError):  # the broker deletes segments as we walk
            for f in os.scandir(part.path):
                with contextlib.suppress(FileNotFoundError):
                    total += f.stat().st_blocks * 512
        out[topic] = out.get(topic, 0) + total
    return out


def pss(pid: int) -> dict[str, float]:
    """Proportional set size of ``pid`` with its children (MB), how many children, and the parent's own RSS: a forked
    child shares its parent's pages, which RSS counts in both and PSS splits between them."""
    try:
        proc = psutil.Process(pid)
        children = proc.children(recursive=True)
        total = sum(p.memory_full_info().pss for p in (proc, *children))
        return {"pss_mb": total / 1e6, "children": len(children), "own_rss_mb": proc.memory_info().rss / 1e6}
    except psutil.Error:
        return {"pss_mb": math.nan, "children": 0, "own_rss_mb": math.nan}


class RegistryProbe:
    """Size on disk and row counts of the SQL registry, each read on a fresh connection (a reader that
    kept its snapshot open would stop SQLite from checkpointing its WAL)."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url, poolclass=NullPool)
        self.sqlite = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None

    def sample(self) -> dict[str, Any]:
        with self.engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
            rows = {t: conn.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in tables}
            per_model = dict(conn.execute(sa.text("SELECT model, count(*) FROM model_versions GROUP BY model")).all()) \
                if "model_versions" in tables else {}
            size = None if self.sqlite else conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one()
        if self.sqlite is not None:
            files = (self.sqlite, Path(f"{self.sqlite}-wal"), Path(f"{self.sqlite}-shm"))
            size = sum(f.stat().st_size for f in files if f.exists())
        return {"bytes": int(size or 0), "rows": rows, "version_rows": per_model}

    def close(self) -> None:
        self.engine.dispose()


@dataclass
class Probe:
    """Reads every store's size, every process's RSS and every model's progress."""

    redis: aioredis.Redis
    prefix: str
    registry: RegistryProbe
    kafka_dir: Path
    pids: dict[str, int]
    urls: dict[str, str]
    http: httpx.AsyncClient
    kafka: AIOKafkaConsumer
    events: str

    async def sample(self, t: float) -> dict[str, Any]:
        status, served, end = await self._trainer(), await self._served(), await self._events_end()
        return {
            "t": t,
            "events_in_topic": end,
            "lag": {m: end - v["events_read"] for m, v in status.items()},
            "redis": await self._redis(),
            "registry": await asyncio.to_thread(self.registry.sample),
            "kafka": await asyncio.to_thread(kafka_bytes, self.kafka_dir, self.prefix),
            "rss_mb": {name: c.rss_mb(pid) for name, pid in self.pids.items()},
            "pss": {name: pss(pid) for name, pid in self.pids.items()},
            "models": status,
            "served": served,
        }

    async def _redis(self) -> dict[str, Any]:
        """Memory (with the parts of it that tell a growing dataset from growing buffers), keys, and per model the
        version blobs stored, the size of the newest and of the checkpoint: blobs that grow are a model that grows."""
        info = await self.redis.info("memory")
        newest: dict[str, int] = {}
        blobs: dict[str, int] = {}
        checkpoints: dict[str, int] = {}
        async for raw in self.redis.scan_iter(match=f"{self.prefix}:fraud:*", count=1000):
            parts = raw.decode().split(":")  # <prefix>:fraud:model:<model>:version:<n>, <prefix>:fraud:trainer:<model>:checkpoint
            if parts[2:3] == ["model"] and parts[4:5] == ["version"] and len(parts) == 6:
                blobs[parts[3]] = blobs.get(parts[3], 0) + 1
                newest[parts[3]] = max(newest.get(parts[3], 0), int(parts[5]))
            elif parts[2:3] == ["trainer"] and parts[4:] == ["checkpoint"]:
                checkpoints[parts[3]] = await self.redis.hstrlen(raw, "blob")
        key = f"{self.prefix}:fraud:model:{{}}:version:{{}}"
        blob_bytes = {m: await self.redis.hstrlen(key.format(m, v), "blob") for m, v in newest.items()}
        return {"used_memory": info["used_memory"], "keys": await self.redis.dbsize(), "blobs": blobs, "blob_bytes": blob_bytes,
                "checkpoint_bytes": checkpoints, "memory": {k: info.get(k) for k in REDIS_MEMORY}}

    async def _trainer(self) -> dict[str, dict[str, int]]:
        try:
            models = (await c.trainer_status(self.http, self.urls["trainer"]))["models"]
        except (httpx.HTTPError, KeyError):
            return {}
        # a model's offsets are those of the last record it read, per "topic:partition"
        return {name: {"version": m["version"] or 0, "examples_seen": m["examples_seen"],
                       "events_read": sum(o + 1 for tp, o in m["offsets"].items() if tp.rsplit(":", 1)[0] == self.events),
                       **{k: m[k] for k in ("waiting_features", "waiting_labels", "join_evicted")}}
                for name, m in models.items()}

    async def _events_end(self) -> int:
        """Events ingest has written so far (the end offsets of the events topic)."""
        parts = [TopicPartition(self.events, p) for p in self.kafka.partitions_for_topic(self.events) or {0}]
        return sum((await self.kafka.end_offsets(parts)).values())

    async def _served(self) -> dict[str, Any] | None:
        try:
            meta = await c.served_meta(self.http, self.urls["predictor"])
        except httpx.HTTPError:
            return None
        return {"model": meta["model"], "version": meta["version"]} if meta else None


async def topic_configs(bootstrap: str, topics: Topics) -> dict[str, dict[str, str]]:
    """The retention configs the broker holds for the app's topics (what the trainer converged them to)."""
    keys = ("cleanup.policy", "retention.ms", "segment.ms", "min.compaction.lag.ms")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics.all()])
    finally:
        await admin.close()
    return {
        r["resource_name"]: {e["config_names"]: e["config_value"] for e in r["config_entries"] if e["config_names"] in keys}
        for r in described.to_object()["resources"]
    }


async def wait_for_topic_retention(bootstrap: str, topics: Topics, plan: Plan) -> dict[str, dict[str, str]]:
    """Wait until the trainer has given the topics the run's retention (it converges them when it starts)."""
    want = str(int(plan.topic_retention_s * 1000))

    async def converged() -> dict[str, dict[str, str]] | None:
        configs = await topic_configs(bootstrap, topics)
        return configs if configs[topics.events].get("retention.ms") == want else None

    try:
        return await c.wait_until(converged, 60, interval_s=1.0, what=f"retention.ms={want} on {topics.events}")
    except TimeoutError:
        configs = await topic_configs(bootstrap, topics)
        console.print(f"[red]the topics did not get the run's retention (STREAMWISE_TOPIC_RETENTION__*): {configs}")
        return configs


# ----------------------------------------------------------------------------------- curves


Curve = Callable[[dict[str, Any]], float]


def curves(samples: list[dict[str, Any]]) -> dict[str, Curve]:
    """The figures that must stay flat, each read from a sample."""
    out: dict[str, Curve] = {
        "Redis used_memory MB": lambda s: s["redis"]["used_memory"] / 1e6,
        "Redis keys": lambda s: s["redis"]["keys"],
        "Redis version blobs": lambda s: sum(s["redis"]["blobs"].values()),
        "registry MB on disk": lambda s: s["registry"]["bytes"] / 1e6,
        "registry rows": lambda s: sum(s["registry"]["rows"].values()),
        "Kafka log MB on disk": lambda s: sum(s["kafka"].values()) / 1e6,
    }
    for name in samples[0]["rss_mb"] if samples else ():
        out[f"{name} RSS MB"] = lambda s, n=name: s["rss_mb"][n]
    for name in samples[0]["pss"] if samples else ():
        out[f"{name} PSS MB"] = lambda s, n=name: s["pss"][n]["pss_mb"]
    return out


def sizes(samples: list[dict[str, Any]]) -> dict[str, Curve]:
    """What the stores hold, per model and per topic: where a growing store grows (not judged)."""
    models = sorted({m for s in samples for m in s["redis"]["blobs"]})
    topics = sorted({t for s in samples for t in s["kafka"]})
    out: dict[str, Curve] = {}
    for m in models:
        out[f"{m}: newest blob KB"] = lambda s, m=m: s["redis"]["blob_bytes"].get(m, math.nan) / 1e3
        out[f"{m}: checkpoint KB"] = lambda s, m=m: s["redis"]["checkpoint_bytes"].get(m, math.nan) / 1e3
        out[f"{m}: blobs in Redis"] = lambda s, m=m: s["redis"]["blobs"].get(m, math.nan)
        out[f"{m}: registry rows"] = lambda s, m=m: s["registry"]["version_rows"].get(m, math.nan)
        out[f"{m}: features waiting for a label"] = lambda s, m=m: s["models"].get(m, {}).get("waiting_features", math.nan)
        out[f"{m}: labels waiting for a feature"] = lambda s, m=m: s["models"].get(m, {}).get("waiting_labels", math.nan)
    for t in topics:
        out[f"Kafka {t} MB"] = lambda s, t=t: s["kafka"].get(t, math.nan) / 1e6
    out["Redis dataset MB"] = lambda s: s["redis"]["memory"]["used_memory_dataset"] / 1e6
    out["Redis client buffers MB"] = lambda s: s["redis"]["memory"]["mem_clients_normal"] / 1e6
    out["trainer children"] = lambda s: s["pss"]["trainer"]["children"]
    out["trainer lag, events (slowest model)"] = lambda s: max(s["lag"].values(), default=math.nan)
    return out


def series(samples: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Every curve over time, and each model's version: what ``bench/plots.py`` draws."""
    models = sorted({m for s in samples for m in s["models"]})
    return {"t": [s["t"] for s in samples], **{name: [read(s) for s in samples] for name, read in curves(samples).items()},
            **{f"version {m}": [s["models"].get(m, {}).get("version", math.nan) for s in samples] for m in models},
            "events in the topic": [s["events_in_topic"] for s in samples],
            "events learned": [max((v["examples_seen"] for v in s["models"].values()), default=0) for s in samples]}


def first_measured(samples: list[dict[str, Any]], plan: Plan) -> int:
    """Index of the first sample after the warm-up."""
    return next((k for k, s in enumerate(samples) if s["t"] >= plan.warmup * plan.seconds), len(samples) - 1)


def versions_advanced(a: dict[str, Any], b: dict[str, Any]) -> dict[str, int]:
    """Versions each model published between samples ``a`` and ``b`` (a model born in between: all of them)."""
    return {m: v["version"] - a["models"].get(m, {}).get("version", 0) for m, v in b["models"].items()}


def verdicts(samples: list[dict[str, Any]], plan: Plan) -> dict[str, Any]:
    """Per curve: first sample after warm-up, last sample, their ratio, the peak's and the envelope's, and whether it is
    flat; what the stores hold per model and topic; the most blobs and registry rows of one model against their bounds."""
    k = first_measured(samples, plan)
    first, last = samples[k], samples[-1]
    # A store that is pruned in steps (Kafka segments, registry compaction every 100 rows) or a process that forks
    # saw-tooths: the two samples may fall on different phases. The envelope compares the peaks of the first and the
    # last fifth of the measured part instead, which a bounded saw-tooth keeps at 1.
    fifth = max(3, (len(samples) - k) // 5)
    head, tail = samples[k:k + fifth], samples[-fifth:]
    rows = {}
    for name, read in curves(samples).items():
        a, b = read(first), read(last)
        peak = max(read(s) for s in samples[k:])
        envelope = c.ratio(max(read(s) for s in tail), max(read(s) for s in head))
        rows[name] = {"first": a, "last": b, "ratio": c.ratio(b, a), "peak_ratio": c.ratio(peak, a), "envelope_ratio": envelope,
                      "flat": c.ratio(b, a) <= TARGET}
    detail = {name: {"first": read(first), "last": read(last), "ratio": c.ratio(read(last), read(first))}
              for name, read in sizes(samples).items()}
    advanced = versions_advanced(first, last)
    learned = {m: v["examples_seen"] - first["models"].get(m, {}).get("examples_seen", 0) for m, v in last["models"].items()}
    bounds = {"blobs": (plan.blob_bound, max(max(s["redis"]["blobs"].values(), default=0) for s in samples)),
              "registry rows": (plan.row_bound, max(max(s["registry"]["version_rows"].values(), default=0) for s in samples))}
    return {"first_index": k, "t_first": first["t"], "t_last": last["t"], "curves": rows, "detail": detail,
            "bounds": {name: {"bound": b, "most": most, "within": most <= b} for name, (b, most) in bounds.items()},
            "versions_advanced": advanced, "events_learned": learned, "all_flat": all(r["flat"] for r in rows.values()),
            "advancing": sum(advanced.values()) > 0}


# ----------------------------------------------------------------------------------- display


def live_table(samples: list[dict[str, Any]], plan: Plan) -> Table:
    table = Table(title=f"latest sample (ratios to the first after the warm-up of {plan.warmup * plan.seconds:.0f} s)")
    for col in ("curve", "now", "ratio"):
        table.add_column(col, justify="left" if col == "curve" else "right")
    if not samples:
        return table
    last = samples[-1]
    k = first_measured(samples, plan)
    measured = last["t"] >= plan.warmup * plan.seconds
    for name, read in curves(samples).items():
        ratio = c.ratio(read(last), read(samples[k])) if measured else math.nan
        style = "" if math.isnan(ratio) else "green" if ratio <= TARGET else "red"
        table.add_row(name, c.fmt(float(read(last))), f"[{style}]{c.fmt(ratio)}" if style else c.fmt(ratio))
    versions = ", ".join(f"{m} v{v['version']:,}" for m, v in sorted(last["models"].items()))
    table.add_row("versions", versions or "–", "")
    table.add_row("events in the topic", c.fmt(last["events_in_topic"]), "")
    table.add_row("trainer lag (events)", ", ".join(f"{m} {n:,}" for m, n in sorted(last["lag"].items())) or "–", "")
    return table


def progress_line(s: dict[str, Any]) -> str:
    versions = " ".join(f"{m} v{v['version']}" for m, v in sorted(s["models"].items()))
    return (f"t={s['t']:.0f}s Redis {s['redis']['used_memory'] / 1e6:.1f} MB {s['redis']['keys']} keys · registry "
            f"{s['registry']['bytes'] / 1e6:.1f} MB · Kafka {sum(s['kafka'].values()) / 1e6:.1f} MB · RSS "
            + " ".join(f"{n} {mb:.0f}" for n, mb in s["rss_mb"].items())
            + f" MB · {versions} · lag {max(s['lag'].values(), default=0):,}")


def report(result: dict[str, Any], plan: Plan) -> None:
    v = result["verdict"]
    rows = [[name, r["first"], r["last"], r["ratio"], r["peak_ratio"], r["envelope_ratio"],
             "[green]PASS" if r["flat"] else "[red]FAIL"] for name, r in v["curves"].items()]
    c.print_table(
        f"soak: {plan.seconds / 60:.1f} min at {plan.rate:,.0f} ev/s; first sample after the warm-up (t = {v['t_first']:.0f} s) "
        f"against the last (t = {v['t_last']:.0f} s); flat: last / first ≤ {TARGET}",
        ["curve", "first", "last", "last / first", "peak / first", "envelope", "flat"], rows,
    )
    c.print_table("what the stores hold, per model and topic (not judged: where a curve that grows grows)",
                  ["figure", "first", "last", "last / first"],
                  [[n, r["first"], r["last"], r["ratio"]] for n, r in v["detail"].items()])
    advanced = ", ".join(f"{m} +{n:,}" for m, n in sorted(v["versions_advanced"].items()))
    console.print("envelope: the peak of the last fifth of the measured part / the peak of its first fifth "
                  "(a bounded saw-tooth: 1)")
    console.print(f"versions advanced after the warm-up: {advanced} → {'[green]PASS' if v['advancing'] else '[red]FAIL'}[/]")
    s = result["stream"]
    console.print(f"demo stream: {s['sent']:,} events in {s['seconds']:.0f} s "
                  f"({s['sent'] / s['seconds']:,.0f} ev/s of {plan.rate:,.0f}), "
                  f"{s['late_labels']:,} late labels, {s['retries']} retries")
    p, v_ = result["predictions"], result["visitor"]
    console.print(f"predictions: {p['ok']:,} ({p['per_s']:,.0f}/s), {p['failed']} failed after the first version was served; "
                  f"web app visitor: {v_['live_events']} live events, {v_['pages']} pages")
    lags = [max(x["lag"].values(), default=0) for x in result["samples"][v["first_index"]:]]
    console.print(f"trainer lag after the warm-up (events in the topic not yet read by the slowest model): "
                  f"{lags[0]:,} → {lags[-1]:,}, most {max(lags):,}")
    for name, b in v["bounds"].items():
        console.print(f"most {name} of one model at any sample: {b['most']:,} (retention keeps at most ~{b['bound']:,}) → "
                      f"{'[green]within' if b['within'] else '[red]over'}[/]")


# ----------------------------------------------------------------------------------- run


async def run(svc: c.Services, infra: c.Infra, plan: Plan, registry_url: str, pids: dict[str, int]) -> dict[str, Any]:
    urls = {name: svc.url(name) for name in SERVICES}
    configs = await wait_for_topic_retention(infra.bootstrap, svc.topics, plan)
    r = aioredis.Redis.from_url(infra.redis.url)
    registry = RegistryProbe(registry_url)
    samples: list[dict[str, Any]] = []
    stop = asyncio.Event()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=console)
    task = progress.add_task("soak", total=plan.seconds)
    kafka = AIOKafkaConsumer(bootstrap_servers=infra.bootstrap, enable_auto_commit=False)
    await kafka.start()
    async with httpx.AsyncClient(timeout=10) as http:
        probe = Probe(r, svc.prefix, registry, infra.broker.data_dir / "kraft-logs", pids, urls, http, kafka, svc.topics.events)
        t0 = time.monotonic()
        end = t0 + plan.seconds
        senders = [asyncio.create_task(stream(
            urls["ingest"], DEV_API_KEY, rate=plan.rate / plan.senders, batch=plan.batch, seed=7 + k, progress=False,
            drift_at=plan.drift_at, run_id=f"soak{k}-{svc.prefix}", stop=stop, retry_for=30.0,
        )) for k in range(plan.senders)]
        predictions = asyncio.create_task(
            _load.run_load(urls["predictor"], 1, end, _load.feature_pool(), paced(plan.predict_rate)))
        visitor = Visitor(urls["webapp"])
        visiting = asyncio.create_task(visitor.run())
        with Live(Group(progress, live_table(samples, plan)), console=console, refresh_per_second=2) as live:
            k = 0
            while (due := t0 + k * plan.every_s) <= end:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if failed := [s for s in senders if s.done() and s.exception()]:
                    raise RuntimeError("the demo stream stopped") from failed[0].exception()
                samples.append(await probe.sample(time.monotonic() - t0))
                progress.update(task, completed=min(plan.seconds, time.monotonic() - t0),
                                description=f"soak · sample {k + 1} · {samples[-1]['t']:.0f} s")
                live.update(Group(progress, live_table(samples, plan)))
                if not console.is_terminal and k % max(1, round(60 / plan.every_s)) == 0:
                    console.print(progress_line(samples[-1]))  # a log has no live display: a line a minute
                k += 1
        stop.set()
        summaries: list[StreamSummary] = await asyncio.gather(*senders)
        load = await predictions
        visiting.cancel()
        await asyncio.gather(visiting, return_exceptions=True)
    await r.aclose()
    await kafka.stop()
    registry.close()
    sent = sum(s.sent for s in summaries)
    return {
        "samples": samples, "topic_configs": configs,
        "stream": {"sent": sent, "seconds": max(s.seconds for s in summaries),
                   **{k: sum(getattr(s, k) for s in summaries) for k in ("inline_labels", "late_labels", "retries")}},
        "predictions": predictions_summary(load, plan.seconds),
        "visitor": {"live_events": visitor.events, "pages": visitor.pages},
    }


def paced(per_s: float) -> _load.Request | None:
    """One prediction per request, each sent once the previous one is answered but no sooner than its slot at
    ``per_s`` a second: a closed loop whose rate (and so the predictions topic's size) does not follow the host's load."""
    if per_s <= 0:
        return None
    features = _load.feature_pool()
    start = time.monotonic()

    async def request(session: aiohttp.ClientSession, worker: int, i: int) -> _load.Reply:
        await asyncio.sleep(max(0.0, start + i / per_s - time.monotonic()))
        body = orjson.dumps({"id": f"soak-{worker}-{i}", "features": features[i % len(features)]})
        return await _load.post(session, "/v1/predict", body, {"content-type": "application/json"})

    return request


def predictions_summary(load: _load.LoadResult, seconds: float) -> dict[str, Any]:
    """Answers of the prediction client; failures counted from its first success on (before it, the
    predictor has no version to serve yet and says so with a 503). No latency: a paced request includes its wait."""
    ok = [k for k, s in enumerate(load.status) if s == 200]
    since = ok[0] if ok else len(load.status)
    return {"ok": len(ok), "per_s": len(ok) / seconds, "failed": sum(1 for s in load.status[since:] if s != 200),
            "before_first_version": since, "errors": load.errors}


@contextlib.contextmanager
def registry_server(infra: c.Infra, database: str) -> Iterator[tuple[str | None, int | None]]:
    """The registry's URL (None: the default SQLite file) and its server's pid, if it has one."""
    if database == "sqlite":
        yield None, None
        return
    with PostgresServer(infra.run_dir / "postgres") as pg:
        yield pg.url, pg.pid


def main(
    minutes: Annotated[float | None, typer.Option(help="Length of the run (default 10, smoke 1)")] = None,
    rate: Annotated[float | None, typer.Option(help="Events per second of the demo stream (default 1,000, smoke 500)")] = None,
    senders: Annotated[int, typer.Option(help="Demo streams at once (each at rate / senders, one request at a time)")] = 2,
    drift_at: Annotated[int | None, typer.Option(
        help="Event of each demo stream where the concept drifts (default: 5 % into the run, so that the drift copies start "
             "within the warm-up)")] = None,
    predict_rate: Annotated[float, typer.Option(
        help="Most predictions a second of the closed-loop client (0: as fast as answered)")] = 200.0,
    batch: Annotated[int, typer.Option(help="Events per POST /v1/events")] = 100,
    every: Annotated[float | None, typer.Option(help="Seconds between samples (default 5, smoke 2)")] = None,
    warmup: Annotated[float, typer.Option(help="Share of the run before the first measured sample")] = 0.3,
    database: Annotated[Literal["sqlite", "postgres"], typer.Option(help="Where the registry lives")] = "sqlite",
    publish_every_ms: Annotated[int, typer.Option(help="STREAMWISE_PUBLISH_EVERY_MS of the trainer")] = 50,
    keep_last: Annotated[int, typer.Option(help="STREAMWISE_RETENTION__KEEP_LAST")] = 20,
    rollback_window: Annotated[int, typer.Option(help="STREAMWISE_RETENTION__ROLLBACK_WINDOW")] = 10,
    grace: Annotated[float, typer.Option(help="STREAMWISE_RETENTION__GRACE_S")] = 10.0,
    topic_retention: Annotated[float | None, typer.Option(help="retention.ms of the topics, s (default 120, smoke 20)")] = None,
    segment: Annotated[float | None, typer.Option(help="segment.ms of the topics, in s (default 5, smoke 2)")] = None,
    registry_full: Annotated[int | None, typer.Option(
        help="STREAMWISE_RETENTION__REGISTRY_FULL (default 1,000 as in production, smoke 50)")] = None,
    registry_sampled: Annotated[int | None, typer.Option(
        help="STREAMWISE_RETENTION__REGISTRY_SAMPLED (default 500 as in production, smoke 20)")] = None,
    smoke: Annotated[bool, typer.Option(help="A run of about a minute, for CI: sane figures, flatness not judged")] = False,
    keep_run_dir: c.KeepRunDir = False,
) -> None:
    """Run the suite at compressed time and check that no store and no process grows."""
    plan = Plan(
        seconds=60 * (minutes or (1.0 if smoke else 10.0)), rate=rate or (500.0 if smoke else 1000.0), senders=senders,
        batch=batch,
        every_s=every or (2.0 if smoke else 5.0), warmup=warmup, database=database, publish_every_ms=publish_every_ms,
        keep_last=keep_last, rollback_window=rollback_window, grace_s=grace,
        topic_retention_s=topic_retention or (20.0 if smoke else 120.0), segment_s=segment or (2.0 if smoke else 5.0),
        registry_full=registry_full or (50 if smoke else 1000), registry_sampled=registry_sampled or (20 if smoke else 500),
        drift_at=0, predict_rate=predict_rate,
    )
    plan = replace(plan, drift_at=drift_at if drift_at is not None else int(plan.rate / plan.senders * plan.seconds * 0.05))
    with (c.infra(keep_run_dir=keep_run_dir, broker_config=BROKER_CONFIG) as infra,
          registry_server(infra, database) as (db_url, db_pid),
          infra.services(list(SERVICES), extra_env=plan.env(), app_spec=APP_SPEC, database_url=db_url) as svc):
        pids = {name: svc.pid(name) for name in SERVICES} | {"kafka": infra.broker.pid, "redis": infra.redis.pid}
        if db_pid is not None:
            pids["postgres"] = db_pid
        result = asyncio.run(run(svc, infra, plan, svc.env["STREAMWISE_DATABASE_URL"], pids))
    result["verdict"] = verdicts(result["samples"], plan)
    result["series"] = series(result["samples"])
    report(result, plan)
    c.write_results("soak", smoke, {
        "host": c.host_info(),
        "settings": {**asdict(plan), "blob_bound": plan.blob_bound, "row_bound": plan.row_bound, "target": TARGET,
                     "env": plan.env(), "broker_config": BROKER_CONFIG, "app_spec": str(APP_SPEC.relative_to(_load.ROOT))},
        **result,
    })
    if not result["verdict"]["advancing"] or result["predictions"]["ok"] == 0 or result["predictions"]["failed"]:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
