"""Swaps under load: does hot-swapping model versions cost requests or tail latency?

Starts a private redis-server, a private Tansu broker and the predictor as a real process
(the suite's own command and environment), then runs N closed-loop HTTP clients (a separate
process) against ``POST /v1/predict`` through three phases of equal total length:

  steady       no swaps
  swap-small   the small linear model published every 100 ms
  swap-large   the large tree ensemble and the small model alternately, every ~1 s

The phases are interleaved in rounds (steady, swap-small, swap-large, steady, ...) so that
other load on the host weighs on all three alike. Versions are published straight into the
model store (``ModelStore.publish`` of signed ``codec.pack`` blobs), as the trainer does; a
task polls ``GET /v1/model`` to time each swap. Results go to a table and to
``bench/results/swap_under_load[-smoke].json``. See bench/README.md for what the numbers mean.

    .venv/bin/python bench/swap_under_load.py --smoke              # ~40 s, for CI
    .venv/bin/python bench/swap_under_load.py                      # full: 3 x 60 s
    .venv/bin/python bench/swap_under_load.py --predictor-env STREAMWISE_SWAP_LOAD_CPU_SHARE=1   # a predictor setting
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import os
import pickle
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))  # `_load` here and in the spawned load process

import _load  # noqa: E402
import httpx  # noqa: E402
import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from streamwise_core.adapters.modelstore import ModelStore  # noqa: E402
from streamwise_core.adapters.settings import Settings, Topics  # noqa: E402
from streamwise_core.contracts.signing import Signer  # noqa: E402
from streamwise_devstack import RedisServer, TansuBroker, create_topics, free_port  # noqa: E402
from streamwise_devstack.suite import Suite, service_specs, suite_env  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 150)
app = typer.Typer(add_completion=False)

PHASES = ("steady", "swap-small", "swap-large")


def predictor_spec(port: int) -> Any:
    """The suite's predictor command, unchanged."""
    [spec] = [s for s in service_specs({"predictor": port}) if s.name == "predictor"]
    return spec


