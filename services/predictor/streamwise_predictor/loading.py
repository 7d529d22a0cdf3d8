"""Loading a verified model in a worker thread without stalling the serving event loop.

``codec.unpack`` in a thread is not enough for a model of tens of MB: the thread holds the
GIL in long bursts, so the loop that answers requests stalls anyway.

- a full (generation 2) collection triggered by the load's ~200 k new objects walks every
  object of both models with the GIL held (~300 ms for a 37 MB ensemble);
- the unpickler's memo, freed at once at the end, frees millions of ints in one C loop
  (~200 ms: river's Gaussian estimators each pickle a ``random.Random`` state of 625 ints);
- between those, the thread takes the GIL whenever it can: the loop gets about half of it.

``ModelLoader.load`` verifies the blob exactly as ``codec.unpack`` does, then unpickles it:

- frame by frame through a Python file object, pausing so that the load takes at most
  ``cpu_share`` of one CPU (the loop has the GIL to itself during the pauses);
- with generation-2 collections held back during the load, then ``gc.freeze()``: no later
  full collection walks the model again. River models hold no reference cycles, so a
  replaced model is still freed by reference counting; if one ever is not (a model type with
  cycles), the loader notices, unfreezes and stops freezing (see ``ModelLoader.retired``).
  Whatever else is alive at a freeze and later dropped in a cycle is reclaimed by a sweep
  (unfreeze, one full collection) at the first load after every ``sweep_s``;
- with the memo let go of in small batches.

The result is the same object ``pickle.loads`` returns. A replaced model is freed in pieces by
a background thread once in-flight requests let go of it (``gentle_release``): dropped by the
last request, it would be freed in one ~40 ms C cascade on the event loop.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import pickle
import queue
import sys
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from streamwise_core.contracts.codec import ModelMeta, SignedBlob, verify
from streamwise_core.contracts.signing import Signer

log = logging.getLogger(__name__)

MEMO_RELEASE_BATCH = 500
"""Memo entries dropped between two chances for the loop to take the GIL (and to pause)."""
LEAK_GRACE_S = 30.0
"""A replaced model still alive this long after the swap is taken to be kept by a cycle."""
RELEASE_WALK_LIMIT = 2000
"""Containers of a replaced model held apart and freed one by one (each with what hangs below
it): 2,000 split a 37 MB ensemble's 43 ms of freeing into pieces of at most ~4 ms."""
RELEASE_WAIT_S = 10.0
"""How long the release waits for in-flight requests to let go of a replaced model; after
that it lets go too, and the model is freed as usual by whoever drops it last."""
_NOT_OWNED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.CodeType)


@dataclass(frozen=True)
class LoadPolicy:
    cpu_share: float = 1.0
    """Largest share of one CPU a load may take (0 < share <= 1): after each ``slice_s`` of
    unpickling the loading thread sleeps ``slice_s * (1 / share - 1)``. 1 = no pauses."""
    slice_s: float = 0.002
    """Unpickling between two pauses; below the interpreter's 5 ms switch interval, so the loop
    never waits longer than this for the GIL."""
    gc_freeze: bool = True
    """Hold back full collections during a load, then ``gc.freeze()`` (see the module doc)."""
    sweep_s: float = 600.0
    """With ``gc_freeze``: at the first load after this many seconds, unfreeze first, so that
    one full collection (~100-300 ms with a 37 MB model) reclaims garbage frozen since."""
    gentle_release: bool = True
    """Free replaced models in pieces in a background thread (``gentle_release``)."""

    def __post_init__(self) -> None:
        if not 0 < self.cpu_share <= 1:
            raise ValueError(f"cpu_share must be in (0, 1], got {self.cpu_share}")
        if self.slice_s <= 0:
            raise ValueError(f"slice_s must be positive, got {self.slice_s}")


