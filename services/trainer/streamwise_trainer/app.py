"""Composition root of the trainer: a faust app around the ``Supervisor`` of every model's
``TrainerRuntime`` (or around one runtime, in tests)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust
from faust.app.base import BootStrategy

from streamwise_core.adapters.http import API_KEY_HEADER, api_key_matches
from streamwise_core.adapters.kafka import ensure_app_topics
from streamwise_core.adapters.modelstore import ModelStore
from streamwise_core.adapters.registry import Registry, migrate
from streamwise_core.contracts.codec import verify
from streamwise_core.contracts.signing import Signer
from streamwise_core.domain.lifecycle.roster import StartPosition

from .consumer import start_positions
from .learning import Trainer
from .lease import acquire as acquire_lease
from .observability import register_observability
from .runtime import TrainerRuntime
from .settings import TrainerSettings

log = logging.getLogger(__name__)


class _ServiceOnly(BootStrategy):
    """Faust without its own Kafka clients: the runtime brings a batch consumer and a producer."""

    enable_kafka = False
    enable_web = True


class TrainerApp(faust.App):
    BootStrategy = _ServiceOnly


def create_app(settings: TrainerSettings, runtime: TrainerRuntime | Any) -> faust.App:
    """Build the faust app; nothing connects until the worker starts.

    Faust runs the service: worker lifecycle and signals, the web server, timers. The hot
    loop reads Kafka in batches itself (see ``consumer.py``) rather than through an agent.
    """
    spec, kafka = settings.spec, settings.kafka
    app = TrainerApp(
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

    @app.task
    async def learn() -> None:
        await runtime.run()

    @app.timer(interval=max(settings.publish_every_ms / 1000 / 2, 0.01))
    async def publish_on_time() -> None:
        await runtime.tick()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # faust awaits a coroutine receiver
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

    register_observability(app, runtime)
    return app


async def backfill_registry(store: ModelStore, settings: TrainerSettings, signer: Signer) -> None:
    """Record versions that reached Redis but not the registry before the last crash."""
    spec = settings.spec
    latest = await store.latest_version(spec.model.name)
    registry = Registry.from_url(settings.database_url)
    try:
        recorded = await asyncio.to_thread(registry.versions, spec.name, spec.model.name, 1)
        start = recorded[0].version + 1 if recorded else 1
        for version in range(start, (latest or 0) + 1):
            signed = await store.load(spec.model.name, version)
            if signed is None:
                continue
            meta = verify(signed, signer)
            gate = await store.load_gate(spec.model.name, version)
            held = gate is not None and gate.get("status") == "held_back"
            await asyncio.to_thread(
                registry.record_version, meta, signed.signature.key_id,
                status="held_back" if held else "served",
                hold_reason=str(gate.get("reason")) if held and gate else None, gate=gate,
            )
            log.info("registry backfilled with v%s from the model store", version)
    finally:
        registry.close()


async def prepare_shared(settings: TrainerSettings) -> None:
    """Create the topics and migrate the registry (once per process, before any model)."""
    await ensure_app_topics(settings)
    await asyncio.to_thread(migrate, settings.database_url)


async def prepare_model(
    settings: TrainerSettings, signer: Signer, writer: str, start: StartPosition | None = None, *,
    lease_wait_s: float | None = None,
) -> Trainer:
    """Take the model's single-writer lease and restore its newest checkpoint; without one, a
    new trainer starts from ``start`` (the beginning of the topics by default).

    ``settings.spec`` names the one model (see ``AppSpec.for_model``).
    """
    model = settings.spec.model.name
    store = ModelStore.from_url(settings.redis_url, settings.topic_prefix, settings.spec.name)
    try:
        await acquire_lease(store, model, writer, settings.writer_lease_ms, wait_s=lease_wait_s)
        if indexed := await store.index_versions(model):
            log.info("%s: %s stored versions added to the retention index", model, indexed)
        checkpoint = await store.load_checkpoint(model)
        # Held-back versions are above the current one: number the next after every stored one.
        published = await store.latest_version(model)
        await backfill_registry(store, settings, signer)
    finally:
        await store.close()
    if checkpoint is None:
        trainer = Trainer(
            settings.spec, settings.topics, join_capacity=settings.join_capacity, dedupe_window=settings.dedupe_window
        )
        if start is not None:
            trainer.state.offsets.update(await start_positions(
                settings.kafka, settings.topics.events, settings.topics.labels, start, f"{settings.spec.name}-{model}-start",
            ))
        log.info("%s: no checkpoint, learning from %s (offsets %s)", model, (start.as_dict() if start else "the start"), trainer.state.offsets)
        return trainer
    trainer = Trainer.restore(
        settings.spec, settings.topics, checkpoint, signer,
        dedupe_window=settings.dedupe_window, published_version=published,
    )
    log.info(
        "%s: restored a checkpoint of %s examples (offsets %s); next version v%s",
        model, trainer.examples_seen, trainer.state.offsets, trainer.state.version + 1,
    )
    return trainer


async def prepare(settings: TrainerSettings, signer: Signer, writer: str) -> Trainer:
    """Everything a single-model trainer needs before it runs (tests and tools)."""
    await prepare_shared(settings)
    return await prepare_model(settings, signer, writer)
