"""Read a topic from the beginning (or from a time) without a consumer group: for tails and audits.

Without ``follow`` a read covers what the topic held when the read began: each partition is read up
to the first fetch high-water mark (``highwater()``) the broker reports for it. The embedded broker
reports end offsets wrongly, but its high-water marks right. Records that keep arriving during the
read do not keep it going (a trainer reading its window while traffic flows still finishes). A record
batch that cannot be decompressed is skipped offset by offset with an error line
(:class:`~driftwarden.kafka.undecodable.GuardedFetch`), never a reader stuck on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from driftwarden.kafka.clients import client_options
from driftwarden.kafka.undecodable import GuardedFetch
from driftwarden.settings import Settings

log = logging.getLogger(__name__)


async def read_topic(
    settings: Settings,
    topic: str,
    *,
    follow: bool = False,
    since_ts: float | None = None,
    idle_timeout_s: float | None = None,
    max_record_bytes: int = 1024 * 1024,
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Yield every record of ``topic`` (those produced at or after ``since_ts`` if given).

    Without ``follow`` it stops at the end the topic had when the read began, or, with
    ``idle_timeout_s``, once caught up and nothing new arrived for that long; with ``follow`` it runs
    until cancelled.
    """
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=max_record_bytes,
        fetch_max_bytes=max(max_record_bytes, 50 * 1024 * 1024),
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    try:
        await consumer.start()
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            raise LookupError(f"topic {topic!r} does not exist")
        assigned = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        since_ms = None if since_ts is None else int(since_ts * 1000)
        ends: dict[TopicPartition, int] = {}
        idle_since = asyncio.get_running_loop().time()
        guard = GuardedFetch(consumer, grouped=False)
        while True:
            records, skipped = await guard.getmany(timeout_ms=200, max_records=5_000)
            for letter in skipped:
                log.error("%s[%d] offset %d skipped: %s", topic, letter.source_partition, letter.source_offset,
                          letter.reason)  # fmt: skip
            for record in records:
                if since_ms is None or record.timestamp >= since_ms:
                    yield record
            if follow:
                continue
            if idle_timeout_s is None:
                if await _reached(consumer, assigned, ends):
                    return
                continue
            now = asyncio.get_running_loop().time()
            if records or skipped:
                idle_since = now
            elif now - idle_since >= idle_timeout_s and await _reached(consumer, assigned, {}):
                return
    finally:
        await consumer.stop()


async def _reached(consumer: AIOKafkaConsumer, assigned: list[TopicPartition], ends: dict[TopicPartition, int]) -> bool:
    """Every partition read up to the first high-water mark seen for it (kept in ``ends``; pass a new
    dict for the current mark)."""
    for tp in assigned:
        if tp not in ends and (highwater := consumer.highwater(tp)) is not None:
            ends[tp] = highwater
    return len(ends) == len(assigned) and all([await consumer.position(tp) >= ends[tp] for tp in assigned])


async def watermarks(
    settings: Settings, partitions: list[tuple[str, int]], timeout_s: float = 10.0
) -> dict[tuple[str, int], tuple[int, int]]:
    """(low-water, high-water) mark of each (topic, partition), the high one from a fetch response
    (the embedded broker reports end offsets wrongly, high-water marks right)."""
    wait_ms = settings.fetch_max_wait_ms
    consumer = AIOKafkaConsumer(
        **client_options(settings), group_id=None, enable_auto_commit=False, fetch_max_wait_ms=wait_ms
    )
    try:
        await consumer.start()
        assigned = [TopicPartition(topic, p) for topic, p in partitions]
        consumer.assign(assigned)
        lows = await consumer.beginning_offsets(assigned)
        for tp in assigned:
            consumer.seek(tp, lows[tp])
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any(consumer.highwater(tp) is None for tp in assigned):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no fetch response for {assigned} in {timeout_s:.0f} s")
            await consumer.getmany(*assigned, timeout_ms=100, max_records=1)
        return {(tp.topic, tp.partition): (lows[tp], consumer.highwater(tp) or 0) for tp in assigned}
    finally:
        await consumer.stop()


async def next_record_offset(
    settings: Settings, topic: str, partition: int, offset: int, timeout_s: float = 10.0
) -> int | None:
    """The offset of the first record at or after ``offset`` on the log (None: none below its high-water mark).

    A fetch from an offset that holds no record is answered with the records after it: Kafka's logs may
    have such holes (compaction, transaction markers), and Tansu with durable storage leaves one when it
    is killed while it writes a batch (the offset is taken, the batch is not stored; the producer's
    retry lands on the next offset). Reads no group, commits nothing.
    """
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    try:
        await consumer.start()
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            records = (await consumer.getmany(tp, timeout_ms=100, max_records=1)).get(tp, [])
            if records:
                return records[0].offset
            highwater = consumer.highwater(tp)
            if highwater is not None and await consumer.position(tp) >= highwater:
                return None
        raise TimeoutError(f"no fetch response for {tp} in {timeout_s:.0f} s")
    finally:
        await consumer.stop()


async def start_new_group_at_end(
    settings: Settings, group: str, topics: list[str], timeout_s: float = 10.0
) -> dict[tuple[str, int], int]:
    """``auto_offset_reset = "latest"``, computed right: for each partition of ``topics`` on which
    ``group`` has no committed offset, commit its high-water mark (from a fetch response), so that the
    group's first consumer starts there. Returns what it committed ({(topic, partition): offset}).

    A consumer's own ``latest`` reset asks for end offsets, which the embedded broker reports as the
    start of the last record batch + 1, so a "latest" consumer would re-read most of that batch; the
    high-water mark of a fetch is right on both brokers. Partitions with committed offsets are left
    alone (a restarted group resumes where it was). A group that already has running members refuses
    a commit from outside on Kafka: then nothing is committed and their positions stand.
    """
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=group, enable_auto_commit=False)
    try:
        await consumer.start()
        await consumer.topics()  # fetches the metadata partitions_for_topic reads
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        fresh = [tp for tp in partitions if await consumer.committed(tp) is None]
        if not fresh:
            return {}
        marks = await watermarks(settings, [(tp.topic, tp.partition) for tp in fresh], timeout_s)
        offsets = {tp: marks[(tp.topic, tp.partition)][1] for tp in fresh}
        consumer.assign(fresh)
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            log.warning("group %s: start offsets not committed (%r); its running members' positions stand", group, exc)
            return {}
        return {(tp.topic, tp.partition): offset for tp, offset in offsets.items()}
    finally:
        await consumer.stop()
