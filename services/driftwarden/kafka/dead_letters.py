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
"""

from __future__ import annotations

import base64
import time
from typing import Protocol

from driftwarden.core.events import DeadLetter


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
    message: ConsumedMessage, reason: str, payload: bytes | None = None, batch_index: int | None = None
) -> DeadLetter:
    """A dead letter for a consumed Kafka message (or one event of it: ``payload`` and ``batch_index``)."""
    return DeadLetter(
        ts=time.time(),
        source_topic=message.topic,
        source_partition=message.partition,
        source_offset=message.offset,
        batch_index=batch_index,
        key=message.key.decode("utf-8", "replace") if message.key else None,
        reason=reason,
        payload_b64=base64.b64encode(message.value or b"" if payload is None else payload).decode(),
    )
