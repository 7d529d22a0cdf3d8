"""Memory: RSS of each service at steady state, and how it and throughput change as the
stream grows tenfold.

The whole suite runs as real processes (ingest, trainer, predictor, webapp with their
production commands) on a private Kafka 4 broker and redis-server. The stream is sent in
stages that end at ``--events`` and ``--events × --growth`` events in total (5,000 then
50,000 by default): labelled demo transactions through ``POST /v1/events`` in JSON lists of
``--batch``, ``--senders`` requests at once, as fast as ingest acknowledges them. All along,
two closed-loop clients call ``POST /v1/predict`` and one web-app visitor keeps the live page's
event stream open and reloads the version history every second.

A stage ends when the trainer has learned every event sent and the predictor serves a
version that learned them; ``--settle`` seconds later the resident set size of each process
(with its children) is read with psutil: that is the steady-state figure. The first stage is
the baseline of the ratios, measured in the same run. Throughput per stage: ingest (events/s
acknowledged) and the trainer (events/s learned) over the stage's last ``--events / 2``
events, the same count in both stages, so the cold start of the first one stays out;
predictions/s and their p99 over the settle time, when nothing else runs.

    .venv/bin/python bench/memory.py            # 5,000 → 50,000 events
    .venv/bin/python bench/memory.py --smoke    # 300 → 3,000, for CI
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Annotated, Any

import _common as c
import _load
import httpx
import typer
from _common import console

from streamwise_core.adapters.modelstore import ModelStore

SERVICES = ("ingest", "trainer", "predictor", "webapp")
MODEL = "fraud-lr"


class Visitor:
    """One person on the web app: the live event stream open, the history reloaded every second."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events = 0
        self.pages = 0

    async def run(self) -> None:
        # Signed in with the development API key: since the web app has accounts, an anonymous
        # visitor only got the sign-in page and a 401 from the live stream.
        async with httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(10, read=None), headers=c.API_HEADERS) as client:
            await asyncio.gather(self._live(client), self._history(client))

    async def _live(self, client: httpx.AsyncClient) -> None:
        while True:
            try:
                async with client.stream("GET", "/api/v1/live") as r:
                    async for line in r.aiter_lines():
                        self.events += line.startswith("data:")
            except httpx.HTTPError:
                await asyncio.sleep(0.5)

    async def _history(self, client: httpx.AsyncClient) -> None:
        while True:
            try:
                for path in ("/", "/api/v1/models/versions"):
                    self.pages += (await client.get(path)).status_code == 200
            except httpx.HTTPError:
                pass
            await asyncio.sleep(1.0)


async def send_all(client: httpx.AsyncClient, url: str, bodies: list[bytes], senders: int) -> list[tuple[float, float]]:
    """POST every body, ``senders`` at a time: (time answered, latency ms) of each; any refusal is fatal."""
    pending = iter(bodies)
    answered: list[tuple[float, float]] = []
    headers = {**c.API_HEADERS, "content-type": "application/json"}

    async def sender() -> None:
        for body in pending:
            t = time.monotonic()
            (await client.post(f"{url}/v1/events", content=body, headers=headers)).raise_for_status()
            answered.append((time.monotonic(), (time.monotonic() - t) * 1000))

    await asyncio.gather(*(sender() for _ in range(senders)))
    return sorted(answered)


def crossing(samples: list[dict[str, float]], key: str, value: float) -> float:
    """When ``samples[key]`` reached ``value`` (linear between samples; nan if never)."""
    for a, b in zip(samples, samples[1:], strict=False):
        if a[key] < value <= b[key]:
            return a["t"] + (b["t"] - a["t"]) * (value - a[key]) / (b[key] - a[key])
    return math.nan


