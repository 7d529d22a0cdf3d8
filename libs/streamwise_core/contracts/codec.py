"""Model blobs: pickled model plus JSON metadata, signed together, verified before loading."""

from __future__ import annotations

import copyreg
import functools
import hashlib
import io
import pickle
import platform
import random
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import river
from pydantic import BaseModel, ConfigDict, Field
from river import proba

from streamwise_core.contracts.errors import BlobRefused
from streamwise_core.contracts.events import utcnow
from streamwise_core.contracts.signing import Signature, Signer


class ModelMeta(BaseModel):
    """What a model version is; stored beside its blob and in the registry."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    app: str
    model: str
    version: int
    task: str
    classes: list[Any] | None = None
    examples_seen: int
    metrics: dict[str, float] = Field(default_factory=dict)
    offsets: dict[str, int] = Field(default_factory=dict)
    """Last consumed offset per ``topic:partition``, for exactly-once resumption."""
    river_version: str = river.__version__
    python_version: str = platform.python_version()
    blob_sha256: str = ""
    created_at: datetime = Field(default_factory=utcnow)


@dataclass(frozen=True)
class SignedBlob:
    """The bytes that travel through the model store."""

    meta: bytes
    blob: bytes
    signature: Signature


def _random_from_state(version: int, internal: bytes, gauss_next: float | None) -> random.Random:
    rng = random.Random()
    rng.setstate((version, struct.unpack(f"<{len(internal) // 4}I", internal), gauss_next))
    return rng


def _reduce_random(rng: random.Random) -> tuple[Any, ...]:
    version, internal, gauss_next = rng.getstate()
    return _random_from_state, (version, struct.pack(f"<{len(internal)}I", *internal), gauss_next)


def reduce_without(obj: Any, field: str, restore: Callable[..., None], *args: Any) -> tuple[Any, ...]:
    """A reduce value for ``obj`` without its attribute ``field``: when loaded, the object gets
    its other attributes back and ``restore(obj, *args)`` puts ``field`` back (``restore``
    must be a module-level function, ``args`` picklable); the other attributes are those
    ``obj.__getstate__`` gives."""
    fields = {name: value for name, value in (obj.__getstate__() or {}).items() if name != field}
    return _rebuilt, (type(obj), fields, restore, args)


def _rebuilt(kind: type[Any], fields: dict[str, Any], restore: Callable[..., None], args: tuple[Any, ...]) -> Any:
    obj = kind.__new__(kind)  # type: ignore[call-overload]  # any class, as pickle's own reconstructor does
    if _settable_inline(kind, fields):
        _set_attributes(obj, fields)  # inline, as _Pickler loads them (a tree's Gaussians)
    else:
        vars(obj).update(fields)
    restore(obj, *args)
    return obj


_unseeded: list[random.Random] = []


def _fresh_generator(gaussian: proba.Gaussian) -> None:
    """An unseeded generator, as ``Gaussian(seed=None)`` makes, but one for every Gaussian
    loaded here: seeding one from the OS per estimator was most of a tree's loading time."""
    if not _unseeded:
        _unseeded.append(random.Random())  # noqa: S311 - sampling only, never security
    gaussian._rng = _unseeded[0]  # noqa: SLF001


def _reduce_gaussian(gaussian: proba.Gaussian) -> tuple[Any, ...]:
    """A Gaussian made without a seed (every leaf estimator of river's Hoeffding trees) is
    pickled without its random-number generator, which it only uses to sample and which was
    seeded from the OS anyway: it gets a fresh one when loaded, as ``Gaussian()`` would. That
    generator was 2.5 kB of a tree's blob per estimator: a 20,000-event tree pickles to 45 kB
    in 3 ms instead of 996 kB in 22 ms. A seeded one keeps its exact state."""
    if gaussian.seed is not None:
        return gaussian.__reduce_ex__(pickle.HIGHEST_PROTOCOL)  # type: ignore[return-value]  # a tuple for this class
    return reduce_without(gaussian, "_rng", _fresh_generator)


_DISPATCH = {**copyreg.dispatch_table, random.Random: _reduce_random, proba.Gaussian: _reduce_gaussian}


Reducers = Mapping[type, Callable[[Any], tuple[Any, ...]]]
"""How to pickle objects of some exact types instead of their own way (``copyreg``'s form)."""


_MANAGED_DICT = 1 << 4
"""``Py_TPFLAGS_MANAGED_DICT``: instances keep their attributes inline until asked for ``__dict__``."""


