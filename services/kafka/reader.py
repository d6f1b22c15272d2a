"""Read a topic from the beginning (or from a time) without a consumer group: for tails and audits.

The embedded broker reports end offsets wrongly, so "caught up" is judged by the fetch high-water
mark (``highwater()``), which it reports correctly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from driftwarden.config import Settings
from driftwarden.kafka.clients import client_options


async def read_topic(
    settings: Settings,
    topic: str,
    *,
    follow: bool = False,
    since_ts: float | None = None,
    idle_timeout_s: float = 1.0,
    max_record_bytes: int = 1024 * 1024,
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Yield every record of ``topic`` (those produced at or after ``since_ts`` if given).

    Without ``follow`` it stops once every partition is read up to its high-water mark and nothing new
    arrived for ``idle_timeout_s``; with ``follow`` it runs until cancelled.
    """
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=max_record_bytes,
        fetch_max_bytes=max(max_record_bytes, 50 * 1024 * 1024),
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        if not partitions:
            raise LookupError(f"topic {topic!r} does not exist")
        assigned = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        since_ms = None if since_ts is None else int(since_ts * 1000)
        idle_since = asyncio.get_running_loop().time()
        while True:
            fetched = await consumer.getmany(timeout_ms=200, max_records=5_000)
            for records in fetched.values():
                for record in records:
                    if since_ms is None or record.timestamp >= since_ms:
                        yield record
            now = asyncio.get_running_loop().time()
            if any(fetched.values()):
                idle_since = now
            elif not follow and now - idle_since >= idle_timeout_s and await _caught_up(consumer, assigned):
                return
    finally:
        await consumer.stop()


async def _caught_up(consumer: AIOKafkaConsumer, assigned: list[TopicPartition]) -> bool:
    """Every partition read up to its fetch high-water mark (None until the first fetch answers)."""
    for tp in assigned:
        highwater = consumer.highwater(tp)
        if highwater is None or await consumer.position(tp) < highwater:
            return False
    return True
