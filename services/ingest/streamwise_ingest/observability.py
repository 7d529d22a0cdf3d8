"""Prometheus metrics of ingest: what was accepted, what was refused and why."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

KINDS = {"/v1/events": "events", "/v1/labels": "labels"}
"""Write routes and the kind of item each accepts."""
REASONS = {401: "unauthorized", 413: "too_large", 415: "media_type", 422: "invalid"}
"""Refusal statuses of the write routes, by reason class."""
BROKER_UNAVAILABLE = 503


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.accepted = Counter(
            "streamwise_ingest_accepted", "Items (events, labels) acknowledged by Kafka and answered 202.",
            ["kind"], registry=registry,
        )
        self.rejected = Counter(
            "streamwise_ingest_rejected_requests", "Write requests refused whole, by kind and reason class.",
            ["kind", "reason"], registry=registry,
        )
        self.broker_unavailable = Counter(
            "streamwise_ingest_broker_unavailable", "Write requests answered 503: Kafka did not acknowledge in time.",
            ["kind"], registry=registry,
        )
        for kind in KINDS.values():
            self.accepted.labels(kind)
            self.broker_unavailable.labels(kind)
            for reason in (*REASONS.values(), "other"):
                self.rejected.labels(kind, reason)

    def on_response(self, route: str, method: str, status: int) -> None:
        """Count the outcome of a write request (``HttpMetrics`` calls it after each request)."""
        kind = KINDS.get(route)
        if kind is None or method != "POST" or status < 400:
            return
        if status == BROKER_UNAVAILABLE:
            self.broker_unavailable.labels(kind).inc()
        else:
            self.rejected.labels(kind, REASONS.get(status, "other")).inc()
