"""Composition root of the trainer: a faust app around one ``TrainerRuntime``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import faust
from faust.types import TP

from streamwise_core.http import API_KEY_HEADER, api_key_matches
from streamwise_core.kafka import ensure_topics
from streamwise_core.modelstore import ModelStore
from streamwise_core.codec import verify
from streamwise_core.registry import Registry, migrate
from streamwise_core.signing import Signer

from .core import Record, Trainer
from .runtime import TrainerRuntime
from .settings import TrainerSettings

log = logging.getLogger(__name__)


class CheckpointedApp(faust.App):
    """A faust app whose partitions resume from the trainer's checkpoint.

    Faust seeks every assigned partition to Kafka's committed offset after a rebalance;
    the committed offset may run ahead of the last checkpoint (faust commits what it has
    acked), so we seek once more to the checkpoint's position right after it.
    """

    resume_positions: Callable[[], Mapping[str, int]] = dict

    def _new_consumer(self) -> Any:
        consumer = super()._new_consumer()
        seek_to_committed = consumer.perform_seek

        async def perform_seek() -> None:
            await seek_to_committed()
            positions = self.resume_positions()
            for tp in consumer.assignment():
                last = positions.get(f"{tp.topic}:{tp.partition}")
                if last is not None:
                    await consumer.seek(TP(tp.topic, tp.partition), last + 1)

        consumer.perform_seek = perform_seek
        return consumer


def create_app(settings: TrainerSettings, runtime: TrainerRuntime) -> faust.App:
    """Build the faust app; nothing connects until the worker starts."""
    spec, topics, kafka = settings.spec, settings.topics, settings.kafka
    app = CheckpointedApp(
        f"{settings.topic_prefix}-{spec.name}-trainer",
        broker=f"kafka://{kafka.bootstrap}",
        store="memory://",
        datadir=str(settings.data_dir),
        topic_disable_leader=True,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=kafka.heartbeat_interval_ms / 1000,
        broker_request_timeout=max(kafka.request_timeout_ms / 1000, kafka.session_timeout_ms / 1000 + 5),
        web_bind=settings.http_host,
        web_port=settings.http_port,
        web_in_thread=False,
        key_serializer="raw",
        value_serializer="raw",
        producer_acks=-1,
    )
    app.resume_positions = lambda: runtime.trainer.state.offsets
    source = app.topic(topics.events, topics.labels, key_type=bytes, value_type=bytes)
    within = settings.batch_within_ms / 1000

    @app.agent(source)
    async def learn(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.batch_max, within=within):
            rejected = runtime.handle(
                Record(e.message.topic, e.message.partition, e.message.offset, e.message.key, e.message.value)
                for e in events
            )
            await runtime.after_batch(rejected)

    @app.timer(interval=max(settings.publish_every_ms / 1000 / 2, 0.01))
    async def publish_on_time() -> None:
        await runtime.tick()

    @app.on_before_shutdown.connect
    async def close_clients(app: faust.App, **_: Any) -> None:
        await runtime.stop()

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/v1/status")
    async def status(web: Any, request: Any) -> Any:
        """An admin read (offsets, history digest, counters): it needs an API key."""
        if not api_key_matches(settings.api_key_list, request.headers.get(API_KEY_HEADER)):
            return web.json({"detail": f"missing or invalid {API_KEY_HEADER}"}, status=401)
        return web.json(runtime.status())

    return app


async def backfill_registry(store: ModelStore, settings: TrainerSettings, signer: Signer) -> None:
    """Record versions that reached Redis but not the registry before the last crash."""
    spec = settings.spec
    current = await store.current_version(spec.model.name)
    registry = Registry.from_url(settings.database_url)
    try:
        recorded = await asyncio.to_thread(registry.versions, spec.name, spec.model.name, 1)
        start = recorded[0].version + 1 if recorded else 1
        for version in range(start, (current or 0) + 1):
            signed = await store.load(spec.model.name, version)
            if signed is None:
                continue
            meta = verify(signed, signer)
            await asyncio.to_thread(registry.record_version, meta, signed.signature.key_id)
            log.info("registry backfilled with v%s from the model store", version)
    finally:
        registry.close()


async def prepare(settings: TrainerSettings, signer: Signer) -> Trainer:
    """Create topics, migrate the registry and restore the newest checkpoint, if any."""
    await ensure_topics(settings.kafka, settings.topics.all())
    await asyncio.to_thread(migrate, settings.database_url)
    store = ModelStore.from_url(settings.redis_url, settings.topic_prefix, settings.spec.name)
    try:
        checkpoint = await store.load_checkpoint(settings.spec.model.name)
        await backfill_registry(store, settings, signer)
    finally:
        await store.close()
    if checkpoint is None:
        log.info("no checkpoint: learning from the start of the topics")
        return Trainer(
            settings.spec, settings.topics, join_capacity=settings.join_capacity, dedupe_window=settings.dedupe_window
        )
    trainer = Trainer.restore(settings.spec, settings.topics, checkpoint, signer, dedupe_window=settings.dedupe_window)
    log.info(
        "restored checkpoint v%s (%s examples, offsets %s)",
        trainer.state.version, trainer.examples_seen, trainer.state.offsets,
    )
    return trainer
