"""The monitor's state/offset protocol: checkpoints, the offsets they cover, and what may be committed.

The invariant, held by construction: **the group's committed offsets never run ahead of the newest
durable checkpoint.** Three rules make it so:

1. The input topics are consumed without Faust acknowledgements (``acks=False``), so Faust itself
   never commits an offset of them.
2. The only code that commits is :meth:`CheckpointLine._write`, and it commits exactly the offsets of
   checkpoints the broker has just acknowledged, in the order they were taken. A partition that never
   had a checkpoint is never committed (a fresh group replays it from the start, which is correct).
3. :class:`OffsetLedger` admits each input message exactly once and in order against the offsets the
   restored state covers: a message the state already includes is skipped, never processed twice; a
   message beyond the next expected offset is never processed over offsets that hold records (the
   worker exits and a restart replays from the checkpoint), only over offsets retention deleted or
   that hold no record (a hole in the log); nothing seeks against the framework. A restarted worker
   is positioned by the committed offsets, which are at or behind its checkpoint, so it reads forward
   and skips what the checkpoint covers.

A checkpoint is a versioned envelope (:class:`Checkpoint`): a JSON header (format, version, group,
partition, covered offsets, compression, payload size and sha256) and the compressed (zstd; zlib
read too), opaque state of the core. A checkpoint that is malformed, of another version, fails its
checksum, names another group or partition, or covers offsets outside the current log (beyond the
high-water mark or below the low-water mark: another incarnation of the log) is refused with
:class:`CheckpointRefused`, never restored. Nothing here talks to Kafka: the service passes the
writes, commits and watermarks in.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import cramjam
import orjson

log = logging.getLogger(__name__)

FORMAT = "driftwarden-monitor-checkpoint"
VERSION = 1
#: zstd level 1: a busy model's 2.2 MB state in 5 ms (zlib level 1, written before: 31 ms, the same size).
ZSTD_LEVEL = 1
#: The codecs a checkpoint's ``compression`` may name: zstd (written), zlib (checkpoints of earlier builds).
DECOMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "zstd": lambda payload: bytes(cramjam.zstd.decompress(payload)),
    "zlib": zlib.decompress,
}

RefusalReason = Literal["malformed", "version", "checksum", "identity", "foreign_log", "payload"]


class CheckpointRefused(Exception):
    """A checkpoint that must not be restored (or written); ``reason`` is the metric label."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: RefusalReason = reason
        self.detail = detail


@dataclass(frozen=True)
class Checkpoint:
    """The state of one partition and the next offset of each input topic that state covers.

    ``state`` is the core's export (opaque bytes). An input topic missing from ``offsets`` has not
    been read into this state: it resumes where the group's consumer starts it (committed or earliest),
    and is never committed.

    >>> cp = Checkpoint("g", 2, {"predictions": 10, "labels": 4}, b"state")
    >>> Checkpoint.decode(cp.encode(), "g", 2) == cp
    True
    """

    group: str
    partition: int
    offsets: Mapping[str, int]
    state: bytes

    @property
    def key(self) -> bytes:
        """The key on the compacted state topic: one live checkpoint per group and partition."""
        return checkpoint_key(self.group, self.partition)

    def encode(self) -> bytes:
        """Header line (JSON) + compressed state (zstd). CPU-bound (the codec releases the GIL): call in a thread."""
        payload = bytes(cramjam.zstd.compress(self.state, ZSTD_LEVEL))
        header = {
            "format": FORMAT,
            "version": VERSION,
            "group": self.group,
            "partition": self.partition,
            "offsets": dict(self.offsets),
            "compression": "zstd",
            "payload_bytes": len(payload),
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
        }
        return orjson.dumps(header) + b"\n" + payload

    @classmethod
    def decode(cls, raw: bytes, group: str, partition: int) -> Checkpoint:
        """Parse and verify a checkpoint read under ``group``'s key for ``partition``."""
        head, newline, payload = raw.partition(b"\n")
        header = _header(head) if newline else None
        if header is None or header.get("format") != FORMAT:
            raise CheckpointRefused("malformed", "not a driftwarden checkpoint envelope")
        if header.get("version") != VERSION:
            raise CheckpointRefused("version", f"format version {header.get('version')!r}, this worker reads {VERSION}")
        if header.get("group") != group or header.get("partition") != partition:
            written = f"{header.get('group')!r}/{header.get('partition')!r}"
            raise CheckpointRefused("identity", f"written for {written}, read as {group}/{partition}")
        offsets = header.get("offsets")
        if not isinstance(offsets, dict) or not all(_is_offset(v) for v in offsets.values()):
            raise CheckpointRefused("malformed", f"offsets {offsets!r}")
        digest = hashlib.sha256(payload).hexdigest()
        if header.get("payload_bytes") != len(payload) or header.get("payload_sha256") != digest:
            raise CheckpointRefused("checksum", f"payload of {len(payload)} bytes does not match its header")
        decompress = DECOMPRESS.get(str(header.get("compression")))
        if decompress is None:
            raise CheckpointRefused("malformed", f"compression {header.get('compression')!r}")
        try:
            state = decompress(payload)
        except (zlib.error, cramjam.DecompressionError) as exc:
            raise CheckpointRefused("payload", f"state does not decompress: {exc}") from None
        return cls(group, partition, offsets, state)


def checkpoint_key(group: str, partition: int) -> bytes:
    return f"{group}/{partition}".encode()


