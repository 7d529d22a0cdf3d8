"""Fan-out of live messages to every open event stream; a slow reader loses its oldest messages."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

CHANNELS = frozenset({"state", "feed", "system"})
QUEUE_SIZE = 256


class Hub:
    def __init__(self) -> None:
        self._queues: dict[asyncio.Queue[tuple[str, str]], frozenset[str]] = {}

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def publish(self, channel: str, data: str) -> None:
        """Queue ``data`` (JSON text) for every subscriber of ``channel``; never blocks."""
        for queue, channels in self._queues.items():
            if channel not in channels:
                continue
            if queue.full():
                queue.get_nowait()  # drop the oldest: a live view wants the newest
            queue.put_nowait((channel, data))

    @contextmanager
    def subscribe(self, channels: frozenset[str]) -> Iterator[asyncio.Queue[tuple[str, str]]]:
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(QUEUE_SIZE)
        self._queues[queue] = channels
        try:
            yield queue
        finally:
            self._queues.pop(queue, None)