async def measure(svc: c.Services, redis_url: str, pids: dict[str, int], stages: list[list[bytes]], stage_events: list[int], *,
                  senders: int, settle_s: float, window: int, batch: int, progress: Any) -> dict[str, Any]:
    """Send each stage, wait until it is learned and served, settle, read RSS; throughput of
    ingest and the trainer over each stage's last ``window`` events (same size in every stage)."""
    window_requests = window // batch
    urls = {name: svc.url(name) for name in SERVICES}
    store = ModelStore.from_url(redis_url, svc.prefix, "fraud")
    features = _load.feature_pool()
    samples: list[dict[str, float]] = []
    t0 = time.monotonic()

    async def sample() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                try:
                    seen = (await c.trainer_status(client, urls["trainer"]))["examples_seen"]
                except httpx.HTTPError:
                    seen = math.nan
                samples.append({"t": time.monotonic() - t0, "examples_seen": seen, **{name: c.rss_mb(pid) for name, pid in pids.items()}})
                await asyncio.sleep(0.25)

    visitor = Visitor(urls["webapp"])
    helpers = [asyncio.create_task(sample()), asyncio.create_task(visitor.run())]
    rows = []
    total = sum(stage_events)
    task = progress.add_task("stream", total=total)
    limits = httpx.Limits(max_connections=senders, max_keepalive_connections=senders)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client, httpx.AsyncClient(timeout=10) as probe:
        sent = 0
        for k, (bodies, n) in enumerate(zip(stages, stage_events, strict=True)):
            deadline = _load._Deadline(math.inf)  # noqa: SLF001 - the load's shared stop time
            predictions = asyncio.create_task(_load.run_load(urls["predictor"], 2, deadline, features))
            started = time.monotonic()
            answered = await send_all(client, urls["ingest"], bodies, senders)
            ingested = time.monotonic()
            sent += n

            learned_at: list[float] = []

            async def learned(target: int = sent) -> bool:
                st = await c.trainer_status(probe, urls["trainer"])
                if st["examples_seen"] >= target and not learned_at:
                    learned_at.append(time.monotonic())
                progress.update(task, completed=st["examples_seen"],
                                description=f"stage {k + 1}: sent {target:,} · learned {st['examples_seen']:,}")
                meta = await c.served_meta(probe, urls["predictor"])
                return st["examples_seen"] >= target and meta is not None and meta["examples_seen"] >= target

            await c.wait_until(learned, 600, interval_s=0.2, what=f"{sent:,} events learned and served")
            done = time.monotonic()
            await asyncio.sleep(settle_s)
            deadline.value = time.monotonic()
            load = await predictions
            checkpoint = await store.load_checkpoint(MODEL)
            current = await store.current_version(MODEL)
            blob = await store.load(MODEL, current) if current is not None else None
            # Predictions at steady state: sent after the stage was learned and served.
            ok = [x * 1000 for t, x, s in zip(load.t_send, load.latency, load.status, strict=True) if s == 200 and t >= done]
            rows.append({
                "stage": k + 1, "events_total": sent, "events": n,
                "ingest_eps": window / (answered[-1][0] - answered[-1 - window_requests][0]),
                "ingest_request_ms": c.summary([ms for _, ms in answered]),
                "trainer_eps": window / (crossing(samples, "examples_seen", sent) - crossing(samples, "examples_seen", sent - window)),
                "stage_ingest_eps": n / (ingested - started), "stage_trainer_eps": n / (learned_at[0] - started),
                "predict_rps": len(ok) / (deadline.value - done),
                "predict_ms": c.summary(ok), "predict_failed": sum(1 for t, s in zip(load.t_send, load.status, strict=True) if s != 200 and t >= done),
                "rss_mb": {name: c.rss_mb(pid) for name, pid in pids.items()},
                "checkpoint_kb": len(checkpoint.blob) / 1e3 if checkpoint else math.nan,
                "model_kb": len(blob.blob) / 1e3 if blob else math.nan, "version": current,
                "t": [started - t0, ingested - t0, done - t0, deadline.value - t0],
            })
    for h in helpers:
        h.cancel()
    await asyncio.gather(*helpers, return_exceptions=True)
    await store.close()
    return {"stages": rows, "rss_timeline": samples, "visitor": {"live_events": visitor.events, "pages": visitor.pages}}


def report(result: dict[str, Any], meta: dict[str, Any]) -> None:
    first, *_, last = result["stages"]
    names = list(first["rss_mb"])
    rows = []
    for s in result["stages"]:
        rows.append([f"{s['events_total']:,}", s["ingest_eps"], s["trainer_eps"], s["predict_rps"], s["predict_ms"]["p99"],
                     *(s["rss_mb"][n] for n in names), s["checkpoint_kb"]])
    rows.append([f"ratio ({last['events_total'] // first['events_total']}×)",
                 *(c.ratio(last[k], first[k]) for k in ("ingest_eps", "trainer_eps", "predict_rps")),
                 c.ratio(last["predict_ms"]["p99"], first["predict_ms"]["p99"]),
                 *(c.ratio(last["rss_mb"][n], first["rss_mb"][n]) for n in names), c.ratio(last["checkpoint_kb"], first["checkpoint_kb"])])
    c.print_table(
        f"memory and throughput as the stream grows (labelled events in lists of {meta['batch']}, {meta['senders']} senders; "
        f"ingest and trainer ev/s over the last {meta['window_events']:,} events of each stage; RSS in MB at steady state)",
        ["events", "ingest ev/s", "trainer ev/s", "predict req/s", "predict p99 ms", *(f"{n} RSS" for n in names), "checkpoint KB"],
        rows,
    )


def main(
    events: Annotated[int | None, typer.Option(help="Events in the first stage (default 5,000, smoke 300)")] = None,
    growth: Annotated[int, typer.Option(help="The stream grows to this many times --events")] = 10,
    batch: Annotated[int, typer.Option(help="Events per POST /v1/events")] = 100,
    senders: Annotated[int, typer.Option(help="Requests to ingest at once")] = 4,
    settle: Annotated[float | None, typer.Option(help="Seconds after a stage is learned before RSS is read (default 3, smoke 1)")] = None,
    smoke: Annotated[bool, typer.Option(help="Tiny stream, for CI")] = False,
    keep_run_dir: c.KeepRunDir = False,
) -> None:
    """RSS of every service after N and growth × N events, with the throughput of each stage."""
    events = events or (300 if smoke else 5000)
    settle = settle if settle is not None else (1.0 if smoke else 3.0)
    items = c.labelled_events(events * growth, seed=17, run="mem")
    stage_items = [items[:events], items[events:]]
    window = max(batch, events // 2 // batch * batch)
    meta = {"events": events, "growth": growth, "batch": batch, "senders": senders, "settle_s": settle, "window_events": window}
    with c.infra(keep_run_dir=keep_run_dir) as infra, infra.services(list(SERVICES)) as svc, c.progress_bar() as progress:
        pids = {name: svc.pid(name) for name in SERVICES} | {"kafka": infra.broker.pid, "redis": infra.redis.pid}
        result = asyncio.run(measure(
            svc, infra.redis.url, pids, [[c.json_body(g) for g in c.chunks(s, batch)] for s in stage_items],
            [len(s) for s in stage_items], senders=senders, settle_s=settle, window=window, batch=batch, progress=progress))
    report(result, meta)
    console.print(f"web app visitor: {result['visitor']['live_events']} live events, {result['visitor']['pages']} pages")
    c.write_results("memory", smoke, {"host": c.host_info(), "settings": meta, **result})
    if any(s["predict_failed"] for s in result["stages"]):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