class Pacer:
    """Keeps the calling thread's CPU time to ``share`` of the wall time, in ``slice_s`` steps.

    CPU time (``time.thread_time``) is what the thread spent holding the GIL, not waiting for it.
    """

    def __init__(self, share: float = 1.0, slice_s: float = 0.002) -> None:
        self._factor = 1 / share - 1
        self._slice_s = slice_s
        self._mark = time.thread_time()
        self.paused_s = 0.0

    def __call__(self) -> None:
        if not self._factor:
            return
        worked = time.thread_time() - self._mark
        if worked >= self._slice_s:
            pause = worked * self._factor
            time.sleep(pause)
            self.paused_s += pause
            self._mark = time.thread_time()


class FrameReader:
    """``data`` as a read-only file for ``pickle.Unpickler``, calling ``pace()`` at each read.

    The C unpickler reads a protocol 4+ pickle one frame (~64 KB) per call; a call into Python
    code is also a point where the interpreter hands the GIL to a thread waiting for it.
    """

    def __init__(self, data: bytes, pace: Pacer | None = None) -> None:
        self._view = memoryview(data)
        self._pos = 0
        self._pace = pace or Pacer()

    def read(self, n: int = -1) -> bytes:
        self._pace()
        start = self._pos
        self._pos = len(self._view) if n is None or n < 0 else min(len(self._view), start + n)
        return self._view[start:self._pos].tobytes()

    def readinto(self, buffer: Any) -> int:
        self._pace()
        start = self._pos
        n = min(len(buffer), len(self._view) - start)
        buffer[:n] = self._view[start:start + n]
        self._pos = start + n
        return n

    def readline(self) -> bytes:  # opcodes of protocols 0-3 only
        start = self._pos
        end = self._view.obj.find(b"\n", start)  # type: ignore[attr-defined]
        self._pos = len(self._view) if end < 0 else end + 1
        return self._view[start:self._pos].tobytes()


def gentle_loads(data: bytes, pace: Pacer | None = None, batch: int = MEMO_RELEASE_BATCH) -> Any:
    """``pickle.loads(data)`` with a switch point (and a ``pace()``) at every frame and at the end.

    Freed with the unpickler, its memo would release every object only it still holds in one C
    loop; a copy of it (~20 ms) leaves that to a Python loop, ``batch`` objects at a time.
    Only call this on bytes whose origin is verified: unpickling runs code.
    """
    pace = pace or Pacer()
    unpickler = pickle.Unpickler(FrameReader(data, pace))
    obj = unpickler.load()  # noqa: S301 - the callers verify the blob first
    memo = unpickler.memo.copy()
    unpickler.memo = {}
    del unpickler
    while memo:
        for _ in range(min(batch, len(memo))):
            memo.popitem()
        pace()
    return obj


@contextmanager
def no_full_collections() -> Iterator[None]:
    """Young collections go on (the cyclic garbage of requests served meanwhile is collected);
    the threshold of the oldest generation is restored on the way out, whatever happens."""
    young, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, 1 << 30)
    try:
        yield
    finally:
        gc.set_threshold(young, middle, old)


def gentle_release(box: list[Any], pace: Pacer | None = None, *, limit: int = RELEASE_WALK_LIMIT,
                   wait_s: float = RELEASE_WAIT_S, poll_s: float = 0.02) -> bool:
    """Free ``box.pop()`` in pieces: hold its first ``limit`` containers (breadth first), wait
    until nothing else refers to it, then let go of them one by one, parents first, so each is
    freed alone with what hangs below it, with switch points (and ``pace()``) in between.

    Returns False if something still held the object after ``wait_s`` (it is then let go of
    as usual). Classes, modules and functions are never held: the object does not own them.
    """
    pace = pace or Pacer()
    held = [box.pop()]
    seen = {id(held[0])}
    i = 0
    while i < len(held) and len(held) < limit:
        for ref in gc.get_referents(held[i]):
            if gc.is_tracked(ref) and id(ref) not in seen and not isinstance(ref, _NOT_OWNED):
                seen.add(id(ref))
                held.append(ref)
        i += 1
        if i % 100 == 0:
            pace()
    ref = None  # the loop's last referent would otherwise be freed with this frame
    del seen
    deadline = time.monotonic() + wait_s
    # Two references are ours: ``held`` and getrefcount's argument; the others are requests'.
    while sys.getrefcount(held[0]) > 2:
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    for k in range(len(held)):
        held[k] = None
        pace()
    return True


