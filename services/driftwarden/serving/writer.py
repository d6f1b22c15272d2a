"""Write-back of served predictions: columnar envelopes (``prediction-columns.v1``), one per model
version per micro-batch, split under the producer's request size, each checked before anything is
written: the rows the monitor's own decoder would refuse in it are found on its columns (``refusals``).

A request's predictions are all written or the request fails: a prediction the monitor would reject
(a NaN score, ...) refuses its whole request, and no row of it reaches the stream.

One write-back per micro-batch (group commit): the first request of a model is written at once;
requests that arrive while that write waits for its acknowledgement are queued and written together,
in arrival order, as soon as it is acknowledged. Each request is answered only once the write that
carries its predictions is acknowledged; a failed write fails every request it carried.

>>> batch = PredictionColumns("m", "1", [f"id-{i}" for i in range(100)], np.full(100, 1.0),
...                           {"x": np.arange(100.0)}, ["0"] * 100, {"0": np.ones(100)})
>>> split = envelopes(batch, max_bytes=1_000)
>>> len(split), all(len(envelope) <= 1_000 for envelope in split)
(3, True)
>>> from driftwarden.core.decoding import PREDICTIONS
>>> sum(len(PREDICTIONS.decode(envelope).columns[0]) for envelope in split)
100
>>> batch.scores["0"][7] = float("nan")
>>> envelopes(batch)
Traceback (most recent call last):
...
driftwarden.serving.writer.UnservableError: prediction 7: the monitor would reject it: scores.0: Input should be ...
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from driftwarden.core.columnar import PredictionColumns, refusals
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


@dataclass(frozen=True)
class Refusal:
    """Why the monitor would not take row ``row`` of a batch (``None``: any of its rows)."""

    row: int | None
    reason: str


def envelopes(batch: PredictionColumns, max_bytes: int = ENVELOPE_BYTES) -> list[bytes]:
    """``batch`` as envelopes of at most ``max_bytes`` each, once the monitor's decoder accepted every
    row (else :class:`UnservableError` naming the first refused row)."""
    values, refusals = checked(batch, max_bytes)
    if refusals:
        raise UnservableError(_describe(refusals[0], 0))
    return values


def checked(batch: PredictionColumns, max_bytes: int = ENVELOPE_BYTES) -> tuple[list[bytes], list[Refusal]]:
    """``batch`` as envelopes of at most ``max_bytes`` each, in row order, and the rows the monitor's
    decoder would refuse in them (:func:`~driftwarden.core.columnar.refusals`: found on the columns, not
    by parsing the envelopes again); the envelopes are written only when there are none."""
    raw = batch.to_json()
    if len(raw) <= max_bytes:
        return [raw], [Refusal(row, f"the monitor would reject it: {reason}") for row, reason in refusals(batch)]
    if len(batch) == 1:
        return [], [Refusal(0, f"it is larger than {max_bytes} bytes as a message")]
    step = -(-len(batch) // -(-len(raw) // max_bytes))  # rows per envelope, if rows are of similar size
    values: list[bytes] = []
    refused: list[Refusal] = []
    for start in range(0, len(batch), step):
        part_values, part_refused = checked(batch[start : start + step], max_bytes)
        values += part_values
        refused += [Refusal(None if r.row is None else start + r.row, r.reason) for r in part_refused]
    return values, refused


def micro_batch(
    requests: list[list[PredictionColumns]], max_bytes: int = ENVELOPE_BYTES
) -> tuple[list[bytes], dict[int, str]]:
    """The envelopes of several requests' predictions (each request: one batch per model version), one
    batch per version and feature set with the requests' rows in arrival order, and the requests refused
    (index -> why): no row of a refused request is in the envelopes."""
    refused: dict[int, str] = {}
    while True:
        groups: dict[tuple[str, tuple[str, ...]], list[tuple[int, PredictionColumns]]] = {}
        for index, batches in enumerate(requests):
            if index not in refused:
                for batch in batches:
                    groups.setdefault((batch.model_version, tuple(batch.features)), []).append((index, batch))
        values: list[bytes] = []
        found: dict[int, str] = {}
        for parts in groups.values():
            starts = np.cumsum([0] + [len(batch) for _, batch in parts])
            group_values, refusals = checked(PredictionColumns.concat([batch for _, batch in parts]), max_bytes)
            values += group_values
            for refusal in refusals:
                row = refusal.row
                for part in range(len(parts)) if row is None else [int(np.searchsorted(starts, row, "right")) - 1]:
                    found.setdefault(parts[part][0], _describe(refusal, int(starts[part])))
        if not found:
            return values, refused
        refused |= found


def _describe(refusal: Refusal, start: int) -> str:
    """The refusal for the request whose rows start at ``start``."""
    return f"{'these predictions' if refusal.row is None else f'prediction {refusal.row - start}'}: {refusal.reason}"


class PredictionWriter:
    """Publishes to Kafka and waits for the acknowledgement, at most ``timeout_s``; reports to ``state``."""

    def __init__(self, settings: Settings, state: BrokerState, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.state = state
        self.timeout_s = timeout_s
        self.producer: AIOKafkaProducer | None = None
        # per model, in arrival order: each request's predictions (a batch per version) and its outcome
        self._queued: dict[str, list[tuple[list[PredictionColumns], asyncio.Future[None]]]] = {}
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

    async def write(self, model_id: str, predictions: list[PredictionColumns]) -> None:
        """Write a request's predictions (a batch per model version) with those of the requests queued
        beside them; return once acknowledged. Raises UnservableError, and writes none of them, when
        the monitor would reject any."""
        written = asyncio.get_running_loop().create_future()
        self._queued.setdefault(model_id, []).append((predictions, written))
        if model_id not in self._writing:
            self._writing[model_id] = asyncio.create_task(self._write_queued(model_id))
        await asyncio.shield(written)  # a request that goes away does not cancel the others' write

    async def _write_queued(self, model_id: str) -> None:
        """Write ``model_id``'s queue, one publish per micro-batch, until nothing more is queued."""
        try:
            while queued := self._queued.pop(model_id, None):
                try:
                    values, refused = micro_batch([predictions for predictions, _ in queued])
                    for index, reason in refused.items():
                        queued[index][1].set_exception(UnservableError(reason))
                    queued = [item for index, item in enumerate(queued) if index not in refused]
                    if values:
                        await self.publish(self.settings.topics.predictions, model_id.encode(), values)
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
