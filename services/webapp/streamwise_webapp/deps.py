"""The clients a request handler needs, created by the lifespan and found on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, cast

import httpx
from fastapi import Depends, Request

from streamwise_core.adapters.http import started_services
from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.adapters.registry import Registry

from .accounts import Accounts
from .auth import Authenticator
from .feed import DeadLetterLog, FeedBuffer, FreshnessTracker
from .feed_worker import FeedWorker
from .hub import Hub
from .live import CurrentReader, LiveModel
from .settings import WebappSettings
from .streams import LabelWriter, StreamWatcher
from .system import SystemMonitor
from .upstream import PredictorClient


@dataclass(frozen=True)
class Services:
    settings: WebappSettings
    store: ModelStore
    registry: Registry
    reader: CurrentReader
    live: LiveModel
    accounts: Accounts
    auth: Authenticator
    hub: Hub
    feed: FeedBuffer
    feed_worker: FeedWorker
    watcher: StreamWatcher
    monitor: SystemMonitor
    dead_letters: DeadLetterLog
    labels: LabelWriter
    predictor: PredictorClient
    freshness: FreshnessTracker
    http: httpx.AsyncClient


def get_services(request: Request) -> Services:
    """FastAPI dependency; 503 if the lifespan has not started the clients (yet)."""
    return cast(Services, started_services(request))


ServicesDep = Annotated[Services, Depends(get_services)]
