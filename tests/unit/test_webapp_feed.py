"""The web app's in-memory views of the streams: sampling, the feed, rates, freshness, dead
letters, and the System page's state built from scraped metrics."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streamwise_core.contracts.events import EventReceived
from streamwise_webapp.feed import (
    CounterRates,
    DeadLetterItem,
    DeadLetterLog,
    Feedback,
    FeedBuffer,
    FeedItem,
    FreshnessTracker,
    RateMeter,
    Sampler,
    confidence,
    reason_class,
)
from streamwise_webapp.feed_worker import feed_items
from streamwise_webapp.system import KafkaStatus, ServiceHealth, StateBuilder
from streamwise_webapp.upstream import Probe, parse_metrics

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _item(i: str) -> FeedItem:
    return FeedItem(id=i, features={"x": 1}, accepted_at=T0)


class TestSampler:
    def test_lets_rate_items_a_second_through(self) -> None:
        sampler = Sampler(rate=2)
        taken = sum(sampler.take(t / 100) for t in range(1000))  # 10 s of 100 events a second
        assert 20 <= taken <= 22  # the burst of 2, then 2 a second

    def test_a_slow_stream_is_shown_whole(self) -> None:
        sampler = Sampler(rate=2)
        assert all(sampler.take(t) for t in range(10))


class TestFeed:
    def test_newest_first_and_bounded(self) -> None:
        buffer = FeedBuffer(size=3)
        for i in "abcd":
            buffer.add(_item(i))
        assert [i.id for i in buffer.items()] == ["d", "c", "b"]
        assert [i.id for i in buffer.items(2)] == ["d", "c"]

    def test_feedback_is_attached_to_its_item(self) -> None:
        buffer = FeedBuffer(size=3)
        buffer.add(_item("a"))
        updated = buffer.record_feedback("a", Feedback(label=True, by="olivia", at=T0))
        assert updated is not None and updated.feedback is not None and updated.feedback.by == "olivia"
        assert buffer.get("a") == updated
        assert buffer.record_feedback("gone", Feedback(label=True, by="x", at=T0)) is None

    @pytest.mark.parametrize(("prediction", "probabilities", "expected"), [
        (True, {"true": 0.9, "false": 0.1}, 0.9), (False, {"true": 0.3, "false": 0.7}, 0.7),
        ("b", {"a": 0.2, "b": 0.5, "c": 0.3}, 0.5), (1.5, None, None),
    ])
    def test_confidence_is_the_predicted_class_probability(self, prediction: object, probabilities: dict[str, float] | None,
                                                          expected: float | None) -> None:
        assert confidence(prediction, probabilities) == expected

    def test_events_are_joined_with_the_predictors_answer_by_id(self) -> None:
        events = [EventReceived(id=i, features={"x": 1.0}, timestamp=T0, received_at=T0) for i in ("e1", "e2")]
        answer = {"model": "m", "version": 7, "predictions": [
            {"id": "e2", "prediction": True, "probabilities": {"true": 0.8, "false": 0.2}}]}
        first, second = feed_items(events, answer, None)
        assert (first.prediction, first.problem) == (None, "no prediction")
        assert (second.prediction, second.confidence, second.version, second.model) == (True, 0.8, 7, "m")
        [down] = feed_items(events[:1], None, "the predictor is unavailable")
        assert down.problem == "the predictor is unavailable" and down.version is None


class TestRates:
    def test_meter_counts_over_its_window(self) -> None:
        meter = RateMeter(window_s=10)
        meter.add(50, 0.0)
        meter.add(50, 5.0)
        assert meter.rate(5.0) == 10.0
        assert meter.rate(12.0) == 5.0
        assert meter.total == 100

    def test_counter_rates_between_readings_and_after_a_reset(self) -> None:
        rates = CounterRates()
        assert rates.rate("c", 100, 0.0) is None
        assert rates.rate("c", 150, 2.0) == 25.0
        assert rates.rate("c", 10, 3.0) is None  # the service restarted
        assert rates.rate("c", 20, 4.0) == 10.0


class TestFreshness:
    def test_measured_from_the_newest_event_a_version_covers(self) -> None:
        tracker = FreshnessTracker(resolution_s=0.1)
        for offset, at in ((0, 100.0), (1, 100.05), (2, 100.5), (3, 101.0)):
            tracker.accepted(0, offset, at)
        # v covers offsets up to 2 of the events topic: the mark of offset 2 (accepted at 100.5)
        assert tracker.served("p.app.events", {"p.app.events:0": 2, "p.app.labels:0": 9}, 101.5) == pytest.approx(1.0)
        # offset 1 fell inside the first mark's 0.1 s: the earlier mark is used (never optimistic)
        assert tracker.served("p.app.events", {"p.app.events:0": 1}, 101.5) == pytest.approx(1.5)
        assert tracker.served("p.app.events", {"other:0": 5}, 101.5) is None
        summary = tracker.summary()
        assert (summary["samples"], summary["last_s"], summary["max_s"]) == (2, pytest.approx(1.5), pytest.approx(1.5))


class TestDeadLetters:
    def test_newest_first_filtered_and_counted_by_reason(self) -> None:
        log = DeadLetterLog(keep=2)
        for i, reason in enumerate(["invalid JSON: x", "schema: amount", "invalid JSON: y"]):
            log.add(DeadLetterItem(topic="t", partition=0, offset=i, key=None, reason=reason, consumer="trainer", at=T0,
                                   value_preview="{"))
        assert [d.offset for d in log.items(10)] == [2, 1]
        assert [d.offset for d in log.items(10, reason="json")] == [2]
        assert log.by_reason == {"invalid JSON": 2, "schema": 1} and log.total == 3
        assert reason_class("") == "unknown"


METRICS = {
    "ingest": """
