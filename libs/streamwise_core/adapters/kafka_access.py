"""What each service may do on Kafka: the least privilege of its Kafka user.

The one source of the services' Kafka permissions: the prod overlay's Strimzi ``KafkaUser`` ACLs
are checked against it (``tests/deploy/test_k8s.py``), and the secured test broker grants
exactly these (``streamwise_devstack.kafka_secured``). Consumers use no consumer group (the
trainer keeps its offsets in its checkpoint), so no group permission is needed; an idempotent
producer needs only ``Write`` on its topics (Kafka 3.0 and later).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from streamwise_core.adapters.settings import Topics

TopicRole = Literal["events", "labels", "predictions", "models", "dead_letters"]
Operation = Literal["Read", "Write", "Describe", "Create", "DescribeConfigs", "AlterConfigs"]


@dataclass(frozen=True)
class KafkaAccess:
    reads: frozenset[TopicRole] = frozenset()
    writes: frozenset[TopicRole] = frozenset()
    manages_topics: bool = False
    """Creates the application's topics and converges their configs (the trainer, at start)."""


SERVICE_ACCESS: dict[str, KafkaAccess] = {
    "ingest": KafkaAccess(writes=frozenset({"events", "labels"})),
    "trainer": KafkaAccess(reads=frozenset({"events", "labels"}), writes=frozenset({"models", "dead_letters"}), manages_topics=True),
    "predictor": KafkaAccess(writes=frozenset({"predictions"})),
    "webapp": KafkaAccess(reads=frozenset({"events", "dead_letters"}), writes=frozenset({"labels"})),
}


@dataclass(frozen=True, order=True)
class TopicAcl:
    """Allow ``operation`` on ``topic`` (a literal name, or every topic starting with it if ``prefixed``)."""

    topic: str
    operation: Operation
    prefixed: bool = False


def topic_acls(service: str, topics: Topics) -> list[TopicAcl]:
    """The ACLs of ``service``'s Kafka user for one application's ``topics``, sorted."""
    access = SERVICE_ACCESS[service]
    names: dict[TopicRole, str] = {
        "events": topics.events, "labels": topics.labels, "predictions": topics.predictions,
        "models": topics.models, "dead_letters": topics.dead_letters,
    }
    acls = {TopicAcl(names[role], op) for role in access.reads for op in ("Read", "Describe")}
    acls |= {TopicAcl(names[role], op) for role in access.writes for op in ("Write", "Describe")}
    if access.manages_topics:
        acls |= {TopicAcl(name, op) for name in names.values() for op in ("Create", "Describe", "DescribeConfigs", "AlterConfigs")}
    return sorted(acls)
