"""Dead letters: what every service writes when it cannot use an input, so nothing is lost."""

from __future__ import annotations

import base64
import time
from typing import Any

from driftwarden.core.events import DeadLetter


def dead_letter(message: Any, reason: str, payload: bytes | None = None, batch_index: int | None = None) -> DeadLetter:
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
