"""Stopping a model's learning task ends it even when a cancellation is lost on the way."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from streamwise_trainer.supervisor import _cancelled


async def test_a_task_that_loses_a_cancellation_is_cancelled_again_until_it_ends(caplog: pytest.LogCaptureFixture) -> None:
    reached_second_wait = asyncio.Event()

    async def loses_the_first_cancel() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # the cancel is lost
            await asyncio.sleep(3600)
        reached_second_wait.set()
        await asyncio.sleep(3600)

    task = asyncio.get_running_loop().create_task(loses_the_first_cancel())
    await asyncio.sleep(0)  # it waits in its first sleep
    with caplog.at_level(logging.WARNING, logger="streamwise_trainer.supervisor"):
        await asyncio.wait_for(_cancelled(task, "fraud-lr", again_after_s=0.01), timeout=60)
    assert task.cancelled() and reached_second_wait.is_set()
    [warning] = [r.getMessage() for r in caplog.records]
    assert "fraud-lr goes on after a cancel" in warning and "loses_the_first_cancel" in warning


async def test_a_task_that_ends_on_the_first_cancel_is_cancelled_once(caplog: pytest.LogCaptureFixture) -> None:
    task = asyncio.get_running_loop().create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="streamwise_trainer.supervisor"):
        await asyncio.wait_for(_cancelled(task, "fraud-lr", again_after_s=60), timeout=60)
    assert task.cancelled() and not caplog.records
