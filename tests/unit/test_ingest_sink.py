"""Ingest's ``KafkaSink`` (group commit) on a fake producer whose deliveries the test settles:
a request is answered only once Kafka acknowledged its own flush, requests that come during a
flush share the next one, a failure reaches every request of its flush (and only those), and
every request fails with ``BackendUnavailable`` at ``timeout_s`` from its arrival at the latest."""

from __future__ import annotations

import asyncio
import gc
import selectors
from typing import Any

import pytest
from aiokafka.errors import KafkaError, KafkaTimeoutError

from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_ingest.sink import KafkaSink


class Batch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    def append(self, *, key: bytes, value: bytes, timestamp: None) -> int:
        self.records.append((key, value))
        return len(self.records)

    def close(self) -> None:
        pass


class Producer:
    """``send_batch`` hands back a future the test settles (``deliveries``, in order)."""

    def __init__(self, partitions: int = 1) -> None:
        self.partitions = partitions
        self.sent: list[list[tuple[bytes, bytes]]] = []
        self.deliveries: list[asyncio.Future[object]] = []
        self.stall: asyncio.Event | None = None  # set: partitions_for waits for it

    async def partitions_for(self, topic: str) -> set[int]:
        if self.stall is not None:
            await self.stall.wait()
        return set(range(self.partitions))

    def create_batch(self) -> Batch:
        return Batch()

    async def send_batch(self, batch: Batch, topic: str, *, partition: int) -> asyncio.Future[object]:
        self.sent.append(batch.records)
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.deliveries.append(future)
        return future


def rec(name: str) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), b"{}")]


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


class _JumpingSelector(selectors.DefaultSelector):
    """Never blocks for a timer: the wait for the next one moves the virtual time to it instead."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:  # no timer at all: only another thread could wake the loop
            return super().select(None)
        self.now += timeout
        return super().select(0)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when every task waits for a timer, and then straight
    to the next one: deadlines fall exactly when due, however slow or busy the machine."""

    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now


@pytest.fixture
async def unretrieved() -> Any:
    """Exceptions of futures nobody looked at ("Future exception was never retrieved")."""
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen


async def test_a_lone_request_is_sent_at_once_and_answered_only_when_acknowledged() -> None:
    producer = Producer()
    sink = KafkaSink(producer, timeout_s=5)  # type: ignore[arg-type]
    write = asyncio.create_task(sink.write("t", rec("a")))
    await turns()
    assert producer.sent == [rec("a")]  # no lingering
    assert not write.done()  # not before Kafka answered
    producer.deliveries[0].set_result(None)
    await asyncio.wait_for(write, 1)


async def test_requests_during_a_flush_share_the_next_one_in_order_and_wait_for_their_own() -> None:
    producer = Producer()
    sink = KafkaSink(producer, timeout_s=5)  # type: ignore[arg-type]
    first = asyncio.create_task(sink.write("t", rec("a")))
    await turns()
    later = [asyncio.create_task(sink.write("t", rec(n))) for n in ("b", "c", "d")]
    await turns()
    assert producer.sent == [rec("a")]  # one flush in flight at a time
    producer.deliveries[0].set_result(None)
    await asyncio.wait_for(first, 1)
    await turns()
    assert producer.sent == [rec("a"), rec("b") + rec("c") + rec("d")]  # one batch for the three
    assert not any(t.done() for t in later)
    producer.deliveries[1].set_result(None)
    await asyncio.wait_for(asyncio.gather(*later), 1)


async def test_a_failed_delivery_fails_every_request_of_its_flush_and_only_those(unretrieved: Any) -> None:
    producer = Producer()
    sink = KafkaSink(producer, timeout_s=5)  # type: ignore[arg-type]
    first = asyncio.create_task(sink.write("t", rec("a")))
    await turns()
    second = [asyncio.create_task(sink.write("t", rec(n))) for n in ("b", "c")]
    await turns()
    producer.deliveries[0].set_exception(KafkaTimeoutError())
    with pytest.raises(BackendUnavailable, match="KafkaTimeoutError"):
        await asyncio.wait_for(first, 1)
    await turns()
    producer.deliveries[1].set_result(None)
    await asyncio.wait_for(asyncio.gather(*second), 1)
    assert not unretrieved


