"""Prometheus metrics of the predictor: predictions, the version served, swaps and refusals.

Everything is counted where it happens (a prediction, a swap, a refusal), so the values are
right in multiprocess mode too; gauges say how workers combine (``livemax``: the newest
version any live worker serves).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamwise_core.adapters.telemetry import LATENCY_BUCKETS

from .holder import ModelHolder, ServedModel

KINDS = ("single", "batch")
SWAP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Seconds from a version's creation by the trainer to its first request here."""
REFUSAL_CLASSES = (
    ("signing key", "unknown_key"),
    ("signature", "signature"),
    ("version mismatch", "library_version"),
    ("digest", "digest"),
    ("malformed", "malformed"),
    ("metadata", "metadata"),
)
"""Refusal reasons (as the watcher words them) by reason class; the first fragment found wins."""


def refusal_class(reason: str) -> str:
    text = reason.lower()
    return next((cls for fragment, cls in REFUSAL_CLASSES if fragment in text), "other")


class PredictorMetrics:
    def __init__(self, registry: CollectorRegistry, model: str) -> None:
        self.model = model
        self.predictions = Counter(
            "streamwise_predictor_predictions", "Predictions answered, by model and request kind (single, batch).",
            ["model", "kind"], registry=registry,
        )
        self.predict_seconds = Histogram(
            "streamwise_predictor_predict_duration_seconds",
            "Time to compute the predictions of one request with the served model, by request kind.",
            ["model", "kind"], buckets=LATENCY_BUCKETS, registry=registry,
        )
        self.version = Gauge(
            "streamwise_predictor_model_version", "Version being served (0 before the first verified one).",
            ["model"], multiprocess_mode="livemax", registry=registry,
        )
        self.swaps = Counter(
            "streamwise_predictor_swaps", "Verified versions swapped in.", ["model"], registry=registry,
        )
        self.swap_lag = Histogram(
            "streamwise_predictor_swap_lag_seconds",
            "Time from a version's creation by the trainer (its metadata's created_at) to being served here: "
            "publication, announcement, loading and verification.",
            ["model"], buckets=SWAP_BUCKETS, registry=registry,
        )
        self.created_at = Gauge(
            "streamwise_predictor_model_created_timestamp_seconds",
            "When the trainer created the version being served (Unix time).",
            ["model"], multiprocess_mode="livemax", registry=registry,
        )
        self.served_at = Gauge(
            "streamwise_predictor_model_served_timestamp_seconds",
            "When the version being served was swapped in (Unix time).",
            ["model"], multiprocess_mode="livemax", registry=registry,
        )
        self.refused = Counter(
            "streamwise_predictor_refused_blobs", "Versions refused (never served), by reason class.",
            ["model", "reason"], registry=registry,
        )
        for kind in KINDS:
            self.predictions.labels(model, kind)
        self._by_kind: dict[str, tuple[Counter, Histogram]] = {}
        """The labelled children ``predicted`` updates, looked up once per kind (``labels`` costs µs a call)."""
        for _, cls in (*REFUSAL_CLASSES, ("", "other")):
            self.refused.labels(model, cls)
        self.version.labels(model).set(0)
        self.swaps.labels(model)

    def predicted(self, kind: str, count: int, seconds: float) -> None:
        children = self._by_kind.get(kind)
        if children is None:  # created on first use, as before: no empty histogram for a kind never served
            children = self._by_kind[kind] = (self.predictions.labels(self.model, kind), self.predict_seconds.labels(self.model, kind))
        predictions, predict_seconds = children
        predictions.inc(count)
        predict_seconds.observe(seconds)

    def swapped(self, served: ServedModel, now: float | None = None) -> None:
        now = time.time() if now is None else now
        created_s = utc_timestamp(served.meta.created_at)
        self.version.labels(self.model).set(served.meta.version)
        self.swaps.labels(self.model).inc()
        self.swap_lag.labels(self.model).observe(max(now - created_s, 0.0))
        self.created_at.labels(self.model).set(created_s)
        self.served_at.labels(self.model).set(now)

    def refused_blob(self, reason: str) -> None:
        self.refused.labels(self.model, refusal_class(reason)).inc()


class ObservedHolder(ModelHolder):
    """A ``ModelHolder`` that reports each swap to the metrics."""

    def __init__(self, metrics: PredictorMetrics, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.metrics = metrics
        self._clock = clock
        """Unix time, for the swap lag and the served timestamp."""

    def offer(self, candidate: ServedModel) -> bool:
        swapped = super().offer(candidate)
        if swapped:
            self.metrics.swapped(candidate, self._clock())
        return swapped


class RefusedVersions(dict[int, str]):
    """The watcher's record of refused versions (version -> reason) that counts each new refusal."""

    def __init__(self, metrics: PredictorMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def __setitem__(self, version: int, reason: str) -> None:
        if version not in self:
            self.metrics.refused_blob(reason)
        super().__setitem__(version, reason)


def utc_timestamp(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
