"""The System page's data: health of every service, consumer lag, throughput, freshness and
dead letters, read every few seconds and pushed to open pages."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from streamwise_core.contracts.events import utcnow

from .feed import CounterRates, DeadLetterLog, FreshnessTracker, RateMeter
from .upstream import Probe, Sample, ServiceProber

log = logging.getLogger(__name__)


class ServiceHealth(BaseModel):
    name: str
    url: str
    healthy: bool
    ready: bool | None = Field(description="`None` where the service has no readiness check.")
    latency_ms: float | None
    problem: str | None


class TopicLag(BaseModel):
    model: str | None = Field(default=None, description="The model whose learner reads the topic (`None`: a trainer "
                              "that does not say).")
    topic: str
    partition: int
    lag: float = Field(description="Records not yet consumed by the trainer.")


class Throughput(BaseModel):
    events_observed_per_s: float = Field(description="Events arriving on the events topic (the web app's own count).")
    ingest_events_per_s: float | None
    ingest_labels_per_s: float | None
    predictions_per_s: float | None
    learned_per_s: float | None


class Freshness(BaseModel):
    last_s: float | None = Field(description="Acceptance of the newest event a version learned → that version served.")
    median_s: float | None
    max_s: float | None
    samples: int
    learned_to_published_s: float | None = Field(description="Trainer: oldest example of a version → published (recent mean).")
    created_to_served_s: float | None = Field(description="Predictor: version created → served (recent mean).")
    served_model_age_s: float | None = Field(description="Age of the version the predictor answers with.")


class DeadLetterSummary(BaseModel):
    total: int = Field(description="Dead letters read since the web app started (the topic is read from its start).")
    by_reason: dict[str, int]


class KafkaStatus(BaseModel):
    connected: bool
    problem: str | None


class SystemState(BaseModel):
    checked_at: datetime
    services: list[ServiceHealth]
    lag: list[TopicLag]
    throughput: Throughput
    freshness: Freshness
    dead_letters: DeadLetterSummary
    kafka: KafkaStatus


def _value(samples: Iterable[Sample], name: str, **labels: str) -> float | None:
    """Sum of the samples named ``name`` whose labels include ``labels``; None if there are none."""
    found = [v for n, ls, v in samples if n == name and all(ls.get(k) == x for k, x in labels.items())]
    return sum(found) if found else None


def _lag(trainer: Iterable[Sample]) -> list[TopicLag]:
    """The trainer's lag per model, topic and partition, grouped by model."""
    rows = (
        TopicLag(model=ls.get("model"), topic=ls.get("topic", "?"), partition=int(ls.get("partition", "0") or 0), lag=v)
        for n, ls, v in trainer if n == "streamwise_trainer_consumer_lag"
    )
    return sorted(rows, key=lambda x: (x.model or "", x.topic, x.partition))


class StateBuilder:
    """Turns probes and the web app's own counters into a ``SystemState``; keeps counter history."""

    def __init__(self) -> None:
        self._rates = CounterRates()
        self._means: dict[str, float] = {}

    def _recent_mean(self, key: str, samples: list[Sample], name: str, now: float) -> float | None:
        total = self._rates.rate(f"{key}:sum", _value(samples, f"{name}_sum"), now)
        count = self._rates.rate(f"{key}:count", _value(samples, f"{name}_count"), now)
        if total is not None and count:
            self._means[key] = total / count
        return self._means.get(key)

    def build(
        self, probes: dict[str, Probe], *, webapp: ServiceHealth, now: float, wall: float, observed_per_s: float,
        freshness: FreshnessTracker, dead_letters: DeadLetterLog, kafka: KafkaStatus, checked_at: datetime,
    ) -> SystemState:
        ingest = probes["ingest"].samples
        predictor = probes["predictor"].samples
        trainer = probes["trainer"].samples
        lag = _lag(trainer)
        created = _value(predictor, "streamwise_predictor_model_created_timestamp_seconds")
        summary = freshness.summary()
        return SystemState(
            checked_at=checked_at,
            services=[webapp, *(
                ServiceHealth(name=p.name, url=p.url, healthy=p.healthy, ready=p.ready, latency_ms=p.latency_ms, problem=p.problem)
                for p in probes.values()
            )],
            lag=lag,
            throughput=Throughput(
                events_observed_per_s=observed_per_s,
                ingest_events_per_s=self._rates.rate(
                    "ingest:events", _value(ingest, "streamwise_ingest_accepted_total", kind="events"), now),
                ingest_labels_per_s=self._rates.rate(
                    "ingest:labels", _value(ingest, "streamwise_ingest_accepted_total", kind="labels"), now),
                predictions_per_s=self._rates.rate(
                    "predictions", _value(predictor, "streamwise_predictor_predictions_total"), now),
                learned_per_s=self._rates.rate(
                    "learned", _value(trainer, "streamwise_trainer_examples_learned_total"), now),
            ),
            freshness=Freshness(
                last_s=summary["last_s"], median_s=summary["median_s"], max_s=summary["max_s"],
                samples=int(summary["samples"] or 0),
                learned_to_published_s=self._recent_mean(
                    "l2p", trainer, "streamwise_trainer_learned_to_published_seconds", now),
                created_to_served_s=self._recent_mean("c2s", predictor, "streamwise_predictor_swap_lag_seconds", now),
                served_model_age_s=max(0.0, wall - created) if created else None,
            ),
            dead_letters=DeadLetterSummary(total=dead_letters.total, by_reason=dict(dead_letters.by_reason.most_common(20))),
            kafka=kafka,
        )


class SystemMonitor:
    """Probes the services every ``interval_s`` and publishes the state."""

    def __init__(
        self, prober: ServiceProber, urls: dict[str, str], interval_s: float, *, meter: RateMeter,
        freshness: FreshnessTracker, dead_letters: DeadLetterLog, kafka: Callable[[], KafkaStatus],
        webapp: Callable[[], ServiceHealth], publish: Callable[[SystemState], None],
    ) -> None:
        self._prober = prober
        self._urls = urls
        self._interval_s = interval_s
        self._meter = meter
        self._freshness = freshness
        self._dead_letters = dead_letters
        self._kafka = kafka
        self._webapp = webapp
        self._publish = publish
        self._builder = StateBuilder()
        self.state: SystemState | None = None

    async def check(self) -> SystemState:
        paths: dict[str, dict[str, Any]] = {
            "ingest": {"ready_path": "/readyz"},
            "predictor": {"ready_path": "/readyz"},
            "trainer": {"ready_path": None, "status_path": "/v1/status"},
        }
        probes = await asyncio.gather(*(self._prober.probe(n, self._urls[n], **kw) for n, kw in paths.items()))
        now = time.monotonic()
        self.state = self._builder.build(
            {p.name: p for p in probes}, webapp=self._webapp(), now=now, wall=time.time(),
            observed_per_s=self._meter.rate(now), freshness=self._freshness, dead_letters=self._dead_letters,
            kafka=self._kafka(), checked_at=utcnow(),
        )
        return self.state

    async def run(self) -> None:
        while True:
            try:
                self._publish(await self.check())
            except Exception:  # a bug here must not stop the page from updating
                log.exception("checking the services failed")
            await asyncio.sleep(self._interval_s)
