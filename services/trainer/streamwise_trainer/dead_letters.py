"""Dead letters of the trainer: one per bad record, however many models read it, and one per
failure of a model's own learning."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

from streamwise_core.contracts.events import DeadLettered

from .learning import ConsumedRecord, Rejected, position_key

log = logging.getLogger(__name__)

Send = Callable[[str, bytes, bytes | None], Awaitable[object]]
"""Write a value with a key to a topic and wait for the broker's acknowledgement."""


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


class DeadLetterSink:
    """Writes one model's rejected records to the dead-letters topic: a bad record only if
    ``claim`` says this model reached it first, a failure of this model's learning always."""

    def __init__(
        self, send: Send, topic: str, model: str, *, claim: Callable[[ConsumedRecord], bool] = lambda record: True,
    ) -> None:
        self._send = send
        self._topic = topic
        self._model = model
        self._claim = claim
        self.written = 0

    async def write(self, item: Rejected) -> None:
        r = item.record
        if not item.model_specific and not self._claim(r):
            return
        letter = DeadLettered(
            topic=r.topic, partition=r.partition, offset=r.offset,
            key=r.key.decode("utf-8", "replace") if r.key is not None else None,
            value=(r.value or b"").decode("utf-8", "replace")[:65536],
            reason=item.reason[:2000], consumer=f"trainer:{self._model}" if item.model_specific else "trainer",
        )
        self.written += 1
        log.warning(
            "dead letter %s:%s@%s: %s", r.topic, r.partition, r.offset, item.reason[:300], extra={"event_id": letter.key}
        )
        await self._send(self._topic, letter.to_bytes(), r.key)
