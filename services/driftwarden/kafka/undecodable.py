"""Record batches aiokafka cannot decode: dead-lettered by coordinates, and the consumer moves past them.

What aiokafka 0.14 does with a batch it cannot decompress (a corrupt lz4/zstd/snappy/gzip payload under
a valid CRC, an unknown codec) or whose CRC is wrong: ``getmany()`` raises the codec's error
(``cramjam.DecompressionError``, ``zlib.error``, ``UnsupportedCodecError``, ``CorruptRecordException``)
and leaves the partition's position at the start of the fetch, so every later call raises again: the
consumer is stuck for good. Worse, the records it had already drained in that call (earlier batches of
the same fetch, other partitions) are dropped silently and their position moves past them.

What is possible with aiokafka's public API (:class:`GuardedFetch`): rewind every partition to the
offset after the last record handed out, then read one record at a time up to the high-water mark seen
at the failure; a record that raises is dead-lettered by coordinates (topic, partition, offset, reason;
its bytes cannot be had) and skipped with ``seek(offset + 1)``. Each offset of a broken batch gets its
own dead letter. What is not possible: the bytes of the broken batch (aiokafka never returns them), nor
knowing which partition failed without rewinding them all. A consumer without a group starts each
partition it has not handed anything out from at the beginning (driftwarden consumers use ``earliest``).

Faust consumers (the monitor, the trainer's commands) fetch inside Faust's consumer thread
(``AIOKafkaConsumerThread._fetch_records`` calls the fetcher directly); the adapter there can fetch
through ``GuardedFetch(consumer, grouped=True).getmany(*active_partitions, ...)`` instead, and hand the
dead letters to the service. Faust commits past the skipped offsets by itself: it records a gap when a
partition's next message is more than one offset after the last one read.
"""

from __future__ import annotations

import gzip
import logging
import time
import zlib

import cramjam
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CorruptRecordException, UnsupportedCodecError
from prometheus_client import Counter

from driftwarden.core.events import DeadLetter

log = logging.getLogger(__name__)

UNDECODABLE: tuple[type[Exception], ...] = (
    CorruptRecordException,
    UnsupportedCodecError,
    cramjam.DecompressionError,
    zlib.error,
    gzip.BadGzipFile,
    EOFError,
)
SKIPPED = Counter("driftwarden_undecodable_records", "Offsets skipped: their record batch cannot be decoded.",
                  ["topic"])  # fmt: skip


def undecodable_letter(tp: TopicPartition, offset: int, error: Exception) -> DeadLetter:
    """A dead letter by coordinates: the record's bytes cannot be decoded (nor returned) by the client.

    >>> letter = undecodable_letter(TopicPartition("driftwarden.predictions", 2), 1041, zlib.error("invalid block"))
    >>> letter.source_partition, letter.source_offset, letter.payload_b64
    (2, 1041, '')
    >>> letter.reason
    'undecodable record batch (corrupt or unsupported compression): error: invalid block'
    """
    return DeadLetter(
        ts=time.time(),
        source_topic=tp.topic,
        source_partition=tp.partition,
        source_offset=offset,
        reason=f"undecodable record batch (corrupt or unsupported compression): {type(error).__name__}: {error}",
        payload_b64="",
    )


class GuardedFetch:
    """``getmany()`` for an :class:`AIOKafkaConsumer` that survives undecodable record batches."""

    def __init__(self, consumer: AIOKafkaConsumer, grouped: bool) -> None:
        self.consumer = consumer
        self.grouped = grouped  # a consumer group's committed offset is where an untouched partition starts
        self.delivered: dict[TopicPartition, int] = {}  # the offset after the last record handed out
        self.careful: dict[TopicPartition, int] = {}  # read one record at a time up to this offset
        self._assignment: set[TopicPartition] = set()

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int, max_records: int | None
    ) -> tuple[list[ConsumerRecord], list[DeadLetter]]:
        """The next records (of ``partitions``, default all assigned), and dead letters for the offsets that
        had to be skipped. Like ``AIOKafkaConsumer.getmany``, whose arguments these are."""
        if self.consumer.assignment() != self._assignment:  # a rebalance: positions come from the group again
            self._assignment = set(self.consumer.assignment())
            self.delivered = {}
            self.careful = {}
        if self.careful:
            return await self._one_at_a_time(timeout_ms, set(partitions))
        try:
            fetched = await self.consumer.getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
        except UNDECODABLE as exc:
            log.error("a record batch cannot be decoded (%s: %s); re-reading record by record",
                      type(exc).__name__, exc)  # fmt: skip
            await self._rewind()
            return [], []
        records = [record for batch in fetched.values() for record in batch]
        await self._note(records)
        return records, []

    async def _note(self, records: list[ConsumerRecord]) -> None:
        for record in records:
            self.delivered[TopicPartition(record.topic, record.partition)] = record.offset + 1
        for tp in self.consumer.assignment():
            if tp not in self.delivered:
                self.delivered[tp] = await self.consumer.position(tp)

    async def _rewind(self) -> None:
        """Every partition back to what was handed out; read each carefully up to its high-water mark."""
        for tp in self.consumer.assignment():
            if tp in self.delivered:
                self.consumer.seek(tp, self.delivered[tp])
            else:
                committed = await self.consumer.committed(tp) if self.grouped else None
                if committed is None:
                    await self.consumer.seek_to_beginning(tp)
                    committed = 0
                else:
                    self.consumer.seek(tp, committed)
                self.delivered[tp] = committed
            self.careful[tp] = max(self.consumer.highwater(tp) or 0, self.delivered[tp] + 1)

    async def _one_at_a_time(
        self, timeout_ms: int, partitions: set[TopicPartition]
    ) -> tuple[list[ConsumerRecord], list[DeadLetter]]:
        records: list[ConsumerRecord] = []
        letters: list[DeadLetter] = []
        for tp, until in list(self.careful.items()):
            if partitions and tp not in partitions:
                continue
            offset = self.delivered[tp]
            try:
                fetched = await self.consumer.getmany(tp, timeout_ms=timeout_ms, max_records=1)
            except UNDECODABLE as exc:
                letters.append(undecodable_letter(tp, offset, exc))
                SKIPPED.labels(tp.topic).inc()
                log.error("skipping %s[%d] offset %d: %s", tp.topic, tp.partition, offset, letters[-1].reason)
                self.consumer.seek(tp, offset + 1)
                self.delivered[tp] = offset + 1
            else:
                got = fetched.get(tp, [])
                records += got
                if got:
                    self.delivered[tp] = got[-1].offset + 1
                elif (highwater := self.consumer.highwater(tp)) is not None and offset >= highwater:
                    until = offset  # nothing more to read
            if self.delivered[tp] >= until:
                del self.careful[tp]
        return records, letters
