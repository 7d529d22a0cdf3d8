"""Prometheus metrics of the trainer, served by faust's web server on GET /metrics.

Nothing here runs in the hot loop. What the trainer counts anyway (examples, progressive
metrics, dead letters, offsets) is read from ``runtime.status()`` when Prometheus scrapes, by
a custom collector; the consumer lag is asked of the runtime at the same moment. Only a
publication, a few times a second at most, updates metric objects: through the runtime's
``on_published`` hook.

``register_observability(app, runtime)`` is the one call ``create_app`` makes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamwise_core.telemetry import METRICS_PATH, exposition, metrics_registry

from .core import Snapshot
from .runtime import TrainerRuntime

log = logging.getLogger(__name__)

LAG_TIMEOUT_S = 2.0
"""A scrape waits at most this long for the end offsets of the partitions."""
PUBLISH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

Status = Mapping[str, Any]


def _split_tp(key: str) -> tuple[str, str]:
    topic, _, partition = key.rpartition(":")
    return topic, partition


def published_version(status: Status) -> int:
    """The newest version published: the runtime's version, less one while it retries that one."""
    version = int(status.get("version") or 0)
    return version - 1 if status.get("publish_pending") is not None else version


class TrainerCollector(Collector):
    """Reads the runtime's counters when Prometheus scrapes, so learning pays nothing for them.

    Every family is reported even when the runtime has nothing to say yet (no samples), so the
    names the dashboard uses are always there.
    """

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.lag: Mapping[str, int] | None = None
        """Records not yet consumed per ``topic:partition``, as of the last scrape."""

    async def refresh_lag(self) -> None:
        ask = getattr(self.runtime, "lag", None)
        if ask is None:
            self.lag = None
            return
        try:
            async with asyncio.timeout(LAG_TIMEOUT_S):
                self.lag = dict(await ask())
        except Exception as exc:  # noqa: BLE001 - a broker that is away costs the lag samples, not the scrape
            log.debug("consumer lag unavailable: %r", exc)
            self.lag = None

    def _status(self) -> Status:
        try:
            return self.runtime.status()
        except Exception as exc:  # noqa: BLE001 - a scrape must answer: the families come without samples
            log.warning("trainer status unavailable for metrics: %r", exc)
            return {}

    def describe(self) -> Iterator[Metric]:
        """The families, without samples (for the registry's name check; no status read)."""
        return self._families({}, None)

    def collect(self) -> Iterator[Metric]:
        return self._families(self._status(), self.lag)

    def _families(self, status: Status, lag_by_tp: Mapping[str, int] | None) -> Iterator[Metric]:
        model = str(status.get("model", ""))
        has = bool(status)

        def counter(name: str, doc: str, key: str) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=["model"])
            if has and status.get(key) is not None:
                family.add_metric([model], float(status[key]))  # type: ignore[arg-type]
            return family

        def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=labels)

        yield counter(
            "streamwise_trainer_examples_learned", "Examples learned (predicted, scored, then learned), restored ones included.",
            "examples_seen",
        )
        progressive = gauge(
            "streamwise_trainer_progressive_metric",
            "Progressive-validation metric of the model being trained (all-time, and *_recent over the last examples).",
            ["model", "metric"],
        )
        for metric, value in (status.get("metrics") or {}).items():
            progressive.add_metric([model, str(metric)], float(value))
        yield progressive
        version = gauge("streamwise_trainer_model_version", "Newest version published.", ["model"])
        unpublished = gauge("streamwise_trainer_unpublished_examples", "Examples learned since the last publication.", ["model"])
        if has:
            version.add_metric([model], published_version(status))
            trainer = getattr(self.runtime, "trainer", None)
            waiting = getattr(trainer, "unpublished", None)
            if isinstance(waiting, int):
                unpublished.add_metric([model], waiting)
        yield version
        yield unpublished
        yield counter("streamwise_trainer_dead_letters", "Records sent to the dead-letter topic.", "dead_letters")
        yield counter("streamwise_trainer_publish_failures", "Publications that failed (and were retried).", "publish_failures")
        yield counter("streamwise_trainer_duplicates_ignored", "Examples not learned again: their id was learned recently.", "duplicates_ignored")
        yield counter("streamwise_trainer_skipped_replayed", "Records skipped: the checkpoint already holds them.", "skipped_replayed")
        yield counter("streamwise_trainer_join_evicted", "Events or labels evicted from the join before their other half came.", "join_evicted")
        yield counter("streamwise_trainer_registry_failures", "Registry writes deferred because the database failed.", "registry_failures")
        join = gauge("streamwise_trainer_join_waiting", "Events waiting for their label, labels waiting for their event.", ["model", "side"])
        backlog = gauge("streamwise_trainer_registry_backlog", "Published versions whose registry row is not written yet.", ["model"])
        if has:
            for side in ("features", "labels"):
                if status.get(f"waiting_{side}") is not None:
                    join.add_metric([model, side], float(status[f"waiting_{side}"]))
            if status.get("registry_backlog") is not None:
                backlog.add_metric([model], float(status["registry_backlog"]))
        yield join
        yield backlog
        offsets = gauge(
            "streamwise_trainer_consumed_offset", "Last offset the trainer handled, per topic and partition.", ["topic", "partition"],
        )
        for key, offset in (status.get("offsets") or {}).items():
            offsets.add_metric(list(_split_tp(str(key))), float(offset))
        yield offsets
        lag = gauge(
            "streamwise_trainer_consumer_lag", "Records in the topic not yet consumed (end offset minus position).",
            ["topic", "partition"],
        )
        for key, records in (lag_by_tp or {}).items():
            lag.add_metric(list(_split_tp(str(key))), float(records))
        yield lag


