"""streamwise_devstack: start and stop real local Kafka, Tansu, Redis and PostgreSQL servers."""

from .kafka import DEFAULT_KAFKA_VERSION, ExternalKafka, KafkaBroker, ensure_kafka_jars
from .packages import MissingDependency, ensure_debian_packages
from .ports import free_port, wait_for_port
from .postgres_server import PostgresServer
from .redis_server import ExternalRedis, RedisServer
from .tansu import TansuBroker
from .topics import create_topics, wait_for_kafka

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "ExternalKafka",
    "ExternalRedis",
    "KafkaBroker",
    "MissingDependency",
    "PostgresServer",
    "RedisServer",
    "TansuBroker",
    "create_topics",
    "ensure_debian_packages",
    "ensure_kafka_jars",
    "free_port",
    "wait_for_kafka",
    "wait_for_port",
]
