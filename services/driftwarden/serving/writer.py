"""Write-back of served predictions: batch envelopes split under the producer's request size, each
checked with the monitor's own decoder before anything is written.

A request's predictions are all written or the request fails: an envelope the monitor would reject
(a NaN score, ...) refuses the whole request before any of it reaches the stream.

One write-back per micro-batch (group commit): the first request of a model is written at once;
requests that arrive while that write waits for its acknowledgement are queued and written together,
in arrival order, as soon as it is acknowledged. Each request is answered only once the write that
carries its predictions is acknowledged; a failed write fails every request it carried.

>>> events = [{"event_id": f"00000000-0000-4000-8000-{i:012d}", "model_id": "m", "model_version": "1", "ts": 1.0,
...            "features": {"x": 1.0}, "prediction": "0", "scores": {"0": 1.0}} for i in range(100)]
>>> split = envelopes("m", events, max_bytes=2_000)
>>> len(split), all(len(envelope) <= 2_000 for envelope in split)
(9, True)
>>> sum(len(orjson.loads(envelope)["events"]) for envelope in split)
100
>>> envelopes("m", [events[0] | {"scores": {"0": float("nan")}}])
Traceback (most recent call last):
...
driftwarden.serving.writer.UnservableError: the monitor would reject prediction 0: scores.0: Input should be ...
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from driftwarden.core.decoding import PREDICTIONS
from driftwarden.core.events import PREDICTION_BATCH_SCHEMA
from driftwarden.errors import DriftwardenError
from driftwarden.kafka.clients import client_options
from driftwarden.kafka.outages import BrokerState
from driftwarden.settings import Settings

MAX_REQUEST_BYTES = 1024 * 1024  # aiokafka's default max_request_size, and the usual broker limit
ENVELOPE_BYTES = MAX_REQUEST_BYTES - 64 * 1024  # room for the record and request headers


class UnservableError(DriftwardenError):
    """The predictions cannot be written as they are (the monitor would reject them, or too large)."""


class WriteError(DriftwardenError):
    """The broker did not acknowledge a write in time."""


def envelopes(model_id: str, events: list[dict[str, Any]], max_bytes: int = ENVELOPE_BYTES) -> list[bytes]:
    """``events`` as prediction-batch envelopes of at most ``max_bytes`` each, every event valid."""
    return pack(model_id, checked(model_id, events, max_bytes), max_bytes)


def checked(model_id: str, events: list[dict[str, Any]], max_bytes: int = ENVELOPE_BYTES) -> list[bytes]:
    """``events`` encoded, once the monitor's decoder accepted every one (else :class:`UnservableError`)."""
    head = _head(model_id)
    encoded = [orjson.dumps(event) for event in events]
    if any(len(head) + len(event) + 2 > max_bytes for event in encoded):
        raise UnservableError(f"one prediction is larger than {max_bytes} bytes")
    for start, stop in _spans(head, encoded, max_bytes):
        rejections = PREDICTIONS.decode(_envelope(head, encoded, start, stop)).rejections
        if rejections:
            first = rejections[0]
            index = start + (first.batch_index or 0)
            raise UnservableError(f"the monitor would reject prediction {index}: {first.reason}")
    return encoded


def pack(model_id: str, encoded: list[bytes], max_bytes: int = ENVELOPE_BYTES) -> list[bytes]:
    """Encoded events (from :func:`checked`) as envelopes of at most ``max_bytes`` each, in order."""
    head = _head(model_id)
    return [_envelope(head, encoded, start, stop) for start, stop in _spans(head, encoded, max_bytes)]


def _head(model_id: str) -> bytes:
    return orjson.dumps({"schema": PREDICTION_BATCH_SCHEMA, "model_id": model_id})[:-1] + b',"events":['


def _spans(head: bytes, encoded: list[bytes], max_bytes: int) -> list[tuple[int, int]]:
    """[start, stop) index ranges of ``encoded`` whose envelopes stay within ``max_bytes``."""
    spans: list[tuple[int, int]] = []
    start, size = 0, len(head) + 2
    for i, event in enumerate(encoded):
        if size + len(event) + 1 > max_bytes:
            spans.append((start, i))
            start, size = i, len(head) + 2
        size += len(event) + 1
    spans.append((start, len(encoded)))
    return spans


def _envelope(head: bytes, encoded: list[bytes], start: int, stop: int) -> bytes:
    return head + b",".join(encoded[start:stop]) + b"]}"


class PredictionWriter:
    """Publishes to Kafka and waits for the acknowledgement, at most ``timeout_s``; reports to ``state``."""

    def __init__(self, settings: Settings, state: BrokerState, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.state = state
        self.timeout_s = timeout_s
        self.producer: AIOKafkaProducer | None = None
        self._queued: dict[str, list[tuple[list[bytes], asyncio.Future[None]]]] = {}  # per model, arrival order
        self._writing: dict[str, asyncio.Task[None]] = {}  # the task writing each model's queue

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(
            **client_options(self.settings),
            acks="all",
            linger_ms=0,  # requests are batched by write() itself: lingering would only add latency
            max_request_size=MAX_REQUEST_BYTES,
            request_timeout_ms=int(self.timeout_s * 1000),
        )
        await self.producer.start()

    async def stop(self, timeout_s: float) -> None:
        """Flush and close, giving up after ``timeout_s`` (the broker may be gone)."""
        if self.producer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.producer.stop(), timeout_s)

    async def publish(self, topic: str, key: bytes | None, values: list[bytes]) -> None:
        """Publish ``values`` in order under one key; return once the broker acknowledged all of them."""
        assert self.producer is not None
        if not self.state.reachable:
            raise WriteError(f"the Kafka broker is {self.state.describe()}")
        try:
            futures = [await self.producer.send(topic, value, key=key) for value in values]
            await asyncio.wait_for(asyncio.gather(*futures), self.timeout_s)
        except Exception as exc:
            if isinstance(exc, (TimeoutError, KafkaTimeoutError, KafkaConnectionError)):
                self.state.down(f"a write to {topic} failed: {type(exc).__name__}: {exc}")
            raise WriteError(f"the write to {topic} was not acknowledged: {type(exc).__name__}: {exc}") from exc
        self.state.up()

    async def write(self, model_id: str, events: list[dict[str, Any]]) -> None:
        """Write predictions, with those of the requests queued beside them; return once acknowledged.
        Raises UnservableError, before queueing anything, for predictions the monitor would reject."""
        encoded = checked(model_id, events)
        written = asyncio.get_running_loop().create_future()
        self._queued.setdefault(model_id, []).append((encoded, written))
        if model_id not in self._writing:
            self._writing[model_id] = asyncio.create_task(self._write_queued(model_id))
        await asyncio.shield(written)  # a request that goes away does not cancel the others' write

    async def _write_queued(self, model_id: str) -> None:
        """Write ``model_id``'s queue, one publish per micro-batch, until nothing more is queued."""
        try:
            while queued := self._queued.pop(model_id, None):
                try:
                    encoded = [event for request, _ in queued for event in request]
                    await self.publish(self.settings.topics.predictions, model_id.encode(), pack(model_id, encoded))
                except asyncio.CancelledError:
                    stopped = WriteError("serving stopped before the write was acknowledged")
                    for _, written in queued + self._queued.pop(model_id, []):
                        written.set_exception(stopped)
                    raise
                except Exception as exc:  # WriteError, or anything unexpected: every request it carried fails
                    for _, written in queued:
                        written.set_exception(exc)
                else:
                    for _, written in queued:
                        written.set_result(None)
        finally:
            del self._writing[model_id]