async def test_with_several_partitions_the_first_failure_answers_at_once(unretrieved: Any) -> None:
    producer = Producer(partitions=3)
    sink = KafkaSink(producer, timeout_s=5)  # type: ignore[arg-type]
    records = [(f"key-{k}".encode(), b"{}") for k in range(30)]
    write = asyncio.create_task(sink.write("t", records))
    await turns()
    assert len(producer.deliveries) == 3
    producer.deliveries[0].set_result(None)
    await turns()
    assert not write.done()
    producer.deliveries[1].set_exception(KafkaError("lost"))
    with pytest.raises(BackendUnavailable, match="lost"):
        await asyncio.wait_for(write, 1)
    # The next flush goes on without waiting for the third delivery; its late failure is seen.
    nxt = asyncio.create_task(sink.write("t", rec("z")))
    await turns()
    assert producer.sent[-1] == rec("z")
    producer.deliveries[2].set_exception(KafkaError("late"))
    producer.deliveries[3].set_result(None)
    await asyncio.wait_for(nxt, 1)
    await turns()
    producer.deliveries.clear()  # only the sink's callbacks saw them: an unseen exception is reported when collected
    gc.collect()
    assert not unretrieved


async def test_all_deliveries_must_succeed() -> None:
    producer = Producer(partitions=3)
    sink = KafkaSink(producer, timeout_s=5)  # type: ignore[arg-type]
    write = asyncio.create_task(sink.write("t", [(f"key-{k}".encode(), b"{}") for k in range(30)]))
    await turns()
    for delivery in producer.deliveries[:2]:
        delivery.set_result(None)
    await turns()
    assert not write.done()
    producer.deliveries[2].set_result(None)
    await asyncio.wait_for(write, 1)


def test_a_request_fails_at_its_timeout_and_one_behind_a_stuck_flush_too() -> None:
    async def scenario() -> None:
        unretrieved: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
        producer = Producer()
        timeout_s = 0.2
        sink = KafkaSink(producer, timeout_s=timeout_s)  # type: ignore[arg-type]
        started = loop.time()
        first = asyncio.create_task(sink.write("t", rec("a")))
        await asyncio.sleep(0.1)
        second = asyncio.create_task(sink.write("t", rec("b")))  # waits behind the stuck flush
        with pytest.raises(BackendUnavailable, match=r"kafka: TimeoutError\(\)"):
            await first
        assert loop.time() - started == pytest.approx(timeout_s)
        with pytest.raises(BackendUnavailable, match=r"kafka: TimeoutError\(\)"):
            await second
        # Its own deadline (it came at 0.1), not its flush's (started at timeout_s, when the stuck one was given up).
        assert loop.time() - started == pytest.approx(0.1 + timeout_s)
        assert producer.sent == [rec("a"), rec("b")]  # the stuck flush went on alone after timeout_s; b was still sent
        producer.deliveries[0].set_exception(KafkaError("late"))
        producer.deliveries[1].set_result(None)
        await turns()
        producer.deliveries.clear()
        gc.collect()
        assert not unretrieved

    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        runner.run(scenario())


async def test_a_send_that_hangs_or_fails_before_any_delivery_fails_the_flush() -> None:
    producer = Producer()
    producer.stall = asyncio.Event()
    sink = KafkaSink(producer, timeout_s=0.1)  # type: ignore[arg-type]
    with pytest.raises(BackendUnavailable):
        await asyncio.wait_for(sink.write("t", rec("a")), 30)  # a hang guard: the sink gives up at 0.1 s
    assert producer.sent == []

    async def broken(topic: str) -> set[int]:
        raise KafkaError("no metadata")

    producer.partitions_for = broken  # type: ignore[method-assign]
    with pytest.raises(BackendUnavailable, match="no metadata"):
        await asyncio.wait_for(sink.write("t", rec("b")), 1)


async def test_a_caller_that_gives_up_leaves_its_records_sent_and_others_answered(unretrieved: Any) -> None:
    producer = Producer()
    sink = KafkaSink(producer, timeout_s=5)  # type: ignore[arg-type]
    first = asyncio.create_task(sink.write("t", rec("a")))
    await turns()
    quitter = asyncio.create_task(sink.write("t", rec("b")))
    stayer = asyncio.create_task(sink.write("t", rec("c")))
    await turns()
    quitter.cancel()
    producer.deliveries[0].set_result(None)
    await asyncio.wait_for(first, 1)
    await turns()
    assert producer.sent[-1] == rec("b") + rec("c")
    producer.deliveries[1].set_exception(KafkaError("down"))
    with pytest.raises(BackendUnavailable):
        await asyncio.wait_for(stayer, 1)
    assert quitter.cancelled()
    await turns()
    producer.deliveries.clear()
    gc.collect()
    assert not unretrieved


async def test_no_timer_outlives_its_request(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = Producer()
    sink = KafkaSink(producer, timeout_s=3600)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    timers: list[asyncio.TimerHandle] = []
    call_later = loop.call_later

    def recorded(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        timers.append(call_later(*args, **kwargs))
        return timers[-1]

    monkeypatch.setattr(loop, "call_later", recorded)
    writes = [asyncio.create_task(sink.write("t", rec(n))) for n in "ab"]
    await turns()
    producer.deliveries[0].set_result(None)
    await asyncio.wait_for(asyncio.gather(*writes), 1)
    assert timers and all(t.cancelled() for t in timers)
