"""What the web app keeps in memory about the streams it watches, without I/O: a sample of
incoming events with the champion's prediction, dead letters, rates, and freshness."""

from __future__ import annotations

import bisect
from collections import Counter, deque
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

Label = bool | str | float


class Feedback(BaseModel):
    label: Label
    by: str
    at: datetime


class FeedItem(BaseModel):
    """One incoming event, as the application's page shows it."""

    id: str
    features: dict[str, Any]
    accepted_at: datetime = Field(description="When ingest accepted the event.")
    label: Label | None = Field(default=None, description="The outcome, if it came with the event.")
    prediction: Label | None = None
    confidence: float | None = Field(default=None, description="Probability of the predicted class.")
    probabilities: dict[str, float] | None = None
    model: str | None = None
    version: int | None = None
    problem: str | None = Field(default=None, description="Why there is no prediction (no model served yet).")
    feedback: Feedback | None = None


def confidence(prediction: Any, probabilities: Mapping[str, float] | None) -> float | None:
    """The probability of the predicted class (classes are JSON keys: ``true``, ``fraud``)."""
    if not probabilities:
        return None
    key = str(prediction).lower() if isinstance(prediction, bool) else str(prediction)
    if key in probabilities:
        return float(probabilities[key])
    return float(max(probabilities.values()))


class Sampler:
    """A token bucket: lets ``rate`` items a second through, bursts of ``max(1, rate)``."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._at: float | None = None

    def take(self, now: float) -> bool:
        if self._at is not None:
            self._tokens = min(self._capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class FeedBuffer:
    """The newest ``size`` feed items, by id."""

    def __init__(self, size: int) -> None:
        self._items: deque[FeedItem] = deque(maxlen=size)

    def add(self, item: FeedItem) -> None:
        self._items.append(item)

    def items(self, limit: int | None = None) -> list[FeedItem]:
        """Newest first."""
        out = list(reversed(self._items))
        return out[:limit] if limit is not None else out

    def get(self, event_id: str) -> FeedItem | None:
        return next((i for i in self._items if i.id == event_id), None)

    def record_feedback(self, event_id: str, feedback: Feedback) -> FeedItem | None:
        """Attach feedback to the item of ``event_id``, if it is still in the feed."""
        for index, item in enumerate(self._items):
            if item.id == event_id:
                updated = item.model_copy(update={"feedback": feedback})
                self._items[index] = updated
                return updated
        return None


class RateMeter:
    """Items per second over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = 10.0) -> None:
        self._window_s = window_s
        self._marks: deque[tuple[float, int]] = deque()
        self.total = 0

    def add(self, count: int, now: float) -> None:
        self.total += count
        self._marks.append((now, count))
        self._trim(now)

    def rate(self, now: float) -> float:
        self._trim(now)
        return sum(n for _, n in self._marks) / self._window_s

    def _trim(self, now: float) -> None:
        while self._marks and now - self._marks[0][0] > self._window_s:
            self._marks.popleft()


class CounterRates:
    """Rates of monotonic counters read at intervals (Prometheus counters scraped)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float]] = {}

    def rate(self, name: str, value: float | None, now: float) -> float | None:
        """Per second since the previous reading; None on the first, or after a restart reset it."""
        if value is None:
            self._last.pop(name, None)
            return None
        previous = self._last.get(name)
        self._last[name] = (now, value)
        if previous is None or now <= previous[0] or value < previous[1]:
            return None
        return (value - previous[1]) / (now - previous[0])


class FreshnessTracker:
    """Time from an event's acceptance to a served model that learned up to it.

    Every partition keeps (offset, accepted at) marks at most every ``resolution_s``; when a
    version starts being served, the newest mark its offsets cover gives one measurement.
    """

    def __init__(self, resolution_s: float = 0.1, keep: int = 36_000, samples: int = 100) -> None:
        self._resolution_s = resolution_s
        self._keep = keep
        self._marks: dict[int, tuple[list[int], list[float]]] = {}
        self.samples: deque[float] = deque(maxlen=samples)

    def accepted(self, partition: int, offset: int, accepted_at: float) -> None:
        offsets, times = self._marks.setdefault(partition, ([], []))
        # One mark per ``resolution_s``: later events of that span map to its first (conservative).
        if offsets and (offset <= offsets[-1] or accepted_at - times[-1] < self._resolution_s):
            return
        offsets.append(offset)
        times.append(accepted_at)
        if len(offsets) > self._keep:
            del offsets[: len(offsets) - self._keep]
            del times[: len(times) - self._keep]

    def served(self, topic: str, model_offsets: Mapping[str, int], served_at: float) -> float | None:
        """Record and return the freshness of a version that covers ``model_offsets`` of ``topic``."""
        newest: float | None = None
        for key, covered in model_offsets.items():
            name, _, part = key.rpartition(":")
            if name != topic or not part.isdigit() or int(part) not in self._marks:
                continue
            offsets, times = self._marks[int(part)]
            index = bisect.bisect_right(offsets, covered) - 1
            if index >= 0 and (newest is None or times[index] > newest):
                newest = times[index]
        if newest is None:
            return None
        value = max(0.0, served_at - newest)
        self.samples.append(value)
        return value

    def summary(self) -> dict[str, float | int | None]:
        ordered = sorted(self.samples)
        return {
            "last_s": self.samples[-1] if self.samples else None,
            "median_s": ordered[len(ordered) // 2] if ordered else None,
            "max_s": ordered[-1] if ordered else None,
            "samples": len(ordered),
        }


class DeadLetterItem(BaseModel):
    topic: str = Field(description="Where the record was read.")
    partition: int
    offset: int
    key: str | None
    reason: str
    consumer: str
    at: datetime
    value_preview: str = Field(description="The start of the refused record (at most 500 characters).")


class DeadLetterLog:
    """The newest dead letters, and a count of every one seen by reason."""

    def __init__(self, keep: int) -> None:
        self._items: deque[DeadLetterItem] = deque(maxlen=keep)
        self.by_reason: Counter[str] = Counter()

    def add(self, item: DeadLetterItem) -> None:
        self._items.append(item)
        self.by_reason[reason_class(item.reason)] += 1

    def items(self, limit: int, reason: str | None = None) -> list[DeadLetterItem]:
        """Newest first; ``reason`` keeps those whose reason contains it."""
        out = [i for i in reversed(self._items) if reason is None or reason.lower() in i.reason.lower()]
        return out[:limit]

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())


def reason_class(reason: str) -> str:
    """The reason's first clause (before ':'), so counts group similar problems."""
    head = reason.split(":", 1)[0].strip()
    return head[:80] or "unknown"
