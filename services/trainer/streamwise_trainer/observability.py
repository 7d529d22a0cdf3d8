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

from streamwise_core.adapters.telemetry import METRICS_PATH, exposition, metrics_registry

from .learning import Snapshot
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


def _runtimes(source: Any) -> list[Any]:
    """The runtimes behind ``source``: a supervisor's (one per model), or ``source`` itself."""
    runtimes = getattr(source, "runtimes", None)
    return list(runtimes.values()) if isinstance(runtimes, Mapping) else [source]


class TrainerCollector(Collector):
    """Reads each model's runtime counters when Prometheus scrapes, so learning pays nothing
    for them. ``runtime`` is a supervisor of several runtimes, or one runtime.

    Every family is reported even when nothing has anything to say yet (no samples), so the
    names the dashboard uses are always there.
    """

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.lag: dict[str, Mapping[str, int]] | None = None
        """Records not yet consumed per model and ``topic:partition``, as of the last scrape."""

    async def refresh_lag(self) -> None:
        lags: dict[str, Mapping[str, int]] = {}
        for runtime in _runtimes(self.runtime):
            ask = getattr(runtime, "lag", None)
            if ask is None:
                continue
            try:
                async with asyncio.timeout(LAG_TIMEOUT_S):
                    lags[self._model_of(runtime)] = dict(await ask())
            except Exception as exc:  # noqa: BLE001 - a broker that is away costs the lag samples, not the scrape
                log.debug("consumer lag unavailable: %r", exc)
        self.lag = lags or None

    @staticmethod
    def _model_of(runtime: Any) -> str:
        settings = getattr(runtime, "settings", None)
        if settings is not None:
            return str(settings.spec.model.name)
        try:  # a runtime-like object that only reports its status
            return str(runtime.status().get("model", ""))
        except Exception:  # noqa: BLE001
            return ""

    def _statuses(self) -> list[tuple[Any, Status]]:
        found = []
        for runtime in _runtimes(self.runtime):
            try:
                found.append((runtime, runtime.status()))
            except Exception as exc:  # noqa: BLE001 - a scrape must answer: the families come without samples
                log.warning("trainer status unavailable for metrics: %r", exc)
        return found

    def describe(self) -> Iterator[Metric]:
        """The families, without samples (for the registry's name check; no status read)."""
        return self._families([], None)

    def collect(self) -> Iterator[Metric]:
        return self._families(self._statuses(), self.lag)

    def _families(
        self, statuses: list[tuple[Any, Status]], lags: Mapping[str, Mapping[str, int]] | None,
    ) -> Iterator[Metric]:
        def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, labels=labels)

        counters = [
            ("streamwise_trainer_examples_learned", "Examples learned (predicted, scored, then learned), restored ones included.", "examples_seen"),
            ("streamwise_trainer_dead_letters", "Records sent to the dead-letter topic.", "dead_letters"),
            ("streamwise_trainer_publish_failures", "Publications that failed (and were retried).", "publish_failures"),
            ("streamwise_trainer_duplicates_ignored", "Examples not learned again: their id was learned recently.", "duplicates_ignored"),
            ("streamwise_trainer_skipped_replayed", "Records skipped: the checkpoint already holds them.", "skipped_replayed"),
            ("streamwise_trainer_join_evicted", "Events or labels evicted from the join before their other half came.", "join_evicted"),
            ("streamwise_trainer_registry_failures", "Registry writes deferred because the database failed.", "registry_failures"),
            ("streamwise_trainer_drifts", "Drifts detected in the model's error stream.", "drifts_detected"),
        ]
        for name, doc, key in counters:
            family = CounterMetricFamily(name, doc, labels=["model"])
            for _, status in statuses:
                if status.get(key) is not None:
                    family.add_metric([str(status.get("model", ""))], float(status[key]))
            yield family
        progressive = gauge(
            "streamwise_trainer_progressive_metric",
            "Progressive-validation metric of the model being trained (all-time, and *_recent over the last examples).",
            ["model", "metric"],
        )
        version = gauge("streamwise_trainer_model_version", "Newest version published.", ["model"])
        unpublished = gauge("streamwise_trainer_unpublished_examples", "Examples learned since the last publication.", ["model"])
        join = gauge("streamwise_trainer_join_waiting", "Events waiting for their label, labels waiting for their event.", ["model", "side"])
        backlog = gauge("streamwise_trainer_registry_backlog", "Published versions whose registry row is not written yet.", ["model"])
        champion = gauge("streamwise_trainer_champion", "1 for the model served by default, 0 for a challenger.", ["model"])
        offsets = gauge(
            "streamwise_trainer_consumed_offset", "Last offset the trainer handled, per topic and partition.",
            ["model", "topic", "partition"],
        )
        for runtime, status in statuses:
            model = str(status.get("model", ""))
            for metric, value in (status.get("metrics") or {}).items():
                progressive.add_metric([model, str(metric)], float(value))
            version.add_metric([model], published_version(status))
            waiting = getattr(getattr(runtime, "trainer", None), "unpublished", None)
            if isinstance(waiting, int):
                unpublished.add_metric([model], waiting)
            for side in ("features", "labels"):
                if status.get(f"waiting_{side}") is not None:
                    join.add_metric([model, side], float(status[f"waiting_{side}"]))
            if status.get("registry_backlog") is not None:
                backlog.add_metric([model], float(status["registry_backlog"]))
            if status.get("role") is not None:
                champion.add_metric([model], 1.0 if status["role"] == "champion" else 0.0)
            for key, offset in (status.get("offsets") or {}).items():
                offsets.add_metric([model, *_split_tp(str(key))], float(offset))
        yield from (progressive, version, unpublished, join, backlog, champion, offsets)
        lag = gauge(
            "streamwise_trainer_consumer_lag", "Records in the topic not yet consumed (end offset minus position).",
            ["model", "topic", "partition"],
        )
        for model, by_tp in (lags or {}).items():
            for key, records in by_tp.items():
                lag.add_metric([model, *_split_tp(str(key))], float(records))
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
    elif hasattr(runtime, "on_runtime"):

        def observe(started: TrainerRuntime) -> None:
            publications.prepare(started.settings.spec.model.name)
            started.on_published = publications.observe

        runtime.on_runtime = observe

    @app.page(METRICS_PATH)
    async def metrics(web: Any, request: Any) -> Any:
        """Prometheus exposition (text or OpenMetrics, as the scraper asks)."""
        await collector.refresh_lag()
        body, content_type = exposition(registry, request.headers.get("Accept"), all_workers=False)
        return web.bytes(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})

    return registry
