"""Batches of records from every partition of the trainer's topics, from where it stopped.

The trainer is the single writer of its model and keeps its own offsets in each checkpoint,
so it needs neither a consumer group's partition balancing nor its committed offsets: it
assigns itself every partition and seeks to the checkpoint's positions. Its lag is exported
on ``/metrics`` (``streamwise_trainer_consumer_lag``), since no group offsets exist to show it.

Faust's agents hand records over one at a time through two asyncio tasks each; fetching
batches with aiokafka's ``getmany`` costs a few microseconds per record instead (see
``bench/consumer_overhead.py``), which is most of the difference between keeping up with a
stream and falling behind it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streamwise_core.adapters.kafka import client_options
from streamwise_core.adapters.settings import KafkaSettings
from streamwise_core.domain.lifecycle.roster import StartPosition

from .learning import ConsumedRecord, position_key

log = logging.getLogger(__name__)

PARTITION_REFRESH_S = 30.0
"""How often the consumer looks for partitions added to its topics."""


class BatchConsumer:
    """Every partition of ``topics``, read in batches from checkpointed positions."""

    def __init__(
        self, kafka: KafkaSettings, topics: list[str], client_id: str, *, fetch_max_wait_ms: int,
        fetch_min_bytes: int = 1,
    ) -> None:
        self._topics = topics
        self._consumer = AIOKafkaConsumer(
            **client_options(kafka),
            group_id=None,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=kafka.request_timeout_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
            fetch_min_bytes=fetch_min_bytes,
            fetch_max_wait_ms=fetch_max_wait_ms,
        )
        self._assigned: set[TopicPartition] = set()
        self._next_refresh = 0.0

    async def start(self, positions: Mapping[str, int]) -> None:
        """Connect, assign every partition and seek each past its last learned offset."""
        await self._consumer.start()
        await self._assign_all(positions)

    async def _assign_all(self, positions: Mapping[str, int]) -> None:
        # Track our topics' metadata (what subscribe() would do) and refresh it, so
        # partitions added since the last look are seen.
        client = self._consumer._client  # noqa: SLF001 - aiokafka has no public call for this
        client.set_topics(self._topics)
        await client.force_metadata_update()
        partitions = {
            TopicPartition(topic, p)
            for topic in self._topics
            for p in sorted(self._consumer.partitions_for_topic(topic) or ())
        }
        self._next_refresh = time.monotonic() + PARTITION_REFRESH_S
        if partitions == self._assigned:
            return
        added = partitions - self._assigned
        self._consumer.assign(sorted(partitions))
        self._assigned = partitions
        resumed: dict[TopicPartition, int] = {}
        for tp in sorted(added):
            last = positions.get(position_key(tp.topic, tp.partition))
            if last is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, last + 1)
                resumed[tp] = last + 1
        await self._warn_if_deleted(resumed)
        log.info("consuming %s", ", ".join(position_key(tp.topic, tp.partition) for tp in sorted(partitions)))

    async def _warn_if_deleted(self, resumed: Mapping[TopicPartition, int]) -> None:
        """Say so when retention already deleted where a partition resumes: the fetch is answered
        "offset out of range" and, with ``auto_offset_reset="earliest"``, the consumer goes on from
        the oldest record left, without learning the ones in between."""
        if not resumed:
            return
        try:
            earliest = await self._consumer.beginning_offsets(list(resumed))
        except KafkaError as exc:  # only a diagnosis: the consumer works without it
            log.debug("could not read the earliest offsets: %r", exc)
            return
        for tp, offset in sorted(resumed.items()):
            if offset < earliest[tp]:
                log.warning(
                    "%s: resuming at offset %s, but retention has deleted every record before offset %s: "
                    "%s records are skipped (replay can start no earlier than the topic's retention.ms)",
                    position_key(tp.topic, tp.partition), offset, earliest[tp], earliest[tp] - offset,
                )

    async def next_batch(
        self, positions: Mapping[str, int], *, max_records: int, timeout_ms: int,
    ) -> list[ConsumedRecord]:
        """The next records (at most ``max_records``), or none after ``timeout_ms``."""
        if time.monotonic() >= self._next_refresh:
            await self._assign_all(positions)
        fetched = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        if len(fetched) == 1:
            return next(iter(fetched.values()))
        return [m for messages in fetched.values() for m in messages]

    async def lag(self) -> dict[str, int]:
        """Records not yet consumed, per partition (end offset minus position)."""
        if not self._assigned:
            return {}
        ends = await self._consumer.end_offsets(list(self._assigned))
        return {
            position_key(tp.topic, tp.partition): max(end - await self._consumer.position(tp), 0)
            for tp, end in ends.items()
        }

    async def stop(self) -> None:
        await self._consumer.stop()


async def start_positions(
    kafka: KafkaSettings, events: str, labels: str, start: StartPosition, client_id: str,
) -> dict[str, int]:
    """Checkpoint-style positions (last offset already behind, per ``topic:partition``) where a
    new model starts: ``earliest`` is none at all, ``latest`` the end of both topics, ``offset``
    that offset on every events partition, ``time`` the first records at or after that time."""
    if start.from_ == "earliest":
        return {}
    if start.from_ == "positions":
        return dict(start.positions or {})
    consumer = AIOKafkaConsumer(**client_options(kafka), group_id=None, client_id=client_id)
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p) for topic in (events, labels) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - see BatchConsumer._assign_all
            partitions = [
                TopicPartition(topic, p) for topic in (events, labels)
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
        ends = await consumer.end_offsets(partitions)
        beginnings = await consumer.beginning_offsets(partitions)
        first: dict[TopicPartition, int] = {}
        if start.from_ == "latest":
            first = dict(ends)
        elif start.from_ == "offset":
            first = {tp: min(max(start.offset or 0, beginnings[tp]), ends[tp]) for tp in partitions if tp.topic == events}
            for tp in (tp for tp in first if (start.offset or 0) < beginnings[tp]):
                log.warning("%s: offset %s is past retention (the earliest left is %s): starting there",
                            position_key(tp.topic, tp.partition), start.offset, beginnings[tp])
        elif start.from_ == "time":
            assert start.time is not None
            found = await consumer.offsets_for_times({tp: int(start.time.timestamp() * 1000) for tp in partitions})
            first = {tp: (hit.offset if hit is not None else ends[tp]) for tp, hit in found.items()}
        return {position_key(tp.topic, tp.partition): offset - 1 for tp, offset in first.items() if offset > 0}
    finally:
        await consumer.stop()
