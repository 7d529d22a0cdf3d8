"""Helpers shared by ``bench/swap_under_load.py`` and ``tests/e2e/test_swaps_under_load.py``.

Models (a small linear pipeline and a large bagged Hoeffding-tree ensemble, cached on disk),
publishing signed versions straight into the model store, a closed-loop HTTP load generator,
a swap-latency tracker that polls ``GET /v1/model``, and the statistics of a run.
Nothing here measures anything by itself; the callers decide what is timed.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import json
import math
import os
import pickle
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import httpx
import orjson
import river

from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.contracts.appspec import AppSpec, ModelSpec, StepSpec, load_app_spec
from streamwise_core.contracts.codec import ModelMeta, SignedBlob, dumps, pack, unpack
from streamwise_core.contracts.schema import to_model_input
from streamwise_core.contracts.signing import Signer
from streamwise_core.domain.pipeline import build_model
from streamwise_devstack.fraud import FraudStream

ROOT = Path(__file__).resolve().parents[1]
APP_SPEC = ROOT / "examples" / "fraud" / "streamwise.toml"
MODEL = "fraud-lr"
"""Every version is published under the demo spec's model name, whatever its structure."""
CACHE_DIR = Path(os.environ.get("STREAMWISE_BENCH_CACHE", Path(tempfile.gettempdir()) / "streamwise-bench"))


# ----------------------------------------------------------------------------------- models


def app_spec() -> AppSpec:
    return load_app_spec(APP_SPEC)


def train_small(spec: AppSpec, n_events: int = 3000, seed: int = 5) -> tuple[Any, int]:
    """The demo's own pipeline (``build_model(spec)``: scaler + one-hot + logistic regression)."""
    model = build_model(spec)
    for event in FraudStream(seed, drift_at=10**9, run_id="bench-small").take(n_events):
        model.learn_one(to_model_input(spec, event.features), event.label)
    return model, n_events


def large_model_spec(n_models: int, seed: int = 7) -> ModelSpec:
    """A bagged Hoeffding-tree ensemble behind the same automatic preprocessing as the demo.

    ``leaf_prediction="mc"`` keeps prediction cheap (majority class per leaf), so serving it
    costs about what the linear model costs and the swap itself is what a benchmark sees.
    """
    tree = {"use": "tree.HoeffdingTreeClassifier",
            "params": {"grace_period": 50, "delta": 0.01, "leaf_prediction": "mc"}}
    step = {"use": "ensemble.BaggingClassifier", "params": {"model": tree, "n_models": n_models, "seed": seed}}
    return ModelSpec(name=MODEL, preprocess="auto", steps=(StepSpec.model_validate(step),))


@dataclass(frozen=True)
class LargeBlob:
    blob: bytes
    """The pickled ensemble, exactly what ``codec.pack`` would pickle."""
    examples_seen: int
    n_models: int
    train_s: float
    cached: bool
    path: Path

    @property
    def mb(self) -> float:
        return len(self.blob) / 1e6


