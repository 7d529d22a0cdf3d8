"""The application's live feed: sampled events, each with the champion's prediction."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from streamwise_core.contracts.errors import BackendUnavailable
from streamwise_core.contracts.events import EventReceived

from .feed import FeedBuffer, FeedItem, confidence
from .upstream import PredictorClient, UpstreamRefused

log = logging.getLogger(__name__)

BATCH = 20
PENDING = 100


def feed_items(events: list[EventReceived], answer: dict[str, object] | None, problem: str | None) -> list[FeedItem]:
    """Events joined with the predictor's batch answer (by id), or marked with the problem."""
    by_id: dict[str, dict[str, object]] = {}
    model = version = None
    if answer is not None:
        model, version = answer.get("model"), answer.get("version")
        predictions: list[dict[str, object]] = answer.get("predictions", [])  # type: ignore[assignment]  # the predictor's JSON
        by_id = {str(p["id"]): p for p in predictions}
    items = []
    for event in events:
        p = by_id.get(event.id)
        probabilities = p.get("probabilities") if p else None
        items.append(FeedItem(
            id=event.id, features=dict(event.features), accepted_at=event.received_at.astimezone(UTC),
            label=event.label,
            prediction=p.get("prediction") if p else None,  # type: ignore[arg-type]
            probabilities=probabilities,  # type: ignore[arg-type]
            confidence=confidence(p.get("prediction"), probabilities) if p else None,  # type: ignore[arg-type]
            model=model if p else None,  # type: ignore[arg-type]
            version=version if p else None,  # type: ignore[arg-type]
            problem=None if p else (problem or "no prediction"),
        ))
    return items


class FeedWorker:
    """Takes sampled events, asks the predictor about them in batches, and publishes the items."""

    def __init__(self, predictor: PredictorClient, buffer: FeedBuffer, publish: Callable[[FeedItem], None]) -> None:
        self._predictor = predictor
        self._buffer = buffer
        self._publish = publish
        self._pending: asyncio.Queue[EventReceived] = asyncio.Queue(PENDING)
        self.last_item_at: datetime | None = None

    def offer(self, event: EventReceived) -> None:
        """Called from the stream watcher; drops events when the predictor cannot keep up."""
        if not self._pending.full():
            self._pending.put_nowait(event)

    async def run(self) -> None:
        while True:
            events = [await self._pending.get()]
            while len(events) < BATCH and not self._pending.empty():
                events.append(self._pending.get_nowait())
            try:
                await self._handle(events)
            except Exception:  # a bug here must not stop the feed
                log.exception("feed batch failed")

    async def _handle(self, events: list[EventReceived]) -> None:
        answer, problem = None, None
        try:
            answer = await self._predictor.predict_batch([{"id": e.id, "features": e.features} for e in events])
        except UpstreamRefused as exc:
            problem = "no model is served yet" if exc.status == 503 else f"predictor answered {exc.status}"
        except BackendUnavailable:
            problem = "the predictor is unavailable"
        for item in feed_items(events, answer, problem):
            self._buffer.add(item)
            self._publish(item)
            self.last_item_at = item.accepted_at
