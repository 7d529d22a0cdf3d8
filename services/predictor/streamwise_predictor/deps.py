"""What the predictor's request handlers need, created by the lifespan and found on ``app.state.services``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

from aiokafka import AIOKafkaProducer
from fastapi import Depends, HTTPException, Request

from streamwise_core.adapters import http
from streamwise_core.adapters.kafka import RecordBuffer
from streamwise_core.adapters.modelstore import ModelStore

from .holder import ModelHolder, ServedModel
from .observability import PredictorMetrics
from .settings import PredictorSettings
from .shadow import ShadowModels, ShadowScorer
from .watcher import VersionWatcher


@dataclass(frozen=True)
class Services:
    settings: PredictorSettings
    metrics: PredictorMetrics
    holder: ModelHolder
    """The version being served, swapped in by ``watcher``."""
    store: ModelStore
    watcher: VersionWatcher
    producer: AIOKafkaProducer
    recorder: RecordBuffer
    """Writes the predictions to their topic, off the request path."""
    shadow_models: ShadowModels
    shadow: ShadowScorer


def services_if_started(request: Request) -> Services | None:
    """The app's services, or ``None`` before the lifespan made them (the probes answer then too)."""
    return cast(Services | None, http.services_if_started(request))


def services_of(request: Request) -> Services:
    """The app's services; 503 if the lifespan has not made them (yet).

    The prediction routes call it themselves (a ``RequestRoute`` solves no dependencies); the
    others take it as ``ServicesDep``.
    """
    return cast(Services, http.started_services(request))


def served(services: Services) -> ServedModel:
    """The version being served; 503 before the first verified one is loaded."""
    current = services.holder.current
    if current is None:
        raise HTTPException(status_code=503, detail="no verified model loaded yet")
    return current


ServicesDep = Annotated[Services, Depends(services_of)]
ServicesIfStartedDep = Annotated[Services | None, Depends(services_if_started)]