def large_blob(
    spec: AppSpec, min_mb: float, n_models: int = 6, seed: int = 7, *,
    chunk: int = 2000, progress: Callable[[int, float], None] | None = None,
) -> LargeBlob:
    """Train the ensemble on the demo stream until its pickle is at least ``min_mb`` MB.

    The pickle is cached in ``CACHE_DIR`` (per river/python version and parameters), so
    only the first run pays for training. ``progress(examples, mb)`` is called per check.
    """
    import platform

    key = f"bag{n_models}-min{min_mb:g}mb-s{seed}-river{river.__version__}-py{platform.python_version()}"
    path = CACHE_DIR / f"large-{key}.pkl"
    sidecar = path.with_suffix(".json")
    if path.exists() and sidecar.exists():
        info = json.loads(sidecar.read_text())
        blob = path.read_bytes()
        if hashlib.sha256(blob).hexdigest() == info.get("sha256"):
            return LargeBlob(blob, info["examples_seen"], n_models=n_models, train_s=info["train_s"], cached=True, path=path)
    started = time.perf_counter()
    model = build_model(spec, large_model_spec(n_models, seed))
    stream = FraudStream(seed, drift_at=10**9, run_id="bench-large")
    seen = 0
    while True:
        for event in stream.take(chunk):
            model.learn_one(to_model_input(spec, event.features), event.label)
        seen += chunk
        blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        if progress is not None:
            progress(seen, len(blob) / 1e6)
        if len(blob) >= min_mb * 1e6:
            break
    train_s = time.perf_counter() - started
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(blob)
    tmp.replace(path)
    sidecar.write_text(json.dumps({"examples_seen": seen, "train_s": train_s, "sha256": hashlib.sha256(blob).hexdigest()}))
    return LargeBlob(blob, seen, n_models=n_models, train_s=train_s, cached=False, path=path)


def predict_cost_us(model: Any, spec: AppSpec, n: int = 300) -> float:
    """Mean in-process ``predict_proba_one`` time, to tell serving cost from swap cost."""
    xs = [to_model_input(spec, e.features) for e in FraudStream(31, run_id="cost").take(n)]
    started = time.perf_counter()
    for x in xs:
        model.predict_proba_one(x)
    return (time.perf_counter() - started) / n * 1e6


# ----------------------------------------------------------------------------------- publishing


def pack_pickled(blob: bytes, meta: ModelMeta, signer: Signer) -> SignedBlob:
    """``codec.pack`` for a model that is already pickled (re-pickling tens of MB per version
    would only burn the publisher's CPU). ``check_pack_parity`` proves it is the same bytes."""
    meta = meta.model_copy(update={"blob_sha256": hashlib.sha256(blob).hexdigest()})
    meta_bytes = meta.model_dump_json().encode()
    return SignedBlob(meta_bytes, blob, signer.sign(meta_bytes, blob))


def check_pack_parity(model: Any, signer: Signer) -> None:
    """``pack_pickled(codec.dumps(m))`` must equal ``codec.pack(m)`` and pass ``codec.unpack``."""
    meta = ModelMeta(app="fraud", model=MODEL, version=1, task="binary", examples_seen=0)
    ours = pack_pickled(dumps(model), meta, signer)
    theirs = pack(model, meta, signer)
    if ours != theirs:
        raise AssertionError("pack_pickled diverged from codec.pack")
    unpack(ours, signer)


@dataclass
class Publication:
    version: int
    kind: str
    mb: float
    started: float
    """time.monotonic() when ModelStore.publish was called."""
    announced: float = 0.0
    """time.monotonic() when it returned: blob stored, pointer moved, announcement sent."""
    served: float | None = None
    """First time GET /v1/model showed this version (or a later one)."""
    exact: bool = False
    """True when this exact version was seen being served (not skipped over)."""
    phase: str = ""

    @property
    def swap_s(self) -> float | None:
        return None if self.served is None else self.served - self.announced


