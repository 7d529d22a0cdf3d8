"""A model that learned nothing since its last version publishes nothing: a retrained model
between refits, an idle stream. Its checkpoint still moves on when the trainer stops."""

from __future__ import annotations

import asyncio

from streamwise_core.contracts.appspec import ModelSpec, RetrainSpec, StepSpec
from streamwise_trainer.learning import Trainer
from streamwise_trainer.runtime import TrainerRuntime

from .trainer_support import SIGNER, FakeClock, checkpoint_versions, fakes_of, records, runtime_without_clients, trainer_settings

RETRAIN = ModelSpec(
    name="fraud-batch", kind="retrain", retrain=RetrainSpec(every=200, window=500),
    steps=(StepSpec(use="linear_model.LogisticRegression", params={"max_iter": 500}),),
)


def retraining_runtime(clock: FakeClock) -> TrainerRuntime:
    base = trainer_settings(publish_every_n=1, publish_every_ms=0, publish_busy_max=1.0)
    settings = base.model_copy(update={"spec": base.spec.for_model(RETRAIN)})
    return runtime_without_clients(clock=clock, settings=settings)


def test_a_retrained_model_publishes_a_version_after_each_refit_only() -> None:
    clock = FakeClock()
    runtime = retraining_runtime(clock)

    async def go() -> None:
        for start in range(0, 1000, 50):
            await runtime.after_batch(await runtime.learn(records(runtime, 50, start=start)))
            clock.advance(1.0)
            await runtime.tick()

    asyncio.run(go())
    fits = runtime.trainer.state.learner.fits
    assert fits == 5
    assert fakes_of(runtime).publisher.published == [1, 2, 3, 4, 5]


def test_an_idle_model_publishes_nothing_however_long_it_waits() -> None:
    clock = FakeClock()
    runtime = runtime_without_clients(clock=clock, publish_every_n=10**6, publish_every_ms=100, publish_busy_max=1.0)

    async def go() -> None:
        await runtime.after_batch(await runtime.learn(records(runtime, 20)))
        clock.advance(0.2)
        await runtime.tick()
        for _ in range(50):
            clock.advance(3600)
            await runtime.tick()
        await runtime.checkpoint_now()

    asyncio.run(go())
    assert fakes_of(runtime).publisher.published == [1]
    assert checkpoint_versions(fakes_of(runtime).store, "fraud-batch") is None


def test_stopping_between_refits_saves_a_checkpoint_alone_and_a_restore_publishes_nothing_new() -> None:
    clock = FakeClock()
    runtime = retraining_runtime(clock)

    async def go() -> None:
        await runtime.after_batch(await runtime.learn(records(runtime, 250)))  # one refit: v1
        clock.advance(1.0)
        await runtime.after_batch(await runtime.learn(records(runtime, 50, start=250)))  # no refit
        await runtime.checkpoint_now()

    asyncio.run(go())
    assert fakes_of(runtime).publisher.published == [1]
    assert checkpoint_versions(fakes_of(runtime).store, "fraud-batch") == 1
    snapshot = runtime.trainer.serialise(runtime.trainer.next_meta(1), SIGNER, checkpoint=True)
    assert snapshot.checkpoint is not None
    restored = Trainer.restore(runtime.trainer.spec, runtime.trainer.topics, snapshot.checkpoint, SIGNER, published_version=1)
    assert restored.examples_seen == 300 and not restored.model_changed
    restored.handle_many(records(runtime, 99, start=300))
    assert not restored.model_changed, "199 examples since the refit: no change yet"
    restored.handle_many(records(runtime, 1, start=399))
    assert restored.model_changed
    assert restored.next_meta().version == 2
