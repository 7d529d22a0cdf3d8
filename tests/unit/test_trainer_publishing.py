"""When the trainer publishes, when a version carries a checkpoint, and how restarts number versions."""

from __future__ import annotations

import asyncio
import dataclasses
import pickle

import pytest
from pydantic import ValidationError

from streamwise_trainer import runtime as runtime_module
from streamwise_trainer.learning import Record, Rejected, Trainer
from streamwise_trainer.settings import TrainerSettings

from .trainer_support import MODEL, SIGNER, FakeClock, fakes_of, records, runtime_without_clients


def published(runtime) -> list[tuple[int, bool]]:  # type: ignore[no-untyped-def]
    return fakes_of(runtime).publisher.published_with_checkpoint  # type: ignore[no-any-return]


def test_first_version_carries_a_checkpoint_and_the_next_ones_only_when_due() -> None:
    clock = FakeClock()
    runtime = runtime_without_clients(
        clock=clock, publish_every_n=10, publish_every_ms=10**6, checkpoint_every_ms=300, publish_busy_max=1.0,
    )

    async def go() -> None:
        for batch in range(4):
            await runtime.after_batch(await runtime.learn(records(runtime, 10, start=batch * 10)))
            clock.advance(0.05)
        clock.advance(0.15)  # 300 ms after the first checkpoint
        await runtime.after_batch(await runtime.learn(records(runtime, 10, start=40)))

    asyncio.run(go())
    assert published(runtime) == [(1, True), (2, False), (3, False), (4, False), (5, True)]


@pytest.mark.parametrize(("share", "first_run"), [(0.01, 20), (0.005, 40)])
def test_serialising_takes_at_most_the_configured_share_of_the_time(share: float, first_run: int) -> None:
    clock, cpu = FakeClock(), FakeClock()
    runtime = runtime_without_clients(clock=clock, cpu_clock=cpu, publish_every_n=1, publish_every_ms=0, publish_busy_max=share)
    serialise = runtime.trainer.serialise

    def costly(*args, **kwargs):  # type: ignore[no-untyped-def]
        cpu.advance(0.002)  # every version takes 2 ms of CPU to serialise
        return serialise(*args, **kwargs)

    runtime.trainer.serialise = costly  # type: ignore[method-assign]

    async def go() -> list[int]:
        counts = []
        for i in range(first_run + 10):
            await runtime.after_batch(await runtime.learn(records(runtime, 1, start=i)))
            counts.append(len(published(runtime)))
            clock.advance(0.01)
        return counts

    counts = asyncio.run(go())
    # Without the budget each batch would publish; with 1 % of the time for serialising, a
    # version that took 2 ms is followed by the next 200 ms after it started (400 ms at 0.5 %).
    assert counts == [1] * first_run + [2] * 10
    assert runtime.trainer.unpublished == 9


@pytest.mark.parametrize("share", [0.0, -0.1, 1.5])
def test_a_serialising_share_outside_0_to_1_is_refused(share: float) -> None:
    with pytest.raises(ValidationError, match="publish_busy_max"):
        TrainerSettings(publish_busy_max=share)


def test_shutdown_checkpoint_publishes_what_is_new_with_a_checkpoint() -> None:
    runtime = runtime_without_clients(publish_every_n=10**6, publish_every_ms=10**6)

    async def go() -> None:
        await runtime.after_batch(await runtime.learn(records(runtime, 20)))
        await runtime.checkpoint_now()
        await runtime.checkpoint_now()  # nothing new: nothing published

    asyncio.run(go())
    assert published(runtime) == [(1, True)]
    assert runtime.trainer.unpublished == 0


def test_restore_numbers_the_next_version_after_the_newest_published() -> None:
    runtime = runtime_without_clients()
    trainer = runtime.trainer
    runtime.trainer.handle_many(records(runtime, 30))
    snapshot = trainer.snapshot(SIGNER)  # v1 with its checkpoint
    assert snapshot.checkpoint is not None
    later = trainer.snapshot(SIGNER, checkpoint=False)
    assert later.checkpoint is None and later.meta.version == 2
    restored = Trainer.restore(trainer.spec, trainer.topics, snapshot.checkpoint, SIGNER, published_version=2)
    assert restored.snapshot(SIGNER).meta.version == 3
    assert restored.examples_seen == 30
    older = Trainer.restore(trainer.spec, trainer.topics, snapshot.checkpoint, SIGNER, published_version=None)
    assert older.snapshot(SIGNER).meta.version == 2


def test_a_trainer_that_lost_its_lease_publishes_nothing_more_and_shuts_down() -> None:
    clock = FakeClock()
    exits: list[bool] = []
    runtime = runtime_without_clients(
        clock=clock, publish_every_n=1, publish_every_ms=0, publish_busy_max=1.0, writer_lease_ms=30,
        lease_holder="me", on_fenced=lambda: exits.append(True),
    )
    store = fakes_of(runtime).store

    async def go() -> None:
        assert await store.claim_writer(MODEL, "me", 30) == "me"
        await runtime.after_batch(await runtime.learn(records(runtime, 5)))
        clock.advance(0.02)  # past a third of the lease: due for renewal
        await runtime.tick()  # renews: still ours
        assert not runtime.fenced
        await store.release_writer(MODEL, "me")
        assert await store.claim_writer(MODEL, "other-trainer", 60_000) == "other-trainer"
        clock.advance(0.02)
        await runtime.tick()
        await runtime.after_batch(await runtime.learn(records(runtime, 5, start=5)))
        await runtime.checkpoint_now()

    asyncio.run(go())
    assert runtime.fenced and exits == [True]
    assert published(runtime) == [(1, True)]  # nothing after the lease was lost


