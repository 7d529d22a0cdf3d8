"""Learning throughput: the trainer service against river's own in-process loop.

The events topic is filled first, so the figure is what the trainer (batch consumer, decoding,
validation, label join, predict-score-learn, versions, checkpoints) sustains; the limit is
``river.evaluate.progressive_val_score`` on the same events and the same model, in this run,
measured before and after the trainer (the mean of the two is the limit).

Two ratios: wall clock (events/s) and CPU time per event. The CPU ratio compares river's loop
(``time.process_time`` of this process) with the trainer process's own CPU (psutil, user +
system) over the window in which it learned, so time the host gives to other processes does
not count on either side.

    python bench/learning_throughput.py            # 20,000 events per model
    python bench/learning_throughput.py --smoke    # a few seconds, for CI
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import tempfile
import time
import tomllib
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import _common as c
import httpx
import typer
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from river import evaluate, metrics

from streamwise_core.adapters.kafka import ensure_topics
from streamwise_core.adapters.settings import KafkaSettings, Topics
from streamwise_core.contracts.appspec import parse_app_spec
from streamwise_core.contracts.events import EventReceived, utcnow
from streamwise_core.contracts.schema import to_model_input
from streamwise_core.domain.pipeline import build_model
from streamwise_devstack import KafkaBroker, RedisServer, free_port
from streamwise_devstack.fraud import FraudStream
from streamwise_devstack.suite import Suite, service_specs, suite_env

ROOT = Path(__file__).resolve().parents[1]
BASE_SPEC = ROOT / "examples" / "fraud" / "streamwise.toml"
MODELS = {
    "linear": [{"use": "linear_model.LogisticRegression", "params": {"optimizer": {"use": "optim.SGD", "args": [0.05]}}}],
    "hoeffding": [{"use": "tree.HoeffdingTreeClassifier", "params": {"grace_period": 100}}],
    "arf": [{"use": "forest.ARFClassifier", "params": {"n_models": 10, "seed": 1}}],
}
console = Console(stderr=True)
STALL_S = 60.0
"""Give up when the trainer learns nothing new for this long."""
POLL_MIN_S, POLL_MAX_S = 0.02, 0.5


@dataclass(frozen=True)
class Pace:
    """Events per second (wall clock) and CPU microseconds per event."""

    eps: float
    cpu_us: float


@dataclass
class Row:
    model: str
    events: int
    trainer_eps: float
    river_eps: float
    """The limit: the mean of the runs before and after the trainer (by time per event)."""
    trainer_cpu_us: float
    """The trainer process's CPU (user + system) per event learned, over the same window."""
    river_cpu_us: float
    trainer_cpu_share: float
    """The trainer's CPU time over the wall time of the window (1 = a whole core)."""
    river_before: Pace
    river_after: Pace
    loadavg: list[float]
    """1/5/15-minute load averages when the model's runs began."""
    versions: int = 0
    """Versions the trainer published while learning the events."""
    forked: int = 0
    """Of those, serialised in a forked child while learning went on."""

    @property
    def ratio(self) -> float:
        return self.trainer_eps / self.river_eps

    @property
    def cpu_ratio(self) -> float:
        # No CPU counted when one status read already saw every event learned (a short smoke run
        # on a busy host): no window to measure in.
        return self.river_cpu_us / self.trainer_cpu_us if self.trainer_cpu_us > 0 else math.nan

    def result(self) -> dict[str, object]:
        return {**asdict(self), "ratio": self.ratio, "cpu_ratio": self.cpu_ratio}


def spec_dict(model: str) -> dict:
    data = tomllib.loads(BASE_SPEC.read_text())
    data["model"] = {"name": f"bench-{model}", "preprocess": "auto", "steps": MODELS[model]}
    return data


def write_spec(model: str, folder: Path) -> Path:
    """A TOML spec for ``model`` (written by hand: tomllib only reads)."""
    base = BASE_SPEC.read_text().split("[model]")[0]
    steps = "".join(
        f"\n[[model.steps]]\nuse = \"{s['use']}\"\nparams = {json_to_toml(s.get('params', {}))}\n" for s in MODELS[model]
    )
    path = folder / f"{model}.toml"
    path.write_text(f"{base}[model]\nname = \"bench-{model}\"\npreprocess = \"auto\"\n{steps}")
    parse_app_spec(tomllib.loads(path.read_text()))
    return path


