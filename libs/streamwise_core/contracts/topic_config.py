"""The names and Kafka configs of an application's topics: the one source for every place that creates them.

The trainer and compose's ``topics`` step create the topics with these (``kafka.ensure_app_topics``,
which also converges a topic created earlier with other values); the Strimzi ``KafkaTopic`` objects in
deploy/k8s/overlays/prod repeat them, and tests/deploy/test_topic_config.py checks that they agree.
"""

from __future__ import annotations

from pydantic import BaseModel, NonNegativeInt, PositiveInt

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class Topics(BaseModel):
    """Topic names of one application.

    >>> topics = Topics.for_app("streamwise", "fraud")
    >>> topics.events, topics.dead_letters
    ('streamwise.fraud.events', 'streamwise.fraud.dead-letters')
    """

    events: str
    labels: str
    predictions: str
    models: str
    dead_letters: str

    @classmethod
    def for_app(cls, prefix: str, app: str) -> Topics:
        base = f"{prefix}.{app}"
        return cls(
            events=f"{base}.events",
            labels=f"{base}.labels",
            predictions=f"{base}.predictions",
            models=f"{base}.models",
            dead_letters=f"{base}.dead-letters",
        )

    def all(self) -> list[str]:
        return [self.events, self.labels, self.predictions, self.models, self.dead_letters]


class TopicRetention(BaseModel):
    """How long each topic keeps its records (``STREAMWISE_TOPIC_RETENTION__*``, milliseconds)."""

    events_ms: PositiveInt = 7 * DAY_MS
    """The replay horizon: re-learning from the events topic, a challenger started from an earlier
    offset or a trainer restoring an older checkpoint can start no earlier than this."""
    labels_ms: PositiveInt = 7 * DAY_MS
    """Keep it at least ``events_ms``: replayed events whose labels are gone teach nothing."""
    predictions_ms: PositiveInt = 3 * DAY_MS
    dead_letters_ms: PositiveInt = 14 * DAY_MS
    segment_ms: PositiveInt = DAY_MS
    """Age at which a partition's open segment is closed. Kafka deletes whole closed segments only,
    and a segment otherwise closes at 1 GiB (rarely reached at demo rates) or after Kafka's default
    of 7 days: records would outlive ``*_ms`` by up to this much."""
    models_segment_ms: PositiveInt = HOUR_MS
    """The models topic is compacted, and compaction skips the open segment: on a topic this small
    only a time-based roll lets the cleaner ever see its records."""
    models_min_compaction_lag_ms: NonNegativeInt = HOUR_MS
    """Announcements younger than this are never compacted away: a reader that is at most this far
    behind sees every one, an older reader the newest per model."""


def topic_configs(topics: Topics, retention: TopicRetention) -> dict[str, dict[str, str]]:
    """Kafka topic configs (Kafka names, string values) by topic name, for the five topics of an app.

    The models topic is compacted: its records are keyed by model name, so it keeps the newest
    announcement of each model for good. ``retention.bytes`` stays unset (unbounded per partition):
    the size follows from the rate times ``*_ms`` + ``segment_ms``.
    """

    def deleted_after(ms: int) -> dict[str, str]:
        return {"cleanup.policy": "delete", "retention.ms": str(ms), "segment.ms": str(retention.segment_ms)}

    return {
        topics.events: deleted_after(retention.events_ms),
        topics.labels: deleted_after(retention.labels_ms),
        topics.predictions: deleted_after(retention.predictions_ms),
        topics.dead_letters: deleted_after(retention.dead_letters_ms),
        topics.models: {
            "cleanup.policy": "compact",
            "segment.ms": str(retention.models_segment_ms),
            "min.compaction.lag.ms": str(retention.models_min_compaction_lag_ms),
        },
    }