def test_a_large_batch_is_learned_in_runs_sized_to_a_loop_turn_with_the_loop_turning_between_them(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(runtime_module, "LOOP_TURN_S", 0.05)
    clock = FakeClock()
    runtime = runtime_without_clients(clock=clock)
    cost_s = 1 / 1024  # each record takes this long on the runtime's clock
    runs: list[int] = []
    handle_many = runtime.trainer.handle_many

    def timed(batch: list[Record]) -> list[Rejected]:
        runs.append(len(batch))
        clock.advance(cost_s * len(batch))
        return handle_many(batch)

    runtime.trainer.handle_many = timed  # type: ignore[method-assign]
    batch = records(runtime, 1500)
    batch.insert(700, dataclasses.replace(batch[0], value=b"{"))
    batch = [dataclasses.replace(r, offset=i) for i, r in enumerate(batch)]
    runs_seen_by_others: list[int] = []

    async def go(batch: list[Record]) -> list[Rejected]:
        learning = asyncio.ensure_future(runtime.learn(batch))
        while not learning.done():
            runs_seen_by_others.append(len(runs))
            await asyncio.sleep(0)
        return await learning

    rejected = asyncio.run(go(batch))
    assert [r.record.offset for r in rejected] == [700]
    assert runtime.trainer.examples_seen == 1500
    # 64 to start with, then as many as take 50 ms: 51.2 records of 1/1024 s.
    assert runs == [64] + [51] * 28 + [9]
    assert sorted(set(runs_seen_by_others)) == list(range(len(runs))), "another task ran between every two runs"

    cost_s = 4 / 1024  # the model grew: records take four times as long
    runs.clear()
    asyncio.run(go(records(runtime, 100, start=1500)))
    assert runs == [51, 12, 12, 12, 12, 1]

    cost_s = 0.0  # a clock that did not move: the longest run allowed
    runs.clear()
    asyncio.run(go(records(runtime, 600, start=1600)))
    assert runs == [12, runtime_module.MAX_RUN, 76]


def test_the_serialising_time_the_budget_uses_is_smoothed() -> None:
    from streamwise_trainer.publish_policy import smoothed

    estimate = None
    for cost in [0.001] * 19 + [0.005]:  # a linear model, and a checkpoint now and then
        estimate = smoothed(estimate, cost)
    assert estimate is not None and 0.0015 < estimate < 0.002
    for _ in range(30):
        estimate = smoothed(estimate, 0.02)  # a tree that grew
    assert estimate == pytest.approx(0.02, rel=0.01)


def test_versions_are_due_every_interval_from_the_start_of_the_last_one() -> None:
    clock = FakeClock()
    runtime = runtime_without_clients(clock=clock, publish_every_n=10**6, publish_every_ms=200, publish_busy_max=1.0)
    publisher = fakes_of(runtime).publisher
    stored = publisher.deliver

    async def slow_publish(snapshot) -> None:  # type: ignore[no-untyped-def]
        clock.advance(0.15)  # storing takes most of the interval
        await stored(snapshot)

    publisher.deliver = slow_publish  # type: ignore[method-assign]

    async def go() -> None:
        runtime.trainer.handle_many(records(runtime, 5))
        await runtime.publish()
        runtime.trainer.handle_many(records(runtime, 5, start=5))
        clock.advance(0.04)
        assert not runtime.policy.due(unpublished=runtime.trainer.unpublished, changed=runtime.trainer.model_changed)  # 190 ms after the first version started
        clock.advance(0.02)
        # 210 ms after the first version started (60 ms after it was stored), the next is due.
        assert runtime.policy.due(unpublished=runtime.trainer.unpublished, changed=runtime.trainer.model_changed)

    asyncio.run(go())


def test_the_budget_counts_the_cpu_time_of_serialising_not_the_wait_for_a_cpu() -> None:
    clock, cpu = FakeClock(), FakeClock()
    runtime = runtime_without_clients(clock=clock, cpu_clock=cpu, publish_every_n=1, publish_every_ms=0, publish_busy_max=0.5)
    trainer = runtime.trainer
    serialise = trainer.serialise

    def descheduled(*args, **kwargs):  # type: ignore[no-untyped-def]
        clock.advance(0.1)  # the thread waited 100 ms for a CPU
        cpu.advance(0.002)  # and spent 2 ms serialising
        return serialise(*args, **kwargs)

    trainer.serialise = descheduled  # type: ignore[method-assign]

    async def go() -> None:
        await runtime.after_batch(await runtime.learn(records(runtime, 1)))
        runtime.trainer.handle_many(records(runtime, 1, start=1))
        # By wall time (100 ms at 50 %) the next version would wait until 200 ms after the last
        # started; by the CPU time serialising took (2 ms), it was due 4 ms after it started.
        assert runtime.policy.due(unpublished=runtime.trainer.unpublished, changed=runtime.trainer.model_changed)

    asyncio.run(go())
    assert len(published(runtime)) == 1


def test_after_a_version_serialised_in_a_thread_the_trainer_learns_on_from_its_copy() -> None:
    runtime = runtime_without_clients(publish_every_n=10, publish_every_ms=10**6, publish_busy_max=1.0, snapshot_fork_above_kb=-1)
    models = []

    async def go() -> None:
        for batch in range(3):
            await runtime.after_batch(await runtime.learn(records(runtime, 10, start=batch * 10)))
            models.append(runtime.trainer.state.learner.model)

    asyncio.run(go())
    assert [v for v, _ in published(runtime)] == [1, 2, 3]
    assert len({id(m) for m in models}) == 3  # a new copy after each version
    blob = runtime.trainer.serialise(runtime.trainer.next_meta(), SIGNER, checkpoint=False).model.blob
    assert pickle.loads(blob)["LogisticRegression"].weights == models[-1]["LogisticRegression"].weights