# TYPE streamwise_ingest_accepted counter
streamwise_ingest_accepted_total{kind="events"} %(events)s
streamwise_ingest_accepted_total{kind="labels"} 10
""",
    "predictor": """
# TYPE streamwise_predictor_model_created_timestamp_seconds gauge
streamwise_predictor_model_created_timestamp_seconds{model="m"} 1000
# TYPE streamwise_predictor_swap_lag_seconds histogram
streamwise_predictor_swap_lag_seconds_bucket{le="+Inf"} %(swaps)s
streamwise_predictor_swap_lag_seconds_count %(swaps)s
streamwise_predictor_swap_lag_seconds_sum %(lag_sum)s
""",
    "trainer": """
# TYPE streamwise_trainer_consumer_lag gauge
streamwise_trainer_consumer_lag{topic="p.app.events",partition="0"} 7
streamwise_trainer_consumer_lag{topic="p.app.labels",partition="0"} 3
""",
}


def _probes(**values: float) -> dict[str, Probe]:
    return {name: Probe(name, f"http://{name}", healthy=True, samples=parse_metrics(text % values))
            for name, text in METRICS.items()}


class TestSystemState:
    def test_rates_lag_and_freshness_from_two_scrapes(self) -> None:
        builder = StateBuilder()
        kwargs = dict(webapp=ServiceHealth(name="webapp", url="", healthy=True, ready=True, latency_ms=None, problem=None),
                      wall=1010.0, observed_per_s=4.0, freshness=FreshnessTracker(), dead_letters=DeadLetterLog(5),
                      kafka=KafkaStatus(connected=True, problem=None), checked_at=T0)
        first = builder.build(_probes(events=100, swaps=1, lag_sum=0.5), now=0.0, **kwargs)  # type: ignore[arg-type]
        assert first.throughput.ingest_events_per_s is None  # one reading is no rate
        second = builder.build(_probes(events=300, swaps=3, lag_sum=0.7), now=2.0, **kwargs)  # type: ignore[arg-type]
        assert second.throughput.ingest_events_per_s == pytest.approx(100.0)
        assert second.throughput.ingest_labels_per_s == pytest.approx(0.0)
        assert second.freshness.created_to_served_s == pytest.approx(0.1)  # (0.7 - 0.5) / (3 - 1)
        assert second.freshness.served_model_age_s == pytest.approx(10.0)
        assert [(x.topic, x.lag) for x in second.lag] == [("p.app.events", 7), ("p.app.labels", 3)]
        assert [s.name for s in second.services] == ["webapp", "ingest", "predictor", "trainer"]

    def test_lag_names_the_model_and_is_grouped_by_it(self) -> None:
        trainer = """
# TYPE streamwise_trainer_consumer_lag gauge
streamwise_trainer_consumer_lag{model="fraud-tree",topic="p.app.labels",partition="0"} 4
streamwise_trainer_consumer_lag{model="fraud-lr",topic="p.app.events",partition="1"} 2
streamwise_trainer_consumer_lag{model="fraud-tree",topic="p.app.events",partition="0"} 9
streamwise_trainer_consumer_lag{model="fraud-lr",topic="p.app.events",partition="0"} 1
streamwise_trainer_consumer_lag{topic="p.app.events",partition="0"} 5
"""
        probes = _probes(events=1, swaps=1, lag_sum=0.1)
        probes["trainer"] = Probe("trainer", "http://trainer", healthy=True, samples=parse_metrics(trainer))
        state = StateBuilder().build(
            probes, webapp=ServiceHealth(name="webapp", url="", healthy=True, ready=True, latency_ms=None, problem=None),
            now=0.0, wall=1010.0, observed_per_s=0.0, freshness=FreshnessTracker(), dead_letters=DeadLetterLog(5),
            kafka=KafkaStatus(connected=True, problem=None), checked_at=T0,
        )
        assert [(x.model, x.topic, x.partition, x.lag) for x in state.lag] == [
            (None, "p.app.events", 0, 5),  # a trainer that does not name the model
            ("fraud-lr", "p.app.events", 0, 1), ("fraud-lr", "p.app.events", 1, 2),
            ("fraud-tree", "p.app.events", 0, 9), ("fraud-tree", "p.app.labels", 0, 4),
        ]
