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

Faust consumers (the monitor, the trainer's commands) fetch inside Faust's consumer thread; the adapter
there (:mod:`driftwarden.kafka.faust_app`) fetches through ``GuardedFetch`` and hands each skipped
offset on in line, as a :func:`placeholder` record at that very offset: the service sees every offset in
order (the monitor's offset ledger needs no holes, and Faust's own gap bookkeeping, which misses a hole
at offset 0, is never needed) and dead-letters a placeholder by its coordinates
(:func:`undecodable_reason`).
"""

from __future__ import annotations

import gzip
import logging
import time
import zlib
from typing import Any, Protocol

import cramjam
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CorruptRecordException, UnsupportedCodecError
from prometheus_client import Counter

from driftwarden.core.events import DeadLetter

log = logging.getLogger(__name__)


class ConsumedWithHeaders(Protocol):
    """What :func:`undecodable_reason` reads: a Faust ``Message`` or an aiokafka ``ConsumerRecord``."""

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Any: ...


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


#: Fetched records by partition, in offset order within each (what ``AIOKafkaConsumer.getmany`` returns).
Fetched = dict[TopicPartition, list[ConsumerRecord]]
#: The header that marks a :func:`placeholder` record (it carries the dead letter's reason).
PLACEHOLDER_HEADER = "driftwarden-undecodable"


def placeholder(letter: DeadLetter) -> ConsumerRecord[bytes, bytes]:
    """A record standing in for an offset that cannot be decoded: no key, an empty value, the reason in
    a header, and the offset's coordinates.

    >>> record = placeholder(undecodable_letter(TopicPartition("t", 1), 7, zlib.error("bad")))
    >>> record.topic, record.partition, record.offset, record.key, record.value
    ('t', 1, 7, None, b'')
    >>> undecodable_reason(record)
    'undecodable record batch (corrupt or unsupported compression): error: bad'
    """
    return ConsumerRecord(
        topic=letter.source_topic,
        partition=letter.source_partition,
        offset=letter.source_offset,
        timestamp=int(letter.ts * 1000),
        timestamp_type=0,
        key=None,
        value=b"",
        checksum=None,
        serialized_key_size=-1,
        serialized_value_size=0,
        headers=((PLACEHOLDER_HEADER, letter.reason.encode()),),
    )


def in_line(fetched: Fetched, letters: list[DeadLetter]) -> Fetched:
    """Records and :func:`placeholder` records for the dead letters, by partition in offset order
    (``fetched`` itself when there is no dead letter: the usual case costs nothing per record).

    >>> tp = TopicPartition("t", 0)
    >>> letter = undecodable_letter(tp, 1, zlib.error("bad"))
    >>> fetched = {tp: [ConsumerRecord("t", 0, o, 0, 0, None, b"ok", None, -1, 2, ()) for o in (0, 2)]}
    >>> [(r.offset, r.value) for r in in_line(fetched, [letter])[tp]]
    [(0, b'ok'), (1, b''), (2, b'ok')]
    """
    if not letters:
        return fetched
    by_partition = {tp: list(batch) for tp, batch in fetched.items()}
    for letter in letters:
        tp = TopicPartition(letter.source_topic, letter.source_partition)
        by_partition.setdefault(tp, []).append(placeholder(letter))
    for tp in {TopicPartition(letter.source_topic, letter.source_partition) for letter in letters}:
        by_partition[tp].sort(key=lambda record: record.offset)
    return by_partition


def undecodable_reason(message: ConsumedWithHeaders) -> str | None:
    """Why ``message`` (a Faust message or a record) could not be decoded, if it is a :func:`placeholder`.

    Only a record without key and value can be one: a producer that adds the header to a real record
    does not turn it into a dead letter.

    >>> forged = ConsumerRecord("t", 0, 3, 0, 0, b"k", b"{}", None, 1, 2, ((PLACEHOLDER_HEADER, b"no"),))
    >>> undecodable_reason(forged) is None
    True
    """
    if message.key is not None or message.value:
        return None
    for name, value in message.headers or ():
        if name == PLACEHOLDER_HEADER:
            return bytes(value).decode("utf-8", "replace")
    return None


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
        fetched, letters = await self.fetch(*partitions, timeout_ms=timeout_ms, max_records=max_records)
        return [record for batch in fetched.values() for record in batch], letters

    async def fetch(
        self, *partitions: TopicPartition, timeout_ms: int, max_records: int | None
    ) -> tuple[Fetched, list[DeadLetter]]:
        """:meth:`getmany` with the records by partition, as aiokafka's ``getmany`` returns them."""
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
            return {}, []
        await self._note(fetched)
        return fetched, []

    async def _note(self, fetched: Fetched) -> None:
        for tp, batch in fetched.items():  # once per partition, not per record: the hot path
            if batch:
                self.delivered[tp] = batch[-1].offset + 1
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
    ) -> tuple[Fetched, list[DeadLetter]]:
        records: Fetched = {}
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
                if got:
                    records[tp] = got
                    self.delivered[tp] = got[-1].offset + 1
                elif (highwater := self.consumer.highwater(tp)) is not None and offset >= highwater:
                    until = offset  # nothing more to read
            if self.delivered[tp] >= until:
                del self.careful[tp]
        return records, letters
