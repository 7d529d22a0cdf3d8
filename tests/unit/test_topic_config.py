"""The topic configs: the defaults the docs promise, read from the environment, one config per topic."""

from __future__ import annotations

import pytest

from streamwise_core.adapters.settings import Settings, Topics
from streamwise_core.contracts.topic_config import DAY_MS, TopicRetention, topic_configs

TOPICS = Topics.for_app("streamwise", "fraud")


def test_defaults() -> None:
    configs = topic_configs(TOPICS, TopicRetention())
    assert sorted(configs) == sorted(TOPICS.all())
    for topic, days in ((TOPICS.events, 7), (TOPICS.labels, 7), (TOPICS.predictions, 3), (TOPICS.dead_letters, 14)):
        assert configs[topic] == {"cleanup.policy": "delete", "retention.ms": str(days * DAY_MS), "segment.ms": str(DAY_MS)}
    assert configs[TOPICS.models] == {"cleanup.policy": "compact", "segment.ms": "3600000", "min.compaction.lag.ms": "3600000"}
    assert all(isinstance(v, str) for config in configs.values() for v in config.values())


def test_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMWISE_TOPIC_RETENTION__EVENTS_MS", "1000")
    monkeypatch.setenv("STREAMWISE_TOPIC_RETENTION__MODELS_SEGMENT_MS", "2000")
    retention = Settings().topic_retention
    assert (retention.events_ms, retention.models_segment_ms, retention.labels_ms) == (1000, 2000, 7 * DAY_MS)
    configs = topic_configs(TOPICS, retention)
    assert configs[TOPICS.events]["retention.ms"] == "1000" and configs[TOPICS.models]["segment.ms"] == "2000"


def test_retention_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMWISE_TOPIC_RETENTION__EVENTS_MS", "-1")  # Kafka's "forever": not what this issue wants
    with pytest.raises(ValueError, match="events_ms"):
        Settings()