class PublicationMetrics:
    """What each publication reports through ``TrainerRuntime.on_published``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.published = Counter(
            "streamwise_trainer_versions_published", "Versions published by this process.", ["model"], registry=registry,
        )
        self.duration = Histogram(
            "streamwise_trainer_publish_duration_seconds",
            "Time to publish one version: Redis (blob, pointer, checkpoint, announcement), registry row, models topic.",
            ["model"], buckets=PUBLISH_BUCKETS, registry=registry,
        )
        self.freshness = Histogram(
            "streamwise_trainer_learned_to_published_seconds",
            "Time from learning the oldest example of a version to that version being published.",
            ["model"], buckets=FRESHNESS_BUCKETS, registry=registry,
        )
        self.checkpoint_bytes = Gauge(
            "streamwise_trainer_checkpoint_bytes", "Size of the last checkpoint published (pickled state).", ["model"],
            registry=registry,
        )
        self.model_bytes = Gauge(
            "streamwise_trainer_model_bytes", "Size of the last model blob published.", ["model"], registry=registry,
        )
        self.published_at = Gauge(
            "streamwise_trainer_last_published_timestamp_seconds", "When the last version was published (Unix time).",
            ["model"], registry=registry,
        )

    def prepare(self, model: str) -> None:
        """Make the series of ``model`` exist (at zero) before the first publication."""
        for metric in (self.published, self.duration, self.freshness):
            metric.labels(model)

    def observe(self, snapshot: Snapshot, publish_s: float, waited_s: float) -> None:
        model = snapshot.meta.model
        self.published.labels(model).inc()
        self.duration.labels(model).observe(publish_s)
        self.freshness.labels(model).observe(waited_s)
        if snapshot.checkpoint is not None:
            self.checkpoint_bytes.labels(model).set(len(snapshot.checkpoint.blob))
        self.model_bytes.labels(model).set(len(snapshot.model.blob))
        self.published_at.labels(model).set(time.time())


def register_observability(app: Any, runtime: TrainerRuntime) -> CollectorRegistry:
    """Serve GET /metrics on the faust ``app`` from a registry of its own; return the registry."""
    registry = metrics_registry()
    collector = TrainerCollector(runtime)
    registry.register(collector)
    publications = PublicationMetrics(registry)
    if isinstance(runtime, TrainerRuntime):
        publications.prepare(runtime.settings.spec.model.name)
        runtime.on_published = publications.observe

    @app.page(METRICS_PATH)
    async def metrics(web: Any, request: Any) -> Any:
        """Prometheus exposition (text or OpenMetrics, as the scraper asks)."""
        await collector.refresh_lag()
        body, content_type = exposition(registry, request.headers.get("Accept"), all_workers=False)
        return web.bytes(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})

    return registry
