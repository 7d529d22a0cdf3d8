"""Predictor settings: the shared ones plus swap polling, model loading and request limits."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from streamwise_core.adapters.settings import Settings


class PredictorSettings(Settings):
    links: ClassVar[frozenset[Literal["kafka", "redis", "database"]]] = frozenset({"kafka", "redis"})
    poll_interval_ms: int = 1000
    """Also poll the current version, since Redis pub/sub can drop a message."""
    swap_load_cpu_share: float = Field(default=0.25, gt=0, le=1)
    """Largest share of one CPU that loading a new model version may take (the loading thread
    pauses so often): serving keeps the rest. 1 = load at full speed. A 37 MB ensemble that a
    bare ``pickle.loads`` reads in ~1.4 s was served ~10 s after its publication at 0.25; a small
    model, loaded within one 2 ms slice, is never paused (docs/benchmarks.md, *Swaps under load*)."""
    swap_gc_freeze: bool = True
    """No full garbage collection while a model loads, then ``gc.freeze()``, so that later
    collections never walk the models' objects (a full pass over a 37 MB ensemble: ~300 ms)."""
    max_batch: int = 1000
    max_body_bytes: int = 2 * 1024 * 1024
    shadow_sample: float = Field(default=0.1, ge=0, le=1)
    """Share of requests also scored by every challenger in the background (shadow.py); 0 = none."""