def _set_attributes(obj: Any, state: dict[str, Any]) -> None:
    for name, value in state.items():
        object.__setattr__(obj, name, value)


@functools.cache
def _rebuilt_by_attributes(kind: type) -> frozenset[str] | None:
    """For a class pickled the default way (``__newobj__``, then its ``__dict__`` as state), the
    names ``object.__setattr__`` would not simply store (data descriptors); ``None`` for any
    other class."""
    if (
        not kind.__flags__ & _MANAGED_DICT or issubclass(kind, (dict, list, set))
        or kind.__setattr__ is not object.__setattr__
        or kind.__reduce_ex__ is not object.__reduce_ex__ or kind.__reduce__ is not object.__reduce__
        or kind.__getstate__ is not object.__getstate__
        or any(hasattr(kind, m) for m in ("__setstate__", "__getnewargs_ex__", "__getnewargs__"))
        or any(vars(k).get("__slots__") for k in kind.__mro__[:-1])  # their state is (dict, slots)
    ):
        return None
    # From the classes' own namespaces, not dir() and getattr_static (0.2 ms a class: the first
    # version of a model counted ~10 ms of it, which the serialising budget then spread over a second).
    return frozenset(name for k in kind.__mro__ for name, value in vars(k).items() if hasattr(type(value), "__set__"))


def _settable_inline(kind: type, names: Iterable[str]) -> bool:
    """Whether ``_set_attributes`` puts attributes ``names`` back on a ``kind`` as its default
    loading would (and keeps them inline)."""
    descriptors = _rebuilt_by_attributes(kind)
    return descriptors is not None and descriptors.isdisjoint(names)


class _Pickler(pickle.Pickler):
    """Objects of plain classes are loaded by setting their attributes one by one instead of
    filling their ``__dict__``: CPython 3.11 keeps the attributes of an object inline until its
    ``__dict__`` is asked for, and never specialises a method call on it again once it was (a
    Hoeffding tree pickled every 800 examples, as versions do, learned with ~16 % more
    instructions per example). What is stored is the same; only how it is put back differs."""

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind in self.dispatch_table or _rebuilt_by_attributes(kind) is None:  # type: ignore[arg-type]  # classes hash
            return NotImplemented
        state = obj.__dict__
        if not state or not _settable_inline(kind, state):
            return NotImplemented
        return copyreg.__newobj__, (kind,), state, None, None, _set_attributes  # type: ignore[attr-defined]  # untyped in typeshed


def dumps(obj: Any, reducers: Reducers | None = None) -> bytes:
    """Pickle ``obj``, with each ``random.Random`` state as one bytes object instead of 625
    integers, unseeded Gaussians without theirs (``_reduce_gaussian``): river's Gaussian
    estimators carry one each, most of a Hoeffding tree's blob, and objects of plain classes
    loaded attribute by attribute (``_Pickler``). ``reducers`` add to these."""
    buffer = io.BytesIO()
    pickler = _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {**_DISPATCH, **reducers} if reducers else _DISPATCH  # type: ignore[assignment,dict-item]  # reducers as pickle takes them
    pickler.dump(obj)
    return buffer.getvalue()


def pack(obj: Any, meta: ModelMeta, signer: Signer, *, reducers: Reducers | None = None) -> SignedBlob:
    """Pickle ``obj`` and sign it together with its metadata."""
    blob = dumps(obj, reducers)
    meta = meta.model_copy(update={"blob_sha256": hashlib.sha256(blob).hexdigest()})
    meta_bytes = meta.model_dump_json().encode()
    return SignedBlob(meta_bytes, blob, signer.sign(meta_bytes, blob))


def verify(signed: SignedBlob, signer: Signer) -> ModelMeta:
    """Check signature and library versions; return the metadata or raise ``BlobRefused``."""
    signer.verify(signed.signature, signed.meta, signed.blob)
    meta = ModelMeta.model_validate_json(signed.meta)
    if meta.river_version != river.__version__:
        raise BlobRefused(
            f"river version mismatch: blob {meta.river_version}, installed {river.__version__}"
        )
    if hashlib.sha256(signed.blob).hexdigest() != meta.blob_sha256:
        raise BlobRefused("blob digest does not match its metadata")
    return meta


def unpack(signed: SignedBlob, signer: Signer) -> tuple[ModelMeta, Any]:
    """Verify, then unpickle. Nothing is unpickled unless the checks pass."""
    meta = verify(signed, signer)
    return meta, pickle.loads(signed.blob)  # noqa: S301 - trusted only after HMAC verification
