"""Ingest settings: the shared ones plus request limits."""

from __future__ import annotations

from typing import ClassVar, Literal

from streamwise_core.adapters.settings import Settings


class IngestSettings(Settings):
    links: ClassVar[frozenset[Literal["kafka", "redis", "database"]]] = frozenset({"kafka"})
    max_body_bytes: int = 8 * 1024 * 1024
    max_items_per_request: int = 10_000
    produce_timeout_s: float = 10.0
    """How long a request waits for Kafka before answering 503."""