class ModelLoader:
    """Verifies and unpickles model blobs, one at a time, in a worker thread (``load``); told by
    the event loop which models were replaced (``retired``)."""

    def __init__(self, policy: LoadPolicy | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or LoadPolicy()
        self._clock = clock
        """Seconds, for the sweeps and the leak grace time."""
        self.freezing = self.policy.gc_freeze
        self._swept = -float("inf")
        self._releases: queue.SimpleQueue[list[Any]] = queue.SimpleQueue()
        self._releaser: threading.Thread | None = None
        self._retired: list[tuple[float, weakref.ref[Any]]] = []
        self.last: dict[str, float] = {}
        """Seconds the last load took: ``total``; ``verify``, ``unpickle`` (of which ``paused``), ``gc``."""

    def load(self, signed: SignedBlob, signer: Signer) -> tuple[ModelMeta, Any]:
        """``codec.unpack``: the same checks, before anything is unpickled, and the same model.
        Raises ``BlobRefused`` for a blob that fails them."""
        t0 = time.perf_counter()
        meta = verify(signed, signer)
        t1 = time.perf_counter()
        freeze = self.freezing
        if freeze:
            self._check_retired()
            freeze = self.freezing
        if freeze:
            if self._clock() - self._swept >= self.policy.sweep_s:
                gc.unfreeze()
                self._swept = self._clock()
            # Collect now what the freeze would keep forever (cyclic garbage of requests served
            # since the last one); cheap, since frozen models are not walked (but at a sweep).
            gc.collect()
        t2 = time.perf_counter()
        pace = Pacer(self.policy.cpu_share, self.policy.slice_s)
        if freeze:
            with no_full_collections():
                model = gentle_loads(signed.blob, pace)
        else:
            model = gentle_loads(signed.blob, pace)
        t3 = time.perf_counter()
        if freeze:
            gc.collect(1)  # young garbage of the load's duration, not to be frozen with the model
            gc.freeze()
        t4 = time.perf_counter()
        self.last = {
            "total": t4 - t0, "verify": t1 - t0, "unpickle": t3 - t2, "paused": pace.paused_s, "gc": (t2 - t1) + (t4 - t3),
        }
        return meta, model

    def retired(self, model: Any) -> None:
        """``model`` is no longer served: it must be freed once in-flight requests let go of it.
        (Call on the event loop after a swap, and keep no reference to ``model``.)"""
        if self.freezing:
            # not weakly referenceable (a builtin or __slots__ type): not checked
            with contextlib.suppress(TypeError):
                self._retired.append((self._clock(), weakref.ref(model)))
        if self.policy.gentle_release:
            if self._releaser is None:
                self._releaser = threading.Thread(target=self._release_forever, name="model-release", daemon=True)
                self._releaser.start()
            self._releases.put([model])

    def _release_forever(self) -> None:
        while True:
            box = self._releases.get()
            try:
                gentle_release(box, Pacer(self.policy.cpu_share, self.policy.slice_s))
            except Exception:  # noqa: BLE001 - releasing must never stop: the model is then freed as usual
                log.exception("releasing a replaced model failed")
            del box

    def _check_retired(self) -> None:
        """A frozen reference cycle is never collected: if a replaced model outlives its grace
        time, stop freezing and give the collector back everything frozen so far."""
        now = self._clock()
        self._retired = [(t, ref) for t, ref in self._retired if ref() is not None]
        if any(now - t > LEAK_GRACE_S for t, _ in self._retired):
            log.warning(
                "a replaced model is still alive %.0f s after its swap (reference cycles?): "
                "no more gc.freeze() after loads; full collections will walk the served model again",
                LEAK_GRACE_S,
            )
            self.freezing = False
            self._retired.clear()
            gc.unfreeze()
