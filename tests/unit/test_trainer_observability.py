"""The trainer's /metrics without Kafka or Redis: read from the runtime at scrape time, and
each publication reported through the runtime's hook."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streamwise_core.adapters.telemetry import exposition
from streamwise_trainer.app import create_app
from streamwise_trainer.learning import Snapshot
from streamwise_trainer.observability import TrainerCollector, register_observability

from .test_telemetry import value
from .trainer_support import MODEL, FakeClock, fakes_of, records, runtime_without_clients, trainer_settings


def scrape(registry: CollectorRegistry) -> str:
    return exposition(registry, None, all_workers=False)[0].decode()


def test_learning_shows_at_scrape_time_without_any_call_in_the_hot_loop() -> None:
    runtime = runtime_without_clients()
    registry = register_observability(_FakeFaust(), runtime)
    before = scrape(registry)
    assert value(before, "streamwise_trainer_examples_learned_total", model=MODEL) == 0
    assert value(before, "streamwise_trainer_model_version", model=MODEL) == 0
    assert value(before, "streamwise_trainer_versions_published_total", model=MODEL) == 0

    assert runtime.trainer.handle_many(records(runtime, 120)) == []
    text = scrape(registry)
    assert value(text, "streamwise_trainer_examples_learned_total", model=MODEL) == 120
    assert value(text, "streamwise_trainer_unpublished_examples", model=MODEL) == 120
    accuracy = value(text, "streamwise_trainer_progressive_metric", model=MODEL, metric="accuracy")
    assert accuracy is not None and 0.5 < accuracy <= 1
    assert value(text, "streamwise_trainer_progressive_metric", model=MODEL, metric="accuracy_recent") is not None
    assert value(text, "streamwise_trainer_consumed_offset", model=MODEL, topic=runtime.settings.topics.events, partition="0") == 119
    assert value(text, "streamwise_trainer_dead_letters_total", model=MODEL) == 0


def test_each_publication_reports_its_duration_freshness_and_sizes() -> None:
    clock = FakeClock()
    runtime = runtime_without_clients(clock=clock, publish_every_n=10**6, publish_every_ms=10**6)
    registry = register_observability(_FakeFaust(), runtime)
    publish = fakes_of(runtime).publisher.deliver

    async def storing_takes_50_ms(snapshot: Snapshot) -> None:
        clock.advance(0.05)
        await publish(snapshot)

    fakes_of(runtime).publisher.deliver = storing_takes_50_ms  # type: ignore[method-assign]

    async def learn_then_publish() -> None:
        await runtime.after_batch(await runtime.learn(records(runtime, 50)))  # nothing due: only noted
        clock.advance(0.2)
        await runtime.after_batch(await runtime.learn(records(runtime, 50, start=50)))
        await runtime.publish()

    asyncio.run(learn_then_publish())
    assert fakes_of(runtime).publisher.published == [1]
    text = scrape(registry)
    assert value(text, "streamwise_trainer_versions_published_total", model=MODEL) == 1
    assert value(text, "streamwise_trainer_model_version", model=MODEL) == 1
    assert value(text, "streamwise_trainer_unpublished_examples", model=MODEL) == 0
    waited = value(text, "streamwise_trainer_learned_to_published_seconds_sum", model=MODEL)
    assert waited == pytest.approx(0.25), "from the first example learned, not the last"
    assert value(text, "streamwise_trainer_publish_duration_seconds_count", model=MODEL) == 1
    assert value(text, "streamwise_trainer_publish_duration_seconds_sum", model=MODEL) == pytest.approx(0.05)
    assert (value(text, "streamwise_trainer_checkpoint_bytes", model=MODEL) or 0) > (value(text, "streamwise_trainer_model_bytes", model=MODEL) or 0) > 0
    assert time.time() - (value(text, "streamwise_trainer_last_published_timestamp_seconds", model=MODEL) or 0) < 60


def test_a_failing_observer_never_stops_publishing() -> None:
    runtime = runtime_without_clients()
    runtime.on_published = lambda *_: 1 / 0
    runtime.trainer.handle_many(records(runtime, 5))
    asyncio.run(runtime.publish())
    assert runtime.trainer.unpublished == 0 and runtime.status()["version"] == 1


def test_consumer_lag_is_asked_at_scrape_time() -> None:
    class Lagging:
        def __init__(self, lag: dict[str, int] | Exception) -> None:
            self._lag = lag

        def status(self) -> dict[str, object]:
            return {"model": MODEL, "version": 4, "publish_pending": 4, "examples_seen": 9, "offsets": {"p.fraud.events:1": 41}}

        async def lag(self) -> dict[str, int]:
            if isinstance(self._lag, Exception):
                raise self._lag
            return self._lag

    collector = TrainerCollector(Lagging({"p.fraud.events:1": 17, "p.fraud.labels:0": 0}))
    registry = CollectorRegistry()
    registry.register(collector)
    asyncio.run(collector.refresh_lag())
    text = scrape(registry)
    assert value(text, "streamwise_trainer_consumer_lag", model=MODEL, topic="p.fraud.events", partition="1") == 17
    assert value(text, "streamwise_trainer_consumer_lag", model=MODEL, topic="p.fraud.labels", partition="0") == 0
    assert value(text, "streamwise_trainer_model_version", model=MODEL) == 3, "v4 is still being retried"
    collector.runtime = Lagging(ConnectionError("broker away"))
    asyncio.run(collector.refresh_lag())
    assert "streamwise_trainer_consumer_lag{" not in scrape(registry), "no stale lag once it cannot be known"


def test_the_faust_app_serves_metrics_before_the_runtime_is_ready() -> None:
    """create_app registers /metrics; a runtime that cannot report yet gives names without samples."""
    app = create_app(trainer_settings(), runtime=object())  # type: ignore[arg-type]
    assert "/metrics" in app.web.views
    registry = CollectorRegistry()
    registry.register(TrainerCollector(object()))
    text = scrape(registry)
    assert "# TYPE streamwise_trainer_examples_learned_total counter" in text
    assert "streamwise_trainer_examples_learned_total{" not in text


class _FakeFaust:
    """Just enough of a faust app for ``register_observability``: ``page`` records the handler."""

    def __init__(self) -> None:
        self.pages: dict[str, Any] = {}

    def page(self, path: str) -> Any:
        def register(handler: Any) -> Any:
            self.pages[path] = handler
            return handler

        return register


def test_the_page_answers_with_the_exposition() -> None:
    runtime = runtime_without_clients()
    app = _FakeFaust()
    register_observability(app, runtime)
    runtime.trainer.handle_many(records(runtime, 3))

    class Web:
        def bytes(self, body: bytes, *, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
            return body, headers

    class Request:
        headers = {"Accept": "text/plain"}

    body, headers = asyncio.run(app.pages["/metrics"](Web(), Request()))
    assert headers["Content-Type"].startswith("text/plain")
    assert value(body.decode(), "streamwise_trainer_examples_learned_total", model=MODEL) == 3


@pytest.mark.parametrize("pending", [None, 7])
def test_published_version_excludes_the_one_being_retried(pending: int | None) -> None:
    from streamwise_trainer.observability import published_version

    assert published_version({"version": 7, "publish_pending": pending}) == (7 if pending is None else 6)
