"""One dead letter per bad record, however many models read it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .learning import ConsumedRecord, position_key


class FirstToReach:
    """Every model of the app reads the same records in the same order per partition, so a bad
    record is dead-lettered by the first model to reach it and skipped by the others.

    Started from the furthest offsets the models restored: whatever came before them was
    dead-lettered by the model that got there.
    """

    def __init__(self, restored: Iterable[Mapping[str, int]] = ()) -> None:
        self._reached: dict[str, int] = {}
        for offsets in restored:
            for key, offset in offsets.items():
                self._reached[key] = max(offset, self._reached.get(key, -1))

    def claim(self, record: ConsumedRecord) -> bool:
        """Whether this model is the first to reach ``record`` (and so writes its dead letter)."""
        key = position_key(record.topic, record.partition)
        if record.offset <= self._reached.get(key, -1):
            return False
        self._reached[key] = record.offset
        return True