def partition_of_key(key: bytes | None, group: str) -> int | None:
    """The partition a state-topic key is for, when it is one of ``group``'s checkpoint keys.

    >>> partition_of_key(b"g/3", "g"), partition_of_key(b"other/3", "g"), partition_of_key(b"g/x", "g")
    (3, None, None)
    """
    owner, _, number = (key or b"").decode("utf-8", "replace").rpartition("/")
    return int(number) if owner == group and number.isdigit() else None


def _header(head: bytes) -> dict[str, Any] | None:
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError:
        return None
    return header if isinstance(header, dict) else None


def _is_offset(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_within_log(offsets: Mapping[str, int], watermarks: Mapping[str, tuple[int, int]]) -> None:
    """Refuse offsets that cannot belong to the current log: beyond its high-water mark, or below its
    low-water mark (the events in between are not there to replay). ``watermarks``: topic -> (low, high).

    >>> check_within_log({"p": 5}, {"p": (0, 5)})
    >>> check_within_log({"p": 9}, {"p": (0, 5)})
    Traceback (most recent call last):
    ...
    driftwarden.monitor.state.CheckpointRefused: foreign_log: p: covers offsets up to 9 but the log holds 0..5
    """
    for topic, offset in sorted(offsets.items()):
        if topic in watermarks:
            low, high = watermarks[topic]
            if not low <= offset <= high:
                raise CheckpointRefused(
                    "foreign_log", f"{topic}: covers offsets up to {offset} but the log holds {low}..{high}"
                )


class Admission(enum.Enum):
    """What to do with an input message, given the offsets the state already covers."""

    PROCESS = "process"  #: the next message of its partition
    COVERED = "covered"  #: already part of the state: skip it
    #: later than expected; not admitted. Only the log's retention may explain it (the offsets in
    #: between are gone: :meth:`OffsetLedger.resume_at` this one); anything else is out-of-order
    #: delivery, and processing on would lose the offsets in between.
    GAP = "gap"


@dataclass
class OffsetLedger:
    """The next offset of each input topic-partition the state expects. Pure bookkeeping.

    >>> ledger = OffsetLedger()
    >>> ledger.start(0, {"p": 5})
    >>> [ledger.admit("p", 0, o).value for o in (3, 5, 6, 9)]
    ['covered', 'process', 'process', 'gap']
    >>> ledger.covered(0)
    {'p': 7}
    """

    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def start(self, partition: int, offsets: Mapping[str, int]) -> None:
        """Begin ``partition`` at a checkpoint's offsets (an input not in ``offsets``: where it comes)."""
        self.forget({partition})
        self.next_offsets.update({(topic, partition): offset for topic, offset in offsets.items()})

    def admit(self, topic: str, partition: int, offset: int) -> Admission:
        key = (topic, partition)
        expected = self.next_offsets.get(key)
        if expected is not None and offset < expected:
            return Admission.COVERED
        if expected is not None and offset > expected:
            return Admission.GAP
        self.next_offsets[key] = offset + 1
        return Admission.PROCESS

    def resume_at(self, topic: str, partition: int, offset: int) -> None:
        """Expect ``offset`` next: the offsets before it are gone from the log (retention)."""
        self.next_offsets[(topic, partition)] = offset

    def expected(self, topic: str, partition: int) -> int | None:
        return self.next_offsets.get((topic, partition))

    def covered(self, partition: int) -> dict[str, int]:
        """The offsets a checkpoint of ``partition``'s current state covers (topic -> next offset)."""
        return {topic: offset for (topic, p), offset in sorted(self.next_offsets.items()) if p == partition}

    def forget(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        self.next_offsets = {key: o for key, o in self.next_offsets.items() if key[1] not in gone}


#: Writes encoded checkpoints (key, value) and returns once the broker acknowledged every one.
WriteCheckpoints = Callable[[list[tuple[bytes, bytes]]], Awaitable[None]]
#: Commits the group's offsets: {(topic, partition): next offset}.
CommitOffsets = Callable[[dict[tuple[str, int], int]], Awaitable[None]]


class CheckpointLine:
    """Checkpoints leave in the order they were taken; each batch's offsets are committed only after
    the broker acknowledged that batch. A failed write commits nothing (the previous checkpoint and
    commit stand: a restart replays a little more). A failed commit leaves the committed offsets
    behind the checkpoint, which is safe: the restarted worker skips what the checkpoint covers.
    """

    def __init__(self, write: WriteCheckpoints, commit: CommitOffsets) -> None:
        self._write_batch = write
        self._commit = commit
        self._last: asyncio.Future[bool] | None = None

    @property
    def busy(self) -> bool:
        return self._last is not None and not self._last.done()

    def submit(self, checkpoints: list[Checkpoint]) -> asyncio.Future[bool]:
        """Queue a batch of checkpoints; the future says whether it became durable (and was committed)."""
        self._last = asyncio.ensure_future(self._write(checkpoints, self._last))
        return self._last

    async def drain(self) -> None:
        """Wait until everything submitted so far was written (or failed)."""
        if self._last is not None:
            await asyncio.gather(self._last, return_exceptions=True)

    async def _write(self, checkpoints: list[Checkpoint], previous: asyncio.Future[bool] | None) -> bool:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        try:
            encoded = [(cp.key, await asyncio.to_thread(cp.encode)) for cp in checkpoints]
            await self._write_batch(encoded)
        except Exception:
            log.exception("writing checkpoints of partitions %s failed", [cp.partition for cp in checkpoints])
            return False
        offsets = {(topic, cp.partition): offset for cp in checkpoints for topic, offset in cp.offsets.items()}
        if offsets:
            try:
                await self._commit(offsets)
            except Exception:  # behind the checkpoint is safe; the next checkpoint commits again
                log.exception("committing offsets %s after their checkpoint failed", offsets)
        return True
