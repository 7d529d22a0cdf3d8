"""Large models are serialised in a forked child while learning goes on."""

from __future__ import annotations

import asyncio
import os
import pickle
import time

import pytest

from streamwise_core.contracts.codec import unpack
from streamwise_trainer import forked
from streamwise_trainer.learning import Snapshot, Trainer

from .trainer_support import SIGNER, fakes_of, records, runtime_without_clients

pytestmark = pytest.mark.skipif(not forked.AVAILABLE, reason="needs os.fork")


def test_a_child_delivers_its_bytes_and_is_reaped() -> None:
    payload = os.urandom(3 << 20)  # larger than a pipe's buffer: the parent must read as it comes
    job = forked.start(lambda: payload)
    assert forked.collect(job) == payload
    with pytest.raises(ChildProcessError):
        os.waitpid(job.pid, 0)  # already reaped: no zombie left behind


def test_a_child_that_fails_or_hangs_is_reported_and_reaped() -> None:
    def boom() -> bytes:
        raise ValueError("cannot pickle this")

    with pytest.raises(forked.ChildFailed, match="failed"):
        forked.run(boom)

    def hang() -> bytes:
        time.sleep(3600)
        return b""

    job = forked.start(hang)
    with pytest.raises(forked.ChildFailed, match="longer than"):
        forked.collect(job, timeout_s=0.5)
    with pytest.raises(ChildProcessError):
        os.waitpid(job.pid, 0)  # killed and reaped, not left sleeping


def test_the_child_sees_the_state_at_the_fork_not_what_is_learned_meanwhile() -> None:
    runtime = runtime_without_clients()
    trainer = runtime.trainer
    runtime.trainer.handle_many(records(runtime, 300))
    meta = trainer.next_meta()
    in_thread = trainer.serialise(meta, SIGNER, checkpoint=True)

    def slow_serialise() -> bytes:
        time.sleep(0.3)  # the parent learns 300 more examples meanwhile
        return pickle.dumps(trainer.serialise(meta, SIGNER, checkpoint=True))

    job = forked.start(slow_serialise)
    runtime.trainer.handle_many(records(runtime, 300, start=300))
    in_child: Snapshot = pickle.loads(forked.collect(job))
    assert trainer.examples_seen == 600
    assert in_child.model.blob == in_thread.model.blob
    assert in_child.checkpoint is not None and in_thread.checkpoint is not None
    assert in_child.checkpoint.blob == in_thread.checkpoint.blob
    restored = Trainer.restore(trainer.spec, trainer.topics, in_child.checkpoint, SIGNER)
    assert restored.examples_seen == 300
    assert unpack(in_child.model, SIGNER)[0].examples_seen == 300


def test_the_runtime_forks_once_a_snapshot_is_slow_and_learns_meanwhile() -> None:
    runtime = runtime_without_clients(publish_every_n=100, publish_every_ms=10**6, snapshot_fork_above_kb=0, publish_busy_max=1.0)

    async def go() -> None:
        for batch in range(6):
            await runtime.after_batch(await runtime.learn(records(runtime, 100, start=batch * 100)))

    asyncio.run(go())
    published = fakes_of(runtime).publisher.published
    assert published == [1, 2, 3, 4, 5, 6]
    assert runtime.serialiser.forked == 5  # the first one, of unknown size, in a thread
    assert runtime.trainer.unpublished == 0


def test_the_runtime_serialises_in_a_thread_when_a_child_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = runtime_without_clients(publish_every_n=100, publish_every_ms=10**6, snapshot_fork_above_kb=0, publish_busy_max=1.0)

    collect = forked.collect

    def failing_collect(job: forked.ForkedJob, timeout_s: float = 1.0) -> bytes:
        collect(job)
        raise forked.ChildFailed("simulated")

    monkeypatch.setattr(forked, "collect", failing_collect)

    async def go() -> None:
        for batch in range(3):
            await runtime.after_batch(await runtime.learn(records(runtime, 100, start=batch * 100)))

    asyncio.run(go())
    assert fakes_of(runtime).publisher.published == [1, 2, 3]
    assert runtime.serialiser.forked == 0


def test_small_snapshots_stay_in_a_thread_and_checkpoints_count_when_they_come() -> None:
    runtime = runtime_without_clients(
        publish_every_n=100, publish_every_ms=10**6, publish_busy_max=1.0, checkpoint_every_ms=10**6,
    )
    model_kb = 0

    async def go() -> None:
        nonlocal model_kb
        await runtime.after_batch(await runtime.learn(records(runtime, 100)))  # v1, with a checkpoint
        model_kb = runtime.serialiser.blob_sizes[0] // 1024
        checkpoint_kb = runtime.serialiser.blob_sizes[1] // 1024
        assert checkpoint_kb > model_kb + 2
        runtime.serialiser.fork_above_kb = model_kb + 1  # a model alone stays below it
        await runtime.after_batch(await runtime.learn(records(runtime, 100, start=100)))
        assert runtime.serialiser.forked == 0
        runtime.trainer.handle_many(records(runtime, 10, start=200))
        await runtime.checkpoint_now()  # model and checkpoint: above it
        assert runtime.serialiser.forked == 1

    asyncio.run(go())
    assert fakes_of(runtime).publisher.published_with_checkpoint == [(1, True), (2, False), (3, True)]
