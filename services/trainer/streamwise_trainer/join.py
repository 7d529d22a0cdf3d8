"""Join late labels to the features of their event, in either arrival order."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple


class Example(NamedTuple):
    """A labelled example, made once per event (a tuple: the cheapest object Python builds)."""

    id: str
    x: dict[str, Any]
    y: Any


class LabelJoin:
    """Features waiting for a label, and labels waiting for their event.

    Both buffers are bounded; the oldest entry is dropped first and counted, so memory
    stays flat when most events never get a label.

    >>> join = LabelJoin(capacity=2)
    >>> join.on_event("a", {"amount": 12.5}, None) is None  # no label yet: the features wait
    True
    >>> join.on_label("a", True)
    Example(id='a', x={'amount': 12.5}, y=True)
    >>> join.on_label("b", False) is None  # a label before its event waits too
    True
    >>> join.on_event("b", {"amount": 3.0}, None)
    Example(id='b', x={'amount': 3.0}, y=False)
    >>> for i in range(3):
    ...     _ = join.on_event(f"e{i}", {}, None)
    >>> join.waiting_features, join.evicted  # the oldest is dropped, and counted
    (2, 1)
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._features: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._labels: OrderedDict[str, Any] = OrderedDict()
        self.evicted = 0

    def _remember(self, buffer: OrderedDict[str, Any], key: str, value: Any) -> None:
        buffer[key] = value
        buffer.move_to_end(key)
        while len(buffer) > self.capacity:
            buffer.popitem(last=False)
            self.evicted += 1

    def on_event(self, event_id: str, x: dict[str, Any], label: Any | None) -> Example | None:
        """An example when the label is known already, else the features wait."""
        if label is not None:
            self._labels.pop(event_id, None)
            return Example(event_id, x, label)
        if event_id in self._labels:
            return Example(event_id, x, self._labels.pop(event_id))
        self._remember(self._features, event_id, x)
        return None

    def on_label(self, event_id: str, label: Any) -> Example | None:
        """An example when the event's features are here, else the label waits."""
        x = self._features.pop(event_id, None)
        if x is not None:
            return Example(event_id, x, label)
        self._remember(self._labels, event_id, label)
        return None

    @property
    def waiting_features(self) -> int:
        return len(self._features)

    @property
    def waiting_labels(self) -> int:
        return len(self._labels)
