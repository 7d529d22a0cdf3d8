"""What ingest's request handlers need, created by the lifespan and found on ``app.state.services``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Protocol, cast

from aiokafka import AIOKafkaProducer
from fastapi import Depends, Request
from prometheus_client import Counter

from streamwise_core.adapters import http

from .observability import IngestMetrics
from .settings import IngestSettings


class Sink(Protocol):
    """Where accepted records go (``KafkaSink``): back only once Kafka has all of them."""

    async def write(self, topic: str, records: list[tuple[bytes, bytes]]) -> None: ...


@dataclass(frozen=True)
class Services:
    settings: IngestSettings
    metrics: IngestMetrics
    producer: AIOKafkaProducer
    """The sink's producer; /readyz asks it for the cluster's metadata."""
    sink: Sink
    accepted_events: Counter = field(init=False, repr=False)
    accepted_labels: Counter = field(init=False, repr=False)
    """``metrics.accepted`` of each kind, looked up once: ``labels()`` takes a lock on every call."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "accepted_events", self.metrics.accepted.labels("events"))
        object.__setattr__(self, "accepted_labels", self.metrics.accepted.labels("labels"))


def services_if_started(request: Request) -> Services | None:
    """The app's services, or ``None`` before the lifespan made them (the probes answer then too)."""
    return cast(Services | None, http.services_if_started(request))


def services_of(request: Request) -> Services:
    """The app's services; 503 if the lifespan has not made them (yet).

    The write routes call it themselves (a ``RequestRoute`` solves no dependencies); the
    others take it as ``ServicesDep``.
    """
    return cast(Services, http.started_services(request))


ServicesDep = Annotated[Services, Depends(services_of)]
ServicesIfStartedDep = Annotated[Services | None, Depends(services_if_started)]
