"""Publishes snapshots: Redis (blob, pointer, checkpoint, pub/sub), SQL registry, models topic."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streamwise_core.codec import ModelMeta
from streamwise_core.errors import BackendUnavailable
from streamwise_core.events import ModelPublished
from streamwise_core.modelstore import ModelStore
from streamwise_core.registry import Registry

from .core import Snapshot

log = logging.getLogger(__name__)


class Publisher:
    """Redis is written first and atomically; registry rows retry until they land."""

    def __init__(self, store: ModelStore, registry: Registry, producer: AIOKafkaProducer, models_topic: str) -> None:
        self._store = store
        self._registry = registry
        self._producer = producer
        self._models_topic = models_topic
        self._unrecorded: deque[tuple[ModelMeta, str]] = deque()

    async def publish(self, snapshot: Snapshot) -> None:
        """Raises ``BackendUnavailable`` when Redis is down; the caller retries later."""
        meta = snapshot.meta
        await self._store.publish(meta.model, meta.version, snapshot.model, checkpoint=snapshot.checkpoint)
        self._unrecorded.append((meta, snapshot.model.signature.key_id))
        await self.flush_registry()
        event = ModelPublished(
            app=meta.app, model=meta.model, version=meta.version,
            examples_seen=meta.examples_seen, metrics=meta.metrics,
        )
        try:
            await self._producer.send(self._models_topic, event.to_bytes(), key=meta.model.encode())
        except KafkaError as exc:
            log.warning("models topic announcement of v%s failed: %s", meta.version, exc)

    async def flush_registry(self) -> None:
        while self._unrecorded:
            meta, key_id = self._unrecorded[0]
            try:
                await asyncio.to_thread(self._registry.record_version, meta, key_id)
            except BackendUnavailable as exc:
                log.warning("registry write of v%s deferred: %s", meta.version, exc)
                return
            self._unrecorded.popleft()

    @property
    def registry_backlog(self) -> int:
        return len(self._unrecorded)
