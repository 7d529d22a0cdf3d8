"""What the speed benchmarks share: private servers and services, payloads, statistics, output.

``bench/freshness.py``, ``serving.py``, ``ingest_throughput.py`` and ``memory.py`` each start a
private Apache Kafka (devstack ``KafkaBroker``, KRaft) and ``redis-server`` on 127.0.0.1, then
the services they measure as real processes with exactly their production commands
(``service_specs``) and environment (``suite_env``), each set on its own topic prefix.
Everything runs in a temp dir and is stopped by pid when the ``with`` block ends.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))  # `_load` here and in spawned processes

import httpx  # noqa: E402
import psutil  # noqa: E402
import typer  # noqa: E402
from _load import ROOT, percentile  # noqa: E402
from aiokafka.errors import KafkaError  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from streamwise_core.adapters.settings import DEV_API_KEY, Topics  # noqa: E402
from streamwise_core.contracts.events import EventReceived, utcnow  # noqa: E402
from streamwise_devstack import KafkaBroker, RedisServer, create_topics, free_port  # noqa: E402
from streamwise_devstack.fraud import FraudStream  # noqa: E402
from streamwise_devstack.suite import ServiceSpec, Suite, service_specs, suite_env  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
API_HEADERS = {"X-API-Key": DEV_API_KEY}
APP_SPEC = ROOT / "examples" / "fraud" / "streamwise.toml"
console = Console(width=None if sys.stdout.isatty() else 160)

# Options every benchmark here takes (typer).
Smoke = Annotated[bool, typer.Option(help="A run of a few seconds (after the servers start), for CI")]
KeepRunDir = Annotated[bool, typer.Option(help="Keep the servers' logs")]
Block = Annotated[float | None, typer.Option(help="Seconds per target and mode in each round (default 5, smoke 1.5)")]
Rounds = Annotated[int | None, typer.Option(help="Interleaved rounds (default 4, smoke 1)")]
Profile = Annotated[Path | None, typer.Option(
    help="After the measured rounds, one more block per target process and mode under py-spy: "
         "raw stacks and a summary of the hottest functions land in this directory")]


# ----------------------------------------------------------------------------------- servers


@dataclass
class Services:
    """Services of one ``Infra.services`` block: a Suite on a fresh topic prefix."""

    suite: Suite
    prefix: str
    topics: Topics
    env: dict[str, str]

    def url(self, name: str) -> str:
        return self.suite.url(name)

    def pid(self, name: str) -> int:
        return self.suite.procs[name].pid


@dataclass
class Infra:
    """A private Kafka broker and redis-server, and the temp dir everything writes to."""

    run_dir: Path
    broker: KafkaBroker
    redis: RedisServer
    partitions: int = 1

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def create_topics(self, names: list[str]) -> None:
        asyncio.run(create_topics(self.bootstrap, names, self.partitions))

    @contextmanager
    def services(
        self, names: Sequence[str], *, extra_env: dict[str, str] | None = None, extra_specs: Sequence[ServiceSpec] = (),
        app_spec: Path = APP_SPEC, database_url: str | None = None,
    ) -> Iterator[Services]:
        """Start ``names`` (and ``extra_specs``) on a fresh topic prefix; stop them afterwards. The registry is
        ``database_url``, by default a fresh SQLite file ``<run dir>/<prefix>.db``."""
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        topics = Topics.for_app(prefix, "fraud")
        self.create_topics(topics.all())
        env = suite_env(
            bootstrap=self.bootstrap, idempotence=True, redis_url=self.redis.url,
            database_url=database_url or f"sqlite:///{self.run_dir / (prefix + '.db')}", app_spec=app_spec, topic_prefix=prefix,
            extra={
                "STREAMWISE_LOG_LEVEL": "WARNING",
                "STREAMWISE_DATA_DIR": str(self.run_dir / prefix / "trainer"),
                "STREAMWISE_KAFKA__PARTITIONS": str(self.partitions),
                **(extra_env or {}),
            },
        )
        ports = {name: free_port() for name in names}
        specs = [s for s in service_specs(ports) if s.name in names] + list(extra_specs)
        suite = Suite(env, self.run_dir / "logs" / prefix, specs, cwd=ROOT)
        try:
            suite.start()
            yield Services(suite, prefix, topics, env)
        finally:
            suite.stop()


@contextmanager
def infra(*, keep_run_dir: bool = False, partitions: int = 1, broker_config: dict[str, str] | None = None) -> Iterator[Infra]:
    """A private Apache Kafka 4 (KRaft) and redis-server on 127.0.0.1, stopped afterwards; ``broker_config``
    adds to (or overrides) the broker's server.properties."""
    run_dir = Path(tempfile.mkdtemp(prefix="streamwise-bench-"))
    try:
        with console.status("starting Kafka (KRaft) and redis-server"):
            broker = KafkaBroker(run_dir / "kafka", extra_config=broker_config)
            redis = RedisServer(run_dir / "redis")
            broker.start()
        try:
            redis.start()
            yield Infra(run_dir, broker, redis, partitions)
        finally:
            redis.stop()
            broker.stop()
    finally:
        if keep_run_dir:
            console.print(f"logs kept in {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


def uvicorn_spec_like(base: str, name: str, app_factory: str, port: int, env: dict[str, str]) -> ServiceSpec:
    """A uvicorn server started exactly like the service ``base`` (same options), serving
    ``app_factory`` from ``bench/`` instead: the bare endpoints the services are compared with."""
    [spec] = [s for s in service_specs({base: port}) if s.name == base]
    argv = tuple(app_factory if a.endswith(":create_app") else a for a in spec.argv)
    return ServiceSpec(name, (*argv, "--app-dir", str(BENCH_DIR)), port, env=tuple(env.items()))


# ----------------------------------------------------------------------------------- payloads


def labelled_events(n: int, *, seed: int = 11, run: str = "bench") -> list[dict[str, Any]]:
    """``n`` demo transactions as ingest takes them: id, features and the label along."""
    return [{"id": e.id, "features": e.features, "label": e.label}
            for e in FraudStream(seed, drift_at=max(n // 2, 1), run_id=run).take(n)]


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[k:k + size] for k in range(0, len(items), size)]


def json_body(items: Sequence[dict[str, Any]]) -> bytes:
    return json.dumps(list(items), separators=(",", ":")).encode()


def ndjson_body(items: Sequence[dict[str, Any]]) -> bytes:
    return b"\n".join(json.dumps(item, separators=(",", ":")).encode() for item in items)


def kafka_value(item: dict[str, Any]) -> bytes:
    """The bytes ingest writes to Kafka for ``item`` (an ``EventReceived``)."""
    return EventReceived(id=item["id"], features=item["features"], label=item.get("label"), timestamp=utcnow()).to_bytes()


# ----------------------------------------------------------------------------------- statistics


def summary(values: Sequence[float]) -> dict[str, float]:
    """Count, p50/p90/p99/max and mean of ``values`` (nearest rank; nan when empty)."""
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
        "mean": sum(values) / len(values) if values else math.nan,
    }


def cdf_points(values: Sequence[float], step: float = 0.5) -> list[list[float]]:
    """[percentile, value] every ``step`` percent (and p99.9): enough to draw a CDF."""
    if not values:
        return []
    qs = [k * step for k in range(1, int(100 / step) + 1)] + [99.9]
    return [[q, percentile(values, q)] for q in sorted(set(qs))]


def histogram(values: Sequence[float], bin_width: float) -> list[list[float]]:
    """[left edge, count] of the finite ``values`` in bins of ``bin_width``."""
    counts: dict[int, int] = {}
    for v in values:
        if math.isfinite(v):
            counts[math.floor(v / bin_width)] = counts.get(math.floor(v / bin_width), 0) + 1
    return [[k * bin_width, counts[k]] for k in sorted(counts)]


def per_second(done: Sequence[float], latency_ms: Sequence[float], t0: float, weight: Sequence[float] | None = None) -> list[dict[str, float]]:
    """Throughput and latency in one-second buckets of completion time since ``t0``:
    ``rate`` counts ``weight`` (default 1 per row) per second."""
    buckets: dict[int, list[int]] = {}
    for k, t in enumerate(done):
        buckets.setdefault(int(t - t0), []).append(k)
    out = []
    for second in sorted(buckets):
        rows = buckets[second]
        lat = [latency_ms[k] for k in rows]
        out.append({
            "t": second, "rate": sum(weight[k] for k in rows) if weight is not None else len(rows),
            "p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
        })
    return out


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


# ----------------------------------------------------------------------------------- output


def host_info() -> dict[str, Any]:
    return {
        "date": date.today().isoformat(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def write_results(name: str, smoke: bool, data: dict[str, Any]) -> Path:
    """``bench/results/<name>[-smoke].json``."""
    out = RESULTS_DIR / f"{name}{'-smoke' if smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1, default=str) + "\n")
    console.print(f"results written to {out.relative_to(ROOT)}")
    return out


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title)
    for k, col in enumerate(columns):
        table.add_column(col, justify="left" if k == 0 else "right")
    for row in rows:
        table.add_row(*(fmt(v) for v in row))
    console.print(table)


def fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def progress_bar() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console)


# ----------------------------------------------------------------------------------- helpers


@dataclass
class Ticker:
    """Open-loop schedule: the k-th send is due at ``start + k / per_s``."""

    per_s: float
    start: float = field(default_factory=time.monotonic)

    def due(self, k: int) -> float:
        return self.start + k / self.per_s

    async def wait(self, k: int) -> float:
        """Sleep until send ``k`` is due; return how late we are (s) when it is sent."""
        delay = self.due(k) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        return max(0.0, time.monotonic() - self.due(k))


async def trainer_status(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    r = await client.get(f"{url}/v1/status", headers=API_HEADERS)
    r.raise_for_status()
    return r.json()


async def served_meta(client: httpx.AsyncClient, url: str) -> dict[str, Any] | None:
    """The predictor's served version's meta, None before it serves one."""
    r = await client.get(f"{url}/v1/model")
    return r.json()["meta"] if r.status_code == 200 else None


async def wait_until(check: Any, timeout_s: float, interval_s: float = 0.05, what: str = "condition") -> Any:
    """Await ``check()`` until it returns something truthy; TimeoutError past ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = await check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s:.0f}s")
        await asyncio.sleep(interval_s)


@dataclass
class OpenLoop:
    """Times of an open-loop run: when each send was due, sent and answered, and whether it succeeded."""

    due: list[float]
    sent: list[float]
    done: list[float]
    ok: list[bool]

    @property
    def late_ms(self) -> list[float]:
        return [(s - d) * 1000 for s, d in zip(self.sent, self.due, strict=True)]


async def open_loop(send: Any, n: int, per_s: float, *, max_in_flight: int = 64) -> OpenLoop:
    """Call ``await send(k)`` (truthy: success) for k in 0..n-1 at a fixed rate, without waiting
    for earlier calls to finish (up to ``max_in_flight`` at once; beyond that a send is late, and
    ``late_ms`` says by how much)."""
    out = OpenLoop([math.nan] * n, [math.nan] * n, [math.nan] * n, [False] * n)
    slots = asyncio.Semaphore(max_in_flight)
    ticker = Ticker(per_s)

    async def one(k: int) -> None:
        try:
            out.ok[k] = bool(await send(k))
        except (httpx.HTTPError, KafkaError, OSError, TimeoutError):
            out.ok[k] = False
        finally:
            out.done[k] = time.monotonic()
            slots.release()

    tasks = []
    for k in range(n):
        await ticker.wait(k)
        await slots.acquire()
        out.due[k], out.sent[k] = ticker.due(k), time.monotonic()
        tasks.append(asyncio.create_task(one(k)))
    await asyncio.gather(*tasks)
    return out


# ----------------------------------------------------------------------------------- A/B load


def ab_settings(*, workers: int, batch: int, block: float | None, rounds: int | None, smoke: bool) -> dict[str, Any]:
    """Settings of an ``interleaved`` run, with the defaults of a full and of a smoke run."""
    return {"workers": workers, "batch": batch, "block_s": block or (1.5 if smoke else 5.0), "rounds": rounds or (1 if smoke else 4),
            "warmup_s": 0.5 if smoke else 1.0}


def _tree(pid: int) -> list[psutil.Process]:
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its children, those running and
    those that ended (the trainer serialises large models in short-lived forked children)."""
    return sum(sum(p.cpu_times()[:4]) for p in _tree(pid))


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` and its children, MB; nan if it is gone."""
    try:
        return sum(p.memory_info().rss for p in _tree(pid)) / 1e6
    except psutil.Error:
        return math.nan


async def interleaved(
    run: Any, modes: Sequence[str], targets: Sequence[str], settings: dict[str, Any], *, progress: Any, pids: dict[str, int] | None = None,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Closed-loop load on each target in each mode, interleaved in rounds (targets in turn
    first) so that other load on the host weighs on all alike. ``await run(mode, target, until)``
    returns an ``_load.LoadResult``. Returns the merged results, the time spans of each block
    and the time origin, and the CPU time each target process in ``pids`` used in its blocks.
    ``settings``: see ``ab_settings``. With ``profile``, one more (unmeasured) block per target
    in ``pids`` and mode runs under py-spy afterwards (``profiled``)."""
    from _load import LoadResult

    rounds, block_s, warmup_s = settings["rounds"], settings["block_s"], settings["warmup_s"]
    for mode in modes:
        for target in targets:
            await run(mode, target, time.monotonic() + warmup_s)
    loads = {(m, t): LoadResult() for m in modes for t in targets}
    spans: dict[tuple[str, str], list[tuple[float, float]]] = {k: [] for k in loads}
    cpu = dict.fromkeys(loads, 0.0)
    pids = pids or {}
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)  # fail before the rounds, not after
        _py_spy()
    task = progress.add_task("load", total=rounds * len(modes) * len(targets))
    t0 = time.monotonic()
    for r in range(rounds):
        for mode in modes:
            for target in targets if r % 2 == 0 else targets[::-1]:
                progress.update(task, description=f"round {r + 1}/{rounds} · {mode} · {target}")
                used = cpu_s(pids[target]) if target in pids else math.nan
                a = time.monotonic()
                loads[mode, target].extend(await run(mode, target, a + block_s))
                spans[mode, target].append((a, time.monotonic()))
                cpu[mode, target] += (cpu_s(pids[target]) if target in pids else math.nan) - used
                progress.advance(task)
    if profile is not None:
        for mode in modes:
            for target, pid in pids.items():
                progress.update(task, description=f"py-spy · {mode} · {target}")
                await profiled(run(mode, target, time.monotonic() + block_s), pid, profile / f"{mode}-{target}", block_s)
    return {"loads": loads, "spans": spans, "t0": t0, "cpu_s": cpu}


# ----------------------------------------------------------------------------------- profiles


def _py_spy() -> str:
    found = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if found is None:
        raise typer.BadParameter("py-spy is not installed (pip install py-spy)")
    return found


async def profiled(load: Any, pid: int, out: Path, seconds: float, rate: int = 200) -> None:
    """Await ``load`` while py-spy samples ``pid`` (a process this run started, passed by pid:
    never looked up by name) for ``seconds``, counting only samples that hold the GIL (CPU
    spent in Python, not waits in the event loop or in idle worker threads); write ``out.txt`` (raw collapsed stacks, one
    ``frame;frame;... count`` per line) and ``out.top.txt`` (``profile_summary``)."""
    raw = out.with_suffix(".txt")
    spy = await asyncio.create_subprocess_exec(
        _py_spy(), "record", "--pid", str(pid), "--gil", "--format", "raw", "--rate", str(rate), "--duration", str(max(1, int(seconds))),
        "--output", str(raw), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    await load
    await spy.wait()
    if raw.exists():
        cmdline = " ".join(psutil.Process(pid).cmdline())
        out.with_suffix(".top.txt").write_text(f"pid {pid}: {cmdline}\n" + profile_summary(raw))


def profile_summary(raw: Path, top: int = 40) -> str:
    """The functions with the largest share of samples from a py-spy raw file: inclusive (on
    the stack) and self (innermost frame), in percent of all samples."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(f) for f in stack.split(";")]
        for name in set(frames):
            inclusive[name] = inclusive.get(name, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    lines = [f"{total} samples"]
    for title, table in (("inclusive", inclusive), ("self", own)):
        lines.append(f"-- {title} % --")
        for name, n in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"{100 * n / max(total, 1):6.1f}  {name}")
    return "\n".join(lines) + "\n"


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` → ``func (file.py)``: one name per function, not per line."""
    func, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{func} ({'/'.join(path.split('/')[-2:])})"


def load_rows(result: dict[str, Any], per_request: dict[str, int], ok: int = 200) -> dict[str, dict[str, Any]]:
    """Per ``mode/target``: requests, failures, requests/s, items/s (``per_request`` items per
    request of a mode), latency summary and per-second timeline of an ``interleaved`` run."""
    rows = {}
    t0 = result["t0"]
    for (mode, target), load in result["loads"].items():
        spans = result["spans"][mode, target]
        seconds = sum(b - a for a, b in spans)
        good = [k for k, s in enumerate(load.status) if s == ok]
        lat = [load.latency[k] * 1000 for k in good]
        rows[f"{mode}/{target}"] = {
            "mode": mode, "target": target, "per_request": per_request[mode], "requests": len(load.status),
            "failed": len(load.status) - len(good), "errors": load.errors, "seconds": seconds,
            "rps": len(good) / seconds, "items_per_s": len(good) * per_request[mode] / seconds, "latency_ms": summary(lat),
            "server_cpu_s": result["cpu_s"][mode, target],
            "server_cpu_ms_per_item": result["cpu_s"][mode, target] * 1000 / (len(good) * per_request[mode]) if good else math.nan,
            "timeline": per_second([load.t_send[k] + load.latency[k] for k in good], lat, t0),
            "spans": [[a - t0, b - t0] for a, b in spans],
        }
    return rows


def ab_tables(rows: dict[str, dict[str, Any]], modes: Sequence[str], ours: str, base: str, unit: str) -> tuple[list[list[Any]], list[list[Any]]]:
    """Per mode, ours vs base: throughput (with the server CPU per item, where it is known) and
    latency, with ratios (ours / base, and base / ours for CPU so that above 1 is better for both).
    Each table is its header row, then one row per mode."""
    throughput: list[list[Any]] = [["mode", f"{ours} {unit}", f"{base} {unit}", "throughput ratio", f"{ours} CPU µs/item",
                                    f"{base} CPU µs/item", "CPU efficiency ratio", "failed"]]
    latency: list[list[Any]] = [["mode", "p50 ms", f"{base} p50 ms", "p50 ratio", "p99 ms", f"{base} p99 ms", "p99 ratio"]]
    for mode in modes:
        a, b = rows[f"{mode}/{ours}"], rows[f"{mode}/{base}"]
        name = f"{mode} ({a['per_request']} per request)"
        cpu_a, cpu_b = a["server_cpu_ms_per_item"] * 1000, b["server_cpu_ms_per_item"] * 1000
        throughput.append([name, a["items_per_s"], b["items_per_s"], ratio(a["items_per_s"], b["items_per_s"]), cpu_a, cpu_b,
                           ratio(cpu_b, cpu_a), a["failed"] + b["failed"]])
        la, lb = a["latency_ms"], b["latency_ms"]
        latency.append([name, la["p50"], lb["p50"], ratio(la["p50"], lb["p50"]), la["p99"], lb["p99"], ratio(la["p99"], lb["p99"])])
    return throughput, latency


def report_ab(title: str, rows: dict[str, dict[str, Any]], modes: Sequence[str], ours: str, base: str, unit: str, target: float) -> None:
    """Print ``ab_tables`` and, per mode, whether the throughput ratio meets ``target``."""
    throughput, latency = ab_tables(rows, modes, ours, base, unit)
    print_table(f"{title}: throughput", throughput[0], throughput[1:])
    print_table(f"{title}: latency per request", latency[0], latency[1:])
    for row in throughput[1:]:
        console.print(f"target throughput ≥ {target:g} × {base}, {row[0]}: {'[green]met' if row[3] >= target else '[red]missed'}[/] ({row[3]:.2f})")
