"""Dead letters: what every service writes when it cannot use an input, so nothing is lost.

A dead letter keeps where the input came from and its exact bytes (base64), with the reason:

>>> from types import SimpleNamespace
>>> message = SimpleNamespace(topic="driftwarden.predictions", partition=3, offset=41, key=b"fraud", value=b"{oops")
>>> letter = dead_letter(message, "not valid JSON")
>>> letter.source_topic, letter.source_partition, letter.source_offset, letter.key, letter.payload_b64
('driftwarden.predictions', 3, 41, 'fraud', 'e29vcHM=')

One bad event of a batch envelope keeps its own bytes and its index in the batch:

>>> letter = dead_letter(message, "ts: Input should be a valid number", payload=b'{"ts": "x"}', batch_index=2)
>>> base64.b64decode(letter.payload_b64), letter.batch_index
(b'{"ts": "x"}', 2)

A payload too large for one Kafka message (the input itself was up to the consumer's fetch limit) is
stored truncated, with its full size and sha256 in the reason, so the dead letter can always be written.

>>> message = SimpleNamespace(topic="t", partition=0, offset=7, key=b"m", value=b"x" * 10)
>>> dead_letter(message, "bad", max_payload_bytes=4).reason
'bad; payload truncated to its first 4 of 10 bytes (sha256 of all: ...)'
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Protocol

from driftwarden.core.events import DeadLetter

MAX_PAYLOAD_BYTES = 600_000  # base64 and the envelope keep the dead letter under a 1 MiB message


class ConsumedMessage(Protocol):
    """What a dead letter needs of a consumed message: a Faust ``Message`` or an aiokafka ``ConsumerRecord``."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


def dead_letter(
    message: ConsumedMessage,
    reason: str,
    payload: bytes | None = None,
    batch_index: int | None = None,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
) -> DeadLetter:
    """A dead letter for a consumed Kafka message (or one event of it: ``payload`` and ``batch_index``)."""
    data = message.value or b"" if payload is None else payload
    if len(data) > max_payload_bytes:
        digest = hashlib.sha256(data).hexdigest()
        kept = f"its first {max_payload_bytes} of {len(data)} bytes"
        reason = f"{reason}; payload truncated to {kept} (sha256 of all: {digest})"
        data = data[:max_payload_bytes]
    return DeadLetter(
        ts=time.time(),
        source_topic=message.topic,
        source_partition=message.partition,
        source_offset=message.offset,
        batch_index=batch_index,
        key=message.key.decode("utf-8", "replace") if message.key else None,
        reason=reason,
        payload_b64=base64.b64encode(data).decode(),
    )