def json_to_toml(value: object) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {json_to_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(json_to_toml(v) for v in value) + "]"
    return json.dumps(value)


def river_limit(model: str, events: list) -> Pace:
    spec = parse_app_spec(spec_dict(model))
    data = [(to_model_input(spec, e.features), e.label) for e in events]
    evaluate.progressive_val_score(data[:500], build_model(spec), metrics.Accuracy())  # warm-up, not timed
    start, cpu = time.perf_counter(), time.process_time()
    evaluate.progressive_val_score(data, build_model(spec), metrics.Accuracy())
    return Pace(len(data) / (time.perf_counter() - start), (time.process_time() - cpu) / len(data) * 1e6)


async def fill_topic(bootstrap: str, topic: str, events: list) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for i, e in enumerate(events):
            if i % 100 == 0:  # as ingest writes them: one received_at per request of 100
                now = utcnow()
            event = EventReceived(id=e.id, features=e.features, label=e.label, timestamp=utcnow(), received_at=now)
            await producer.send(topic, event.to_bytes(), key=e.id.encode())
        await producer.flush()
    finally:
        await producer.stop()


def poll_interval(first: tuple[float, int, float] | None, now: float, seen: int, total: int) -> float:
    """How long to wait before the next status read: often around the first and the last
    example (they bound the window), seldom in between. Each read costs the trainer a status
    (metrics summarised, JSON, HTTP): at 50 reads a second that was ~5 % of its CPU."""
    if first is None or seen <= first[1]:
        return POLL_MIN_S
    rate = (seen - first[1]) / max(now - first[0], 1e-9)
    return min(max((total - seen) / rate / 3, POLL_MIN_S), POLL_MAX_S)


def trainer_rate(
    model: str, events: list, broker: KafkaBroker, redis: RedisServer, work: Path, progress: Progress, trainer_env: dict[str, str],
) -> tuple[Pace, float, dict]:
    """The trainer's pace from its first example learned to its last, its CPU share then, and
    its status at the end."""
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    spec_path = write_spec(model, work)
    topics = Topics.for_app(prefix, "fraud")
    asyncio.run(ensure_topics(KafkaSettings(bootstrap=broker.bootstrap), topics.all()))
    asyncio.run(fill_topic(broker.bootstrap, topics.events, events))
    port = free_port()
    env = suite_env(
        bootstrap=broker.bootstrap, idempotence=True, redis_url=redis.url,
        database_url=f"sqlite:///{work / (prefix + '.db')}", app_spec=spec_path, topic_prefix=prefix,
        extra={"STREAMWISE_LOG_LEVEL": "WARNING", **trainer_env},
    )
    suite = Suite(env, work / "logs", [s for s in service_specs({"trainer": port}) if s.name == "trainer"], cwd=ROOT)
    task = progress.add_task(f"trainer · {model}", total=len(events))
    suite.start("trainer")
    pid = suite.procs["trainer"].pid
    # One client for every poll: httpx.get() builds a client (and its TLS context) per call,
    # which cost this process ~40 % of a core at 50 polls a second, beside the trainer.
    client = httpx.Client(base_url=suite.url("trainer"), timeout=30, headers={"X-API-Key": "dev-api-key"})
    try:
        first: tuple[float, int, float] | None = None
        last_progress = (time.perf_counter(), -1)
        while True:
            status = client.get("/v1/status").json()
            seen = status["examples_seen"]
            now = time.perf_counter()
            progress.update(task, completed=seen)
            if seen != last_progress[1]:
                last_progress = (now, seen)
            elif now - last_progress[0] > STALL_S:
                raise RuntimeError(f"trainer stalled at {seen} of {len(events)} examples:\n{suite.log_tail('trainer')}")
            if seen and first is None:
                first = (now, seen, c.cpu_s(pid))
            if seen >= len(events):
                assert first is not None
                cpu, wall = c.cpu_s(pid) - first[2], max(now - first[0], 1e-9)
                learned = max(seen - first[1], 1)
                return Pace(learned / wall, cpu / learned * 1e6), cpu / wall, status
            time.sleep(poll_interval(first, now, seen, len(events)))
    finally:
        client.close()
        suite.stop()


def main(
    events: Annotated[int, typer.Option(help="Labelled events per model")] = 20_000,
    models: Annotated[str, typer.Option(help="Comma-separated: linear,hoeffding,arf")] = "linear,hoeffding,arf",
    smoke: Annotated[bool, typer.Option(help="Tiny run for CI")] = False,
    trainer_env: Annotated[list[str] | None, typer.Option(
        help="KEY=VALUE for the trainer's environment (repeatable), e.g. STREAMWISE_PUBLISH_EVERY_MS=1000")] = None,
) -> None:
    if smoke:
        events, models = 3000, "linear"
    stream = FraudStream(seed=3, drift_at=events // 2).take(events)
    env = dict(item.split("=", 1) for item in trainer_env or [])
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "kafka").mkdir()
        (work / "redis").mkdir()
        with KafkaBroker(work / "kafka") as broker, RedisServer(work / "redis") as redis, Progress(console=console) as progress:
            for model in models.split(","):
                loadavg = [round(x, 2) for x in os.getloadavg()]
                before = river_limit(model, stream)
                rate, share, status = trainer_rate(model, stream, broker, redis, work, progress, env)
                after = river_limit(model, stream)
                river_eps = 2 / (1 / before.eps + 1 / after.eps)
                rows.append(Row(
                    model, events, rate.eps, river_eps, rate.cpu_us, (before.cpu_us + after.cpu_us) / 2, share,
                    before, after, loadavg, status.get("version", 0), status.get("snapshots_forked", 0),
                ))
    table = Table(title=f"Learning throughput ({events:,} labelled events; load average {os.getloadavg()[0]:.2f} at the end)")
    columns = (
        "model", "trainer ev/s", "river in-process (limit) ev/s", "river before / after", "ratio",
        "trainer CPU µs/ev", "river CPU µs/ev", "cpu ratio", "trainer CPU share", "versions (forked)", "load at start",
    )
    for col in columns:
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r.model, f"{r.trainer_eps:,.0f}", f"{r.river_eps:,.0f}", f"{r.river_before.eps:,.0f} / {r.river_after.eps:,.0f}",
            f"{r.ratio:.2f}", f"{r.trainer_cpu_us:,.1f}", f"{r.river_cpu_us:,.1f}", f"{r.cpu_ratio:.2f}",
            f"{r.trainer_cpu_share:.2f}", f"{r.versions} ({r.forked})", " ".join(f"{x:.2f}" for x in r.loadavg),
        )
    Console(width=200).print(table)
    out = ROOT / "bench" / "results" / f"learning_throughput{'-smoke' if smoke else ''}.json"
    out.write_text(json.dumps([{**r.result(), "trainer_env": env, "host": c.host_info()} for r in rows], indent=2) + "\n")


if __name__ == "__main__":
    typer.run(main)
