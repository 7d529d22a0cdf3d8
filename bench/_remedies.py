"""Alternative loaders for the event-loop stalls of a large swap, measured by the bench only.

``uvicorn _remedies:create_app --factory --app-dir bench`` with ``BENCH_REMEDY`` set runs the
predictor (``streamwise_predictor.app.create_app``) after patching, in this process only, how
it turns a verified blob into a model (``ModelLoader.load``, ``loading.py``). The predictor's own
loader is the ``gentle+gc-freeze`` prototype below plus pacing (``STREAMWISE_SWAP_LOAD_CPU_SHARE``);
these variants are kept to compare it with:

``plain``             ``codec.unpack`` in a thread: the predictor before ``loading.py``.
``gc-freeze``         no full (generation 2) collection while unpickling, then ``gc.freeze()``:
                      the collector never again walks the model's objects. River models hold no
                      reference cycles, so a replaced version is still freed by reference counting.
``gentle``            unpickle through a file object whose ``read`` is Python code (one call per
                      ~64 KB frame: a point where a waiting thread can take the GIL), and tear the
                      unpickler's memo down a thousand objects at a time instead of in one C loop.
``gentle+gc-freeze``  both.
``throttle``          like ``gentle``'s reader, but sleeping 1 ms per frame (gives the GIL away).
``switch-1ms``        ``sys.setswitchinterval(0.001)``: a waiting thread asks for the GIL after
                      1 ms instead of 5 ms.
``paced``             ``gentle+gc-freeze``, and loading may take at most 25 % of the time
                      (``BENCH_LOAD_SHARE``): after a load of t s the next waits 3t s, then loads
                      whatever is current (versions published meanwhile are skipped).
``all``               ``gentle+gc-freeze``, and a replaced model is freed by ``gentle_free`` in a
                      thread instead of at once on the loop.

Nothing here is imported by the services.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import pickle
import sys
import threading
import time
import types
from typing import Any

from fastapi import FastAPI

from streamwise_core.codec import ModelMeta, SignedBlob, unpack, verify
from streamwise_core.signing import Signer
from streamwise_predictor.app import create_app as _create_app
from streamwise_predictor.holder import ModelHolder
from streamwise_predictor.loading import ModelLoader

log = logging.getLogger(__name__)

THROTTLE_PAUSE_S = 0.001


class FrameReader:
    """A read-only file over ``data`` for ``pickle.Unpickler``.

    The C unpickler reads protocol 4+ pickles one ~64 KB frame per ``read``/``readinto`` call.
    Because these methods are Python code, the interpreter checks for a pending GIL request at
    each of them: a loader thread can no longer hold the GIL for a whole pickle whose objects
    are all built in C. ``pause_s > 0`` also sleeps there, giving the GIL away outright.
    """

    def __init__(self, data: bytes, pause_s: float = 0.0) -> None:
        self._view = memoryview(data)
        self._pos = 0
        self._pause_s = pause_s

    def read(self, n: int = -1) -> bytes:
        if self._pause_s:
            time.sleep(self._pause_s)
        start = self._pos
        end = len(self._view) if n is None or n < 0 else min(len(self._view), start + n)
        self._pos = end
        return self._view[start:end].tobytes()

    def readinto(self, buffer: Any) -> int:
        if self._pause_s:
            time.sleep(self._pause_s)
        start = self._pos
        n = min(len(buffer), len(self._view) - start)
        buffer[:n] = self._view[start:start + n]
        self._pos = start + n
        return n

    def readline(self) -> bytes:  # protocol 0 only
        start = self._pos
        end = bytes(self._view[start:]).find(b"\n")
        self._pos = len(self._view) if end < 0 else start + end + 1
        return self._view[start:self._pos].tobytes()


def gentle_loads(data: bytes, pause_s: float = 0.0, batch: int = 1000) -> Any:
    """``pickle.loads`` that lets a waiting thread take the GIL every frame and at the end.

    When an unpickler is freed, its memo releases every object it memoized in one C loop;
    objects only the memo still holds (river's Gaussian estimators each pickle a
    ``random.Random`` state as a tuple of 625 ints) are freed there, ~200 ms for a 37 MB
    ensemble with the GIL held. Copying the memo first (~20 ms) leaves that work to a Python
    loop that frees ``batch`` objects at a time.
    """
    unpickler = pickle.Unpickler(FrameReader(data, pause_s))
    obj = unpickler.load()  # noqa: S301 - callers verify the blob first, as codec.unpack does
    memo = unpickler.memo.copy()
    unpickler.memo = {}
    del unpickler
    while memo:
        for _ in range(min(batch, len(memo))):
            memo.popitem()
    return obj


def gc_quiet(load: Any) -> Any:
    """Run ``load()`` with no full collection, then move everything alive out of the GC's view.

    Young collections go on (cyclic garbage of requests served meanwhile is still collected);
    only the generation-2 pass, which would walk every object of both models with the GIL
    held (~300 ms here), is held back; ``gc.freeze()`` then makes sure it never walks the new
    model. Cyclic garbage already in generation 2 at that moment is frozen too (not collected
    until ``gc.unfreeze()``).
    """
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 1 << 30)
    try:
        return load()
    finally:
        gc.freeze()
        gc.set_threshold(young, middle, _)


def unpack_gc_frozen(signed: SignedBlob, signer: Signer) -> tuple[ModelMeta, Any]:
    meta = verify(signed, signer)
    return meta, gc_quiet(lambda: pickle.loads(signed.blob))  # noqa: S301 - verified above


def unpack_gentle(signed: SignedBlob, signer: Signer) -> tuple[ModelMeta, Any]:
    meta = verify(signed, signer)
    return meta, gentle_loads(signed.blob)


def unpack_gentle_gc_frozen(signed: SignedBlob, signer: Signer) -> tuple[ModelMeta, Any]:
    meta = verify(signed, signer)
    return meta, gc_quiet(lambda: gentle_loads(signed.blob))


def unpack_throttled(signed: SignedBlob, signer: Signer) -> tuple[ModelMeta, Any]:
    meta = verify(signed, signer)
    return meta, pickle.Unpickler(FrameReader(signed.blob, THROTTLE_PAUSE_S)).load()  # noqa: S301 - verified above


_NOT_OWNED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.CodeType)


def gentle_free(box: list[Any], batch: int = 1000) -> int:
    """Free the object graph of ``box.pop()`` a ``batch`` of containers at a time.

    Dropping the last reference to a model frees its whole graph in one C cascade (~25 ms per
    37 MB here) on whichever thread drops it, with the GIL held. Instead: hold every container
    reachable from it (classes, modules and functions excepted), then let go of them in
    breadth-first order, so each is freed alone once its parent is gone, with Python bytecode
    (and a chance to switch threads) between batches. Returns how many containers it held.
    """
    root = box.pop()
    held = [root]
    del root
    seen = {id(held[0])}
    i = 0
    while i < len(held):
        for ref in gc.get_referents(held[i]):
            if gc.is_tracked(ref) and id(ref) not in seen and not isinstance(ref, _NOT_OWNED):
                seen.add(id(ref))
                held.append(ref)
        i += 1
    n = len(held)
    for start in range(0, n, batch):
        for k in range(start, min(start + batch, n)):
            held[k] = None
    return n


UNPACKERS = {
    "plain": unpack,
    "gc-freeze": unpack_gc_frozen,
    "gentle": unpack_gentle,
    "gentle+gc-freeze": unpack_gentle_gc_frozen,
    "throttle": unpack_throttled,
}


def _free_replaced_models_gently() -> None:
    """Patch ``ModelHolder.offer`` so a replaced model is freed by ``gentle_free`` in a thread."""
    offer = ModelHolder.offer

    def offer_then_free(self: ModelHolder, candidate: Any) -> bool:
        box = [self.current]
        swapped = offer(self, candidate)
        if swapped and box[0] is not None:
            threading.Thread(target=gentle_free, args=(box,), name="free-old-model", daemon=True).start()
        return swapped

    ModelHolder.offer = offer_then_free  # type: ignore[method-assign]


LOAD_SHARE = float(os.environ.get("BENCH_LOAD_SHARE", "0.25"))


def _pace_loads(share: float) -> None:
    """Patch ``VersionWatcher.check`` so loading takes at most ``share`` of the time: after a
    load that took ``t`` seconds, the next waits ``t * (1/share - 1)`` and then loads whatever
    is current by then (versions published meanwhile are skipped, never served out of order)."""
    from streamwise_predictor.watcher import VersionWatcher

    check = VersionWatcher.check

    async def paced_check(self: Any, version: int | None = None) -> None:
        import asyncio

        wait = getattr(self, "_next_load_at", 0.0) - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
            version = None  # load what is current now, not what was announced then
        before = self._holder.version
        started = time.monotonic()
        await check(self, version)
        if self._holder.version != before:
            spent = time.monotonic() - started
            self._next_load_at = time.monotonic() + spent * (1 / share - 1)

    VersionWatcher.check = paced_check  # type: ignore[method-assign]


def _load_with(unpack_fn: Any) -> None:
    """Patch ``ModelLoader.load`` (what the watcher calls in its worker thread) to ``unpack_fn``,
    and ``ModelLoader.retired`` to nothing: a replaced model is freed where it is dropped."""

    def load(self: ModelLoader, signed: SignedBlob, signer: Signer) -> tuple[ModelMeta, Any]:
        return unpack_fn(signed, signer)

    ModelLoader.load = load  # type: ignore[method-assign]
    ModelLoader.retired = lambda self, model: None  # type: ignore[method-assign]


def create_app() -> FastAPI:
    remedy = os.environ.get("BENCH_REMEDY", "none")
    if remedy in UNPACKERS:
        _load_with(UNPACKERS[remedy])
    elif remedy == "paced":
        _load_with(unpack_gentle_gc_frozen)
        _pace_loads(LOAD_SHARE)
    elif remedy == "all":
        _load_with(unpack_gentle_gc_frozen)
        _free_replaced_models_gently()
    elif remedy == "switch-1ms":
        sys.setswitchinterval(0.001)
    elif remedy != "none":
        raise SystemExit(f"unknown BENCH_REMEDY {remedy!r}")
    log.warning("bench remedy %s active", remedy)
    return _create_app()


# ----------------------------------------------------------------------------------- in-process probe

VARIANTS = {
    "plain": "codec.unpack in a thread (what watcher.py does today)",
    "gc-freeze": "no full GC while unpickling, then gc.freeze()",
    "gentle": "Python-level frame reader + memo freed in batches",
    "gentle+gc-freeze": "both",
    "throttle": "frame reader sleeping 1 ms per frame",
    "switch-1ms": "sys.setswitchinterval(0.001)",
    "all": "gentle+gc-freeze, and the replaced model freed by gentle_free in a thread",
    "loader": "the predictor's ModelLoader at full speed (cpu_share 1)",
    "loader-0.5": "the predictor's ModelLoader, cpu_share 0.5",
    "loader-0.25": "the predictor's ModelLoader, cpu_share 0.25 (the default)",
}


def _unpack_for(variant: str) -> Any:
    if variant.startswith("loader"):
        from streamwise_predictor.loading import LoadPolicy

        share = float(variant.partition("-")[2] or 1)
        return ModelLoader(LoadPolicy(cpu_share=share)).load
    if variant == "all":
        return unpack_gentle_gc_frozen
    if variant in UNPACKERS:
        return UNPACKERS[variant]
    from streamwise_core.codec import unpack

    return unpack


def probe_variant(variant: str, blob_path: str, reps: int = 3, tasks: int = 8, think_s: float = 0.005) -> list[dict[str, float]]:
    """Serve a simulated request load on an event loop in this process while a thread loads
    the large model ``reps`` times; report loop lag and request latency around each load.

    A simulated request wakes after ``think_s`` (standing for waiting on its client) and then
    does real predictor work: the small model's ``predict_proba_one`` a few times and a JSON
    encoding; its latency is from its due time to done. A separate 1 ms ticker measures lag.
    """
    import asyncio
    import json as _json
    from pathlib import Path

    import _load  # bench/ is on sys.path in the bench and its spawned processes

    from streamwise_core.schema import to_model_input
    from streamwise_core.settings import Settings
    from streamwise_devstack.fraud import FraudStream

    if variant == "switch-1ms":
        sys.setswitchinterval(0.001)
    unpack_fn = _unpack_for(variant)
    signer = Signer(Settings().signing_key_map)
    blob = Path(blob_path).read_bytes()
    meta = ModelMeta(app="fraud", model=_load.MODEL, version=1, task="binary", examples_seen=0)
    signed = _load.pack_pickled(blob, meta, signer)
    spec = _load.app_spec()
    small, _ = _load.train_small(spec, 1000)
    xs = [to_model_input(spec, e.features) for e in FraudStream(3, run_id="probe").take(500)]
    current = [pickle.loads(blob)]  # noqa: S301 - our own cache: the model being replaced

    async def run() -> list[dict[str, float]]:
        lat: list[tuple[float, float]] = []
        lags: list[tuple[float, float]] = []
        stop = asyncio.Event()

        async def client(k: int) -> None:
            i = k
            while not stop.is_set():
                due = time.perf_counter() + think_s
                await asyncio.sleep(think_s)
                for _ in range(4):
                    small.predict_proba_one(xs[i % len(xs)])
                    i += 1
                _json.dumps({"id": f"x{i}", "features": xs[i % len(xs)], "version": 1})
                lat.append((due, time.perf_counter() - due))

        async def ticker() -> None:
            while not stop.is_set():
                due = time.perf_counter() + 0.001
                await asyncio.sleep(0.001)
                lags.append((due, time.perf_counter() - due))

        runners = [asyncio.create_task(client(k)) for k in range(tasks)] + [asyncio.create_task(ticker())]
        out = []
        await asyncio.sleep(0.5)
        for _ in range(reps):
            b0 = time.perf_counter()
            await asyncio.sleep(0.7)
            t0 = time.perf_counter()
            _, model = await asyncio.to_thread(unpack_fn, signed, signer)
            t1 = time.perf_counter()
            if variant.startswith("loader"):
                old = current[0]
                current[0] = model  # the swap; the replaced model goes to the loader's release
                del model
                unpack_fn.__self__.retired(old)
                del old
            elif variant == "all":
                box = [current[0]]
                current[0] = model  # the swap; the replaced model is freed gently in a thread
                del model
                threading.Thread(target=gentle_free, args=(box,), daemon=True).start()
                del box
            else:
                current[0] = model  # the swap: the replaced model is freed here, on the loop
                del model
            t2 = time.perf_counter()
            await asyncio.sleep(0.5)
            t3 = time.perf_counter()

            def window(rows: list[tuple[float, float]], a: float, b: float) -> list[float]:
                return sorted(v * 1000 for t, v in rows if a <= t < b)

            base = window(lat, b0, t0)
            during = window(lat, t0, t3)
            out.append({
                "load_ms": (t1 - t0) * 1000,
                "free_old_in_loop_ms": (t2 - t1) * 1000,
                "base_p99_ms": base[int(0.99 * (len(base) - 1))] if base else math.nan,
                "swap_p99_ms": during[int(0.99 * (len(during) - 1))] if during else math.nan,
                "swap_max_ms": during[-1] if during else math.nan,
                "base_lag_max_ms": max(window(lags, b0, t0), default=math.nan),
                "swap_lag_max_ms": max(window(lags, t0, t3), default=math.nan),
                "requests_during_load_per_s": len(window(lat, t0, t1)) / (t1 - t0),
                "requests_base_per_s": len(base) / (t0 - b0),
            })
        stop.set()
        await asyncio.gather(*runners)
        return out

    return asyncio.run(run())


def probe_main(variant: str, blob_path: str, reps: int, out: Any) -> None:
    """Spawned-process entry: one variant per fresh interpreter (GC and switch state are global)."""
    out.put(probe_variant(variant, blob_path, reps))
