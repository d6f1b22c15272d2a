"""Write-back of served predictions: columnar envelopes (``prediction-columns.v1``), one per model
version per micro-batch, split under the producer's request size, each checked before anything is
written: the rows the monitor's own decoder would refuse in it are found on its columns (``refusals``).

A request's predictions are all written or the request fails: a prediction the monitor would reject
(a NaN score, ...) refuses its whole request, and no row of it reaches the stream.

One write-back per micro-batch at most (group commit): a model's first micro-batch is written at once;
micro-batches scored while that write waits for its acknowledgement are queued and written together,
in order, as soon as it is acknowledged. Each request is answered only once the write that carries
its predictions is acknowledged; a failed write fails every request it carried.

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


# Predictions to write: columnar batches, each with the request of each of its rows (``owners``).
WriteBack = list[tuple[PredictionColumns, np.ndarray]]


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


def micro_batch(predictions: WriteBack, max_bytes: int = ENVELOPE_BYTES) -> tuple[list[bytes], dict[int, str]]:
    """The envelopes of several requests' predictions, each batch with the request of each of its rows
    (``owners``, the rows of a request in order), one envelope per version and feature set at most (if
    it fits) with the rows in the order given, and the requests refused (request -> why): no row of a
    refused request is in the envelopes."""
    groups: dict[tuple[str, tuple[str, ...]], WriteBack] = {}
    for batch, owners in predictions:
        groups.setdefault((batch.model_version, tuple(batch.features)), []).append((batch, owners))
    joined = [
        (PredictionColumns.concat([batch for batch, _ in parts]), np.concatenate([owners for _, owners in parts]))
        for parts in groups.values()
    ]
    refused: dict[int, str] = {}
    while True:
        values: list[bytes] = []
        found: dict[int, str] = {}
        for batch, owners in joined:
            group_values, refusals = checked(batch, max_bytes)
            values += group_values
            for refusal in refusals:
                for owner in np.unique(owners) if refusal.row is None else [owners[refusal.row]]:
                    found.setdefault(int(owner), _describe(refusal, int(np.argmax(owners == owner))))
        if not found:
            return values, refused
        refused |= found
        kept = [~np.isin(owners, list(found)) for _, owners in joined]
        joined = [(batch.take(np.flatnonzero(keep)), owners[keep])
                  for (batch, owners), keep in zip(joined, kept, strict=True) if keep.any()]  # fmt: skip


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
        # per model, in arrival order: each micro-batch's predictions (see enqueue) and its requests' outcomes
        self._queued: dict[str, list[tuple[WriteBack, list[asyncio.Future[None]]]]] = {}
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

    def enqueue(self, model_id: str, predictions: WriteBack, requests: int) -> list[asyncio.Future[None]]:
        """Queue a micro-batch's predictions to write: columnar batches, each with the request (0 to
        ``requests`` - 1) of each of its rows. Returns each request's outcome, done once the write that
        carries it is acknowledged (WriteError if it is not; UnservableError, and none of its rows
        written, when the monitor would reject any of them)."""
        loop = asyncio.get_running_loop()
        written: list[asyncio.Future[None]] = [loop.create_future() for _ in range(requests)]
        self._queued.setdefault(model_id, []).append((predictions, written))
        if model_id not in self._writing:
            self._writing[model_id] = asyncio.create_task(self._write_queued(model_id))
        return written

    async def _write_queued(self, model_id: str) -> None:
        """Write ``model_id``'s queue, one publish for all it holds, until nothing more is queued."""
        try:
            while queued := self._queued.pop(model_id, None):
                predictions: WriteBack = []
                written: list[asyncio.Future[None]] = []
                for batches, outcomes in queued:  # the requests numbered across the micro-batches
                    predictions += [(batch, owners + len(written)) for batch, owners in batches]
                    written += outcomes
                try:
                    values, refused = micro_batch(predictions)
                    for index, reason in refused.items():
                        written[index].set_exception(UnservableError(reason))
                    written = [outcome for index, outcome in enumerate(written) if index not in refused]
                    if values:
                        await self.publish(self.settings.topics.predictions, model_id.encode(), values)
                except asyncio.CancelledError:
                    stopped = WriteError("serving stopped before the write was acknowledged")
                    for outcome in written + [o for _, outcomes in self._queued.pop(model_id, []) for o in outcomes]:
                        outcome.set_exception(stopped)
                    raise
                except Exception as exc:  # WriteError, or anything unexpected: every request it carried fails
                    for outcome in written:
                        outcome.set_exception(exc)
                else:
                    for outcome in written:
                        outcome.set_result(None)
        finally:
            del self._writing[model_id]