class Publisher:
    """Publishes numbered versions of the small and the large model, the way the trainer does."""

    def __init__(self, store: ModelStore, signer: Signer, small: Any, small_seen: int, large: LargeBlob | None,
                 *, first_version: int = 1, keep_versions: int | None = None) -> None:
        self.store = store
        self.signer = signer
        self.small = small
        self.small_seen = small_seen
        self.large = large
        self.next_version = first_version
        self.keep_versions = keep_versions
        self.publications: list[Publication] = []
        self.small_mb = len(pickle.dumps(small, protocol=pickle.HIGHEST_PROTOCOL)) / 1e6

    def _meta(self, version: int, seen: int) -> ModelMeta:
        return ModelMeta(app="fraud", model=MODEL, version=version, task="binary", examples_seen=seen)

    async def publish(self, kind: str) -> Publication:
        version = self.next_version
        self.next_version += 1
        if kind == "small":
            signed = pack(self.small, self._meta(version, self.small_seen), self.signer)
            mb = self.small_mb
        elif kind == "large" and self.large is not None:
            # Hashing tens of MB releases the GIL: keep it off this loop.
            signed = await asyncio.to_thread(pack_pickled, self.large.blob, self._meta(version, self.large.examples_seen), self.signer)
            mb = self.large.mb
        else:
            raise ValueError(kind)
        pub = Publication(version, kind, mb, started=time.monotonic())
        await self.store.publish(MODEL, version, signed)
        pub.announced = time.monotonic()
        self.publications.append(pub)
        if self.keep_versions is not None and version > self.keep_versions:
            # Bound Redis memory in long runs; the predictor skips versions that are gone.
            old = version - self.keep_versions
            await self.store._r.delete(self.store._version_key(MODEL, old))  # noqa: SLF001 - bench-only cleanup
        return pub


class SwapTracker:
    """Polls ``GET /v1/model`` and stamps each publication when its version is first served."""

    def __init__(self, url: str, publications: list[Publication], interval_s: float = 0.005) -> None:
        self.url = url
        self.publications = publications
        self.interval_s = interval_s
        self.served_version: int | None = None
        self.swaps: int | None = None
        self.refused: dict[str, str] = {}
        self.polls = 0
        self.errors = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            while not stop.is_set():
                try:
                    r = await client.get("/v1/model")
                    now = time.monotonic()
                    self.polls += 1
                    if r.status_code == 200:
                        body = r.json()
                        self.served_version = body["meta"]["version"]
                        self.swaps = body["swaps"]
                        self.refused = body["refused"]
                        for pub in self.publications:
                            if pub.served is None and pub.announced and pub.version <= self.served_version:
                                pub.served = now
                                pub.exact = pub.version == self.served_version
                except httpx.HTTPError:
                    self.errors += 1
                await asyncio.sleep(self.interval_s)


# ----------------------------------------------------------------------------------- load