async def wait_served(url: str, version: int, timeout_s: float = 60.0) -> float:
    """Seconds until ``GET /v1/model`` serves ``version`` or later."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        while time.monotonic() - started < timeout_s:
            r = await client.get("/v1/model")
            if r.status_code == 200 and r.json()["meta"]["version"] >= version:
                return time.monotonic() - started
            await asyncio.sleep(0.005)
    raise TimeoutError(f"version {version} not served after {timeout_s}s")


async def sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def run(
    *, url: str, redis_url: str, prefix: str, workers: int, duration: float, rounds: int, small_every: float, large_every: float,
    small: Any, small_seen: int, large: _load.LargeBlob, run_dir: Path, keep_versions: int,
) -> dict[str, Any]:
    signer = Signer(Settings().signing_key_map)
    _load.check_pack_parity(small, signer)
    store = ModelStore.from_url(redis_url, prefix, "fraud")
    pub = _load.Publisher(store, signer, small, small_seen, large, keep_versions=keep_versions)
    try:
        first = await pub.publish("small")
        await wait_served(url, first.version)
        # Warm-up: the first large load also imports what the trees need (scipy...): time it
        # apart, so the phases measure swaps, not one-off imports.
        cold = await pub.publish("large")
        cold_s = await wait_served(url, cold.version, timeout_s=120)
        back = await pub.publish("small")
        await wait_served(url, back.version)
        pub.publications.clear()

        stop = asyncio.Event()
        tracker = _load.SwapTracker(url, pub.publications)
        tracker_task = asyncio.create_task(tracker.run(stop))

        out_path = run_dir / "load.pkl"
        ctx = multiprocessing.get_context("spawn")
        ready, until = ctx.Event(), ctx.RawValue("d", math.inf)
        proc = ctx.Process(target=_load.load_process_main, args=(url, workers, str(out_path), ready, until), daemon=True)
        proc.start()
        while not ready.is_set():
            if not proc.is_alive():
                raise RuntimeError(f"load process exited with {proc.exitcode}")
            await asyncio.sleep(0.05)
        # Phases are interleaved in rounds (steady, swap-small, swap-large, steady, ...) so a
        # noisy neighbour on the host weighs on all three alike. After a swapping block the
        # last version must be served, plus a settle time, before the next block starts.
        block = duration / rounds
        schedule = [name for _ in range(rounds) for name in PHASES]
        spans: dict[str, list[tuple[float, float]]] = {name: [] for name in PHASES}
        marks: dict[str, dict[str, Any]] = {name: {"swaps": 0, "loadavg": []} for name in PHASES}
        total = len(schedule) * block
        progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console)
        with progress:
            bar = progress.add_task("warm-up", total=total)
            current = ["warm-up"]
            measured = [0.0]

            async def show() -> None:
                while not stop.is_set():
                    progress.update(bar, completed=measured[0], description=(
                        f"{current[0]:<10} published {len(pub.publications):>4}  serving v{tracker.served_version}  "
                        f"swaps {tracker.swaps}"))
                    await asyncio.sleep(0.25)

            shower = asyncio.create_task(show())
            await asyncio.sleep(2.0)  # warm-up: every client connected and answered
            for name in schedule:
                current[0] = name
                a = time.monotonic()
                b = a + block
                swaps_before = tracker.swaps or 0
                k = 0
                period = {"swap-small": small_every, "swap-large": large_every}.get(name)
                if period is not None:
                    while (t := a + k * period) < b:
                        await sleep_until(t)
                        done = await pub.publish("large" if name == "swap-large" and k % 2 == 0 else "small")
                        done.phase = name
                        k += 1
                while time.monotonic() < b:
                    await asyncio.sleep(min(0.1, b - time.monotonic()))
                    measured[0] = sum(y - x for sp in spans.values() for x, y in sp) + time.monotonic() - a
                spans[name].append((a, b))
                marks[name]["loadavg"].append(os.getloadavg()[0])
                current[0] = "settle"
                if pub.publications:
                    await wait_served(url, pub.publications[-1].version, timeout_s=120)
                await asyncio.sleep(0.3)
                marks[name]["swaps"] += (tracker.swaps or 0) - swaps_before
            until.value = time.monotonic()
            current[0] = "drain"
            while proc.is_alive():
                await asyncio.sleep(0.1)
            last = pub.publications[-1].version
            final_s = await wait_served(url, last, timeout_s=120)
            stop.set()
            await shower
            await tracker_task
        if proc.exitcode != 0:
            raise RuntimeError(f"load process exited with {proc.exitcode}")
        load: _load.LoadResult = pickle.loads(out_path.read_bytes())  # noqa: S301 - our own file
        return {
            "load": load, "spans": spans, "marks": marks, "pubs": list(pub.publications), "tracker": tracker,
            "cold_large_swap_s": cold_s, "last_version": last, "final_wait_s": final_s,
        }
    finally:
        await store.close()


def report(result: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    load: _load.LoadResult = result["load"]
    phases = []
    for name, spans in result["spans"].items():
        stats = _load.phase_stats(load, spans)
        mark = result["marks"][name]
        stats.update(phase=name, swaps=mark["swaps"], loadavg_1min=[round(x, 2) for x in mark["loadavg"]])
        phases.append(stats)
    steady, steady_rounds = phases[0]["p99_ms"], phases[0]["p99_round_median_ms"]
    for p in phases:
        p["p99_ratio"] = p["p99_ms"] / steady if steady else math.nan
        p["p99_round_median_ratio"] = p["p99_round_median_ms"] / steady_rounds if steady_rounds else math.nan

    table = Table(title=f"swaps under load: {meta['workers']} clients, {meta['duration_s']:g} s per phase "
                        f"in {meta['rounds']} interleaved rounds"
                        + "".join(f", {k}={v}" for k, v in meta.get("predictor_env", {}).items()))
    for col in ("phase", "requests", "failed", "req/s", "swaps", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "p99/p99 steady",
                "p99 per round (median)", "ratio", "longest gap ms"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for p in phases:
        table.add_row(
            p["phase"], f"{p['requests']:,}", str(p["failed"]), f"{p['rps']:.0f}", str(p["swaps"]),
            f"{p['p50_ms']:.1f}", f"{p['p99_ms']:.1f}", f"{p['p999_ms']:.1f}", f"{p['max_ms']:.1f}", f"{p['p99_ratio']:.2f}x",
            f"{p['p99_round_median_ms']:.1f}", f"{p['p99_round_median_ratio']:.2f}x", f"{p['longest_gap_ms']:.0f}",
        )
    console.print(table)

    pubs = result["pubs"]
    _load.resolve_swaps(pubs, load)
    swaps = _load.swap_stats(pubs)
    st = Table(title="swap latency: announcement → first evidence it is served (a GET /v1/model poll every 5 ms, or a prediction naming it)")
    for col in ("model", "pickle MB", "published", "served exactly", "skipped", "p50 ms", "p99 ms", "max ms", "Redis write p50 ms"):
        st.add_column(col, justify="left" if col == "model" else "right")
    for kind, s in swaps.items():
        st.add_row(kind, f"{s['mb']:.2f}", str(s["published"]), str(s["served_exactly"]), str(s["skipped"]),
                   f"{s['swap_p50_ms']:.0f}", f"{s['swap_p99_ms']:.0f}", f"{s['swap_max_ms']:.0f}", f"{s['publish_write_p50_ms']:.0f}")
    console.print(st)

    def during(name: str) -> list[_load.Publication]:
        return [p for p in pubs if any(a <= p.announced < b for a, b in result["spans"][name])]

    gaps_large = _load.stall_windows(load, during("swap-large"), "large")
    gaps_small_in_large = _load.stall_windows(load, during("swap-large"), "small")
    gaps_small = _load.stall_windows(load, during("swap-small"), "small")
    widths = sorted(p.served + 0.3 - p.announced for p in during("swap-large") if p.kind == "large" and p.served is not None)
    width = widths[len(widths) // 2] if widths else 1.0
    floor = _load.window_gaps(load, result["spans"]["steady"], width)
    stalls = {
        "steady_longest_gap_ms": phases[0]["longest_gap_ms"],
        "steady_window_gap_ms": {"p50": _load.percentile(floor, 50), "max": max(floor, default=math.nan), "n": len(floor), "window_s": width},
        "large_swap_gap_ms": {"p50": _load.percentile(gaps_large, 50), "max": max(gaps_large, default=math.nan), "n": len(gaps_large)},
        "small_in_swap_large_gap_ms": {
            "p50": _load.percentile(gaps_small_in_large, 50), "max": max(gaps_small_in_large, default=math.nan), "n": len(gaps_small_in_large),
        },
        "small_swap_gap_ms": {"p50": _load.percentile(gaps_small, 50), "max": max(gaps_small, default=math.nan), "n": len(gaps_small)},
    }
    console.print(
        "inferred server stalls (longest time no response completed, per swap window): "
        f"steady-phase windows of the same length ({width:.1f} s) p50 {stalls['steady_window_gap_ms']['p50']:.0f} / "
        f"max {stalls['steady_window_gap_ms']['max']:.0f} ms (noise floor); "
        f"large swap p50 {stalls['large_swap_gap_ms']['p50']:.0f} / max {stalls['large_swap_gap_ms']['max']:.0f} ms; "
        f"small swaps in swap-large p50 {stalls['small_in_swap_large_gap_ms']['p50']:.0f} / max {stalls['small_in_swap_large_gap_ms']['max']:.0f} ms; "
        f"small swap p50 {stalls['small_swap_gap_ms']['p50']:.0f} / max {stalls['small_swap_gap_ms']['max']:.0f} ms"
    )

    backwards = _load.versions_per_worker_monotonic(load)
    failed = sum(p["failed"] for p in phases)
    tracker = result["tracker"]
    ratio = phases[2]["p99_ratio"]
    console.print(
        f"failed requests: [{'green' if failed == 0 else 'red'}]{failed}[/]  "
        f"errors: {load.errors or 'none'}  versions going backwards: {sum(map(len, backwards.values()))}  "
        f"refused: {len(tracker.refused)}  last published v{result['last_version']} served "
        f"{result['final_wait_s'] * 1000:.0f} ms after the load stopped"
    )
    console.print(
        f"target p99(swap-large) ≤ 2× p99(steady): "
        f"{'[green]met' if ratio <= 2 else '[red]missed'}[/] ({ratio:.2f}×); "
        f"cold first large swap (imports included) {result['cold_large_swap_s'] * 1000:.0f} ms"
    )
    return {
        **meta,
        "phases": phases,
        "swap_latency": swaps,
        "stalls": stalls,
        "cold_large_swap_ms": result["cold_large_swap_s"] * 1000,
        "errors": load.errors,
        "versions_backwards": sum(map(len, backwards.values())),
        "refused": tracker.refused,
        "last_version": result["last_version"],
        "tracker_polls": tracker.polls,
        "target_p99_within_2x": ratio <= 2,
    }


@app.command()
def main(
    smoke: Annotated[bool, typer.Option(help="Short run for CI (~40 s): 6 s per phase, a >=12 MB ensemble")] = False,
    workers: Annotated[int, typer.Option(help="Concurrent closed-loop HTTP clients")] = 16,
    duration: Annotated[float | None, typer.Option(help="Seconds per phase in total (default 60, smoke 6)")] = None,
    rounds: Annotated[int | None, typer.Option(help="Interleaved rounds the phases are split into (default 6, smoke 2)")] = None,
    large_mb: Annotated[float | None, typer.Option(help="Train the ensemble until its pickle is at least this many MB (default 36, smoke 12)")] = None,
    n_models: Annotated[int, typer.Option(help="Trees in the ensemble")] = 6,
    small_every_ms: Annotated[float, typer.Option(help="swap-small: publish period")] = 100.0,
    large_every_ms: Annotated[float, typer.Option(help="swap-large: publish period (large and small alternate)")] = 1000.0,
    predictor_env: Annotated[list[str] | None, typer.Option(
        "--predictor-env", help="KEY=VALUE for the predictor's environment (repeatable), e.g. STREAMWISE_SWAP_LOAD_CPU_SHARE=1")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON results (default bench/results/swap_under_load[-smoke].json)")] = None,
    keep_run_dir: Annotated[bool, typer.Option(help="Keep logs of the private servers")] = False,
) -> None:
    """Run the three phases against a private predictor and report latency with and without swaps."""
    extra_env = dict(kv.split("=", 1) for kv in predictor_env or [])
    duration = duration or (6.0 if smoke else 60.0)
    rounds = rounds or (2 if smoke else 6)
    large_mb = large_mb or (12.0 if smoke else 36.0)
    spec = _load.app_spec()
    loadavg_before = os.getloadavg()

    with console.status("training the small model"):
        small, small_seen = _load.train_small(spec)
    with console.status(f"large ensemble (≥ {large_mb:g} MB, cached in {_load.CACHE_DIR})") as status:
        large = _load.large_blob(spec, large_mb, n_models, progress=lambda n, mb: status.update(
            f"training the large ensemble: {n:,} examples, {mb:.1f} MB of ≥ {large_mb:g}"))
    t = time.perf_counter()
    large_model = pickle.loads(large.blob)  # noqa: S301 - our own cache
    load_s = time.perf_counter() - t
    costs = {"small_us": _load.predict_cost_us(small, spec), "large_us": _load.predict_cost_us(large_model, spec)}
    del large_model
    small_mb = len(pickle.dumps(small, protocol=pickle.HIGHEST_PROTOCOL)) / 1e6
    console.print(
        f"small: {small_mb * 1000:.1f} KB pickled, predict {costs['small_us']:.0f} µs | "
        f"large: {large.mb:.1f} MB pickled ({large.n_models} trees, {large.examples_seen:,} examples, "
        f"{'cached' if large.cached else f'trained in {large.train_s:.0f} s'}), bare pickle.loads {load_s * 1000:.0f} ms, "
        f"predict {costs['large_us']:.0f} µs"
    )

    run_dir = Path(tempfile.mkdtemp(prefix="streamwise-bench-"))
    redis = RedisServer(run_dir / "redis")
    broker = TansuBroker(run_dir / "tansu")
    suite: Suite | None = None
    try:
        with console.status("starting redis-server, Tansu and the predictor"):
            redis.start()
            broker.start()
            prefix = f"bench{uuid.uuid4().hex[:8]}"
            asyncio.run(create_topics(broker.bootstrap, [Topics.for_app(prefix, "fraud").predictions]))
            env = suite_env(
                bootstrap=broker.bootstrap, idempotence=False, redis_url=redis.url,
                database_url=f"sqlite:///{run_dir / 'registry.db'}", app_spec=_load.APP_SPEC, topic_prefix=prefix,
                extra=extra_env,
            )
            suite = Suite(env, run_dir / "logs", [predictor_spec(free_port())], cwd=_load.ROOT)
            suite.start("predictor")
        result = asyncio.run(run(
            url=suite.url("predictor"), redis_url=redis.url, prefix=prefix, workers=workers, duration=duration,
            rounds=rounds, small_every=small_every_ms / 1000, large_every=large_every_ms / 1000, small=small, small_seen=small_seen,
            large=large, run_dir=run_dir, keep_versions=16,
        ))
    finally:
        if suite is not None:
            suite.stop()
        broker.stop()
        redis.stop()
        if not keep_run_dir:
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            console.print(f"logs kept in {run_dir}")

    meta = {
        "smoke": smoke, "workers": workers, "duration_s": duration, "rounds": rounds, "predictor_env": extra_env,
        "small_every_ms": small_every_ms, "large_every_ms": large_every_ms,
        "models": {
            "small": {"pickle_mb": small_mb, "predict_us": costs["small_us"], "examples_seen": small_seen},
            "large": {"pickle_mb": large.mb, "predict_us": costs["large_us"], "n_models": large.n_models,
                      "examples_seen": large.examples_seen, "bare_loads_ms": load_s * 1000,
                      "train_s": large.train_s, "cached": large.cached},
        },
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_before": loadavg_before},
    }
    summary = report(result, meta)
    out = out or BENCH_DIR / "results" / f"swap_under_load{'-smoke' if smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    console.print(f"results written to {out}")
    failed = sum(p["failed"] for p in summary["phases"])
    if failed or summary["versions_backwards"]:
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