def feature_pool(n: int = 2000, seed: int = 21) -> list[dict[str, Any]]:
    return [e.features for e in FraudStream(seed, drift_at=n // 2, run_id="bench-load").take(n)]


@dataclass
class LoadResult:
    """One row per request, in send order per worker."""

    t_send: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    """HTTP status, or 0 when the request raised."""
    version: list[int] = field(default_factory=list)
    """Served version in the response, -1 when there was none."""
    worker: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def extend(self, other: LoadResult) -> None:
        for name in ("t_send", "latency", "status", "version", "worker"):
            getattr(self, name).extend(getattr(other, name))
        for k, v in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v


class _Deadline:
    def __init__(self, value: float) -> None:
        self.value = value


class Reply(NamedTuple):
    status: int
    body: bytes


Request = Callable[[aiohttp.ClientSession, int, int], Awaitable[Reply]]
"""``request(session, worker, i)`` sends the i-th request of a worker (default: one prediction)."""


async def _worker(
    url: str, index: int, until: Any, features: Sequence[dict[str, Any]], out: LoadResult, request: Request | None = None,
) -> None:
    # aiohttp, not httpx: httpx spent ~1-4 ms of this process's CPU per request, so with the
    # servers on the same 2 cores the load generator, not the server, set the pace.
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(base_url=url, timeout=aiohttp.ClientTimeout(total=30), connector=connector) as session:
        i = 0
        n = len(features)
        while True:
            started = time.monotonic()
            if started >= until.value:
                return
            try:
                if request is None:
                    body = orjson.dumps({"id": f"w{index}-{i}", "features": features[(index * 7919 + i) % n]})
                    async with session.post("/v1/predict", data=body, headers=_JSON) as r:
                        reply = Reply(r.status, await r.read())
                else:
                    reply = await request(session, index, i)
                status = reply.status
                version = orjson.loads(reply.body).get("version", -1) if status == 200 else -1
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                status, version = 0, -1
                out.errors[type(exc).__name__] = out.errors.get(type(exc).__name__, 0) + 1
            out.t_send.append(started)
            out.latency.append(time.monotonic() - started)
            out.status.append(status)
            out.version.append(version)
            out.worker.append(index)
            i += 1


_JSON = {"content-type": "application/json"}


async def post(session: aiohttp.ClientSession, path: str, body: bytes, headers: dict[str, str]) -> Reply:
    async with session.post(path, data=body, headers=headers) as r:
        return Reply(r.status, await r.read())


async def run_load(
    url: str, workers: int, until: Any, features: Sequence[dict[str, Any]], request: Request | None = None,
) -> LoadResult:
    """``workers`` closed-loop clients (one ``aiohttp.ClientSession`` and connection each) until
    ``until`` (a ``time.monotonic()`` time, or anything with a ``.value`` that may change);
    each sends ``request`` (default: ``POST /v1/predict`` of one instance with an id)."""
    if isinstance(until, (int, float)):
        until = _Deadline(float(until))
    results = [LoadResult() for _ in range(workers)]
    await asyncio.gather(*(_worker(url, k, until, features, results[k], request) for k in range(workers)))
    merged = LoadResult()
    for r in results:
        merged.extend(r)
    return merged


def load_process_main(url: str, workers: int, out_path: str, ready: Any, until: Any, seed: int = 21) -> None:
    """Entry point of the load-generator process, kept apart so the publisher's work and the
    progress display never delay a request's timing. Sets ``ready`` once imported, then runs
    until ``until.value`` (a shared ``time.monotonic()`` deadline: one clock for all processes
    on the host; the parent lowers it from +inf to stop the load)."""
    features = feature_pool(seed=seed)
    ready.set()
    result = asyncio.run(run_load(url, workers, until, features))
    Path(out_path).write_bytes(pickle.dumps(result))


# ----------------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


Span = tuple[float, float]


def phase_stats(load: LoadResult, spans: Sequence[Span]) -> dict[str, Any]:
    """Requests sent within ``spans`` ([start, end) each): counts, failures, throughput,
    latency percentiles (ms), and the longest time with no response completing inside one
    span (with every client always in flight, that is time the server answered nobody)."""
    def inside(t: float) -> bool:
        return any(a <= t < b for a, b in spans)

    idx = [k for k, t in enumerate(load.t_send) if inside(t)]
    lat = [load.latency[k] * 1000 for k in idx]
    failed = sum(1 for k in idx if load.status[k] != 200)
    longest = 0.0
    round_p99 = []
    for a, b in spans:
        mine = [k for k in idx if a <= load.t_send[k] < b]
        done = sorted(load.t_send[k] + load.latency[k] for k in mine)
        longest = max([longest, *(y - x for x, y in zip(done, done[1:], strict=False))])
        round_p99.append(percentile([load.latency[k] * 1000 for k in mine], 99))
    seconds = sum(b - a for a, b in spans)
    return {
        "requests": len(idx),
        "failed": failed,
        "seconds": seconds,
        "rps": len(idx) / seconds if seconds > 0 else math.nan,
        "p50_ms": percentile(lat, 50),
        "p90_ms": percentile(lat, 90),
        "p99_ms": percentile(lat, 99),
        "p999_ms": percentile(lat, 99.9),
        "max_ms": max(lat) if lat else math.nan,
        "longest_gap_ms": longest * 1000,
        "p99_per_round_ms": round_p99,
        "p99_round_median_ms": statistics.median(round_p99) if round_p99 else math.nan,
    }


def versions_per_worker_monotonic(load: LoadResult) -> dict[int, list[tuple[int, int]]]:
    """For each worker, the (previous, next) version pairs that went backwards (empty: none)."""
    last: dict[int, int] = {}
    backwards: dict[int, list[tuple[int, int]]] = {}
    for w, v, s in zip(load.worker, load.version, load.status, strict=True):
        if s != 200:
            continue
        if w in last and v < last[w]:
            backwards.setdefault(w, []).append((last[w], v))
        last[w] = v
    return backwards


def resolve_swaps(pubs: Sequence[Publication], load: LoadResult) -> None:
    """Refine ``served``/``exact`` with the prediction responses: a 200 naming version >= v that
    completed at time t proves v (or later) was served by t. Responses arrive every ms or so,
    finer than the 5 ms ``GET /v1/model`` poll, and catch versions served only briefly."""
    rows = sorted((t + dt, v) for t, dt, v, s in zip(load.t_send, load.latency, load.version, load.status, strict=True) if s == 200)
    times = [t for t, _ in rows]
    prefix_max: list[int] = []
    top = -1
    for _, v in rows:
        top = max(top, v)
        prefix_max.append(top)
    seen = {v for _, v in rows}
    for pub in pubs:
        k = bisect.bisect_left(prefix_max, pub.version)
        if k < len(rows):
            first = max(times[k], pub.announced)
            if pub.served is None or first < pub.served:
                pub.served = first
        pub.exact = pub.exact or pub.version in seen


def swap_stats(pubs: Sequence[Publication]) -> dict[str, Any]:
    """Swap latency (announcement → first seen served) in ms, per model kind."""
    out: dict[str, Any] = {}
    groups = sorted({(p.kind, p.phase) for p in pubs})
    for kind, phase in groups:
        mine = [p for p in pubs if p.kind == kind and p.phase == phase]
        lat = [p.swap_s * 1000 for p in mine if p.swap_s is not None and p.exact]
        write = [(p.announced - p.started) * 1000 for p in mine]
        out[f"{kind} ({phase})" if phase else kind] = {
            "kind": kind,
            "phase": phase,
            "published": len(mine),
            "served_exactly": sum(p.exact for p in mine),
            "skipped": sum(1 for p in mine if p.served is not None and not p.exact),
            "never_seen": sum(1 for p in mine if p.served is None),
            "mb": mine[0].mb if mine else math.nan,
            "swap_p50_ms": percentile(lat, 50),
            "swap_p99_ms": percentile(lat, 99),
            "swap_max_ms": max(lat) if lat else math.nan,
            "publish_write_p50_ms": percentile(write, 50),
        }
    return out


def window_gaps(load: LoadResult, spans: Sequence[Span], width: float) -> list[float]:
    """Longest no-response gap (ms) in consecutive ``width``-second windows of ``spans``: the
    noise floor to compare ``stall_windows`` with."""
    done = sorted(t + dt for t, dt in zip(load.t_send, load.latency, strict=True))
    out = []
    for a, b in spans:
        starts = [a + k * width for k in range(int((b - a) // width))]
        if starts and starts[-1] + width < b:
            starts.append(b - width)  # the tail too, overlapping the window before it
        for lo in starts:
            inside = done[bisect.bisect_left(done, lo):bisect.bisect_right(done, lo + width)]
            if len(inside) >= 2:
                out.append(max(y - x for x, y in zip(inside, inside[1:], strict=False)) * 1000)
    return out


def stall_windows(load: LoadResult, pubs: Sequence[Publication], kind: str, after_s: float = 0.3) -> list[float]:
    """Longest no-response gap (ms) in each window [announced, served + after_s] of ``kind``
    swaps: with N clients always in flight, a gap is time the server answered nobody."""
    done = sorted(t + dt for t, dt in zip(load.t_send, load.latency, strict=True))
    out = []
    for p in pubs:
        if p.kind != kind or p.served is None:
            continue
        lo, hi = p.announced, p.served + after_s
        inside = done[bisect.bisect_left(done, lo):bisect.bisect_right(done, hi)]
        if len(inside) >= 2:
            out.append(max(b - a for a, b in zip(inside, inside[1:], strict=False)) * 1000)
    return out
