"""Produce a scenario's predictions (and its labels, later) onto Kafka, as a model server would.

Predictions go out as batch envelopes of ``batch_size`` events (1 = single-event messages), or with
``columnar`` as columnar batches of ``batch_size`` rows (``schemas/prediction-columns.v1.json``), keyed
by ``model_id``. Each label is sent once ``label_delay`` more predictions have been produced after its
prediction (so labels arrive late, as they do in production); ``label_fraction`` < 1 drops some labels
for good. ``malformed_every`` > 0 slips a malformed message in after every that many good events, to
exercise the dead-letter path.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from driftwarden.core.events import LABEL_BATCH_SCHEMA, PREDICTION_BATCH_SCHEMA
from driftwarden.core.shards import shard_key
from driftwarden.kafka.clients import client_options
from driftwarden.settings import Settings
from driftwarden_load.scenarios import Scenario, generate

MAX_REQUEST_BYTES = 4 * 1024 * 1024


@dataclass
class ProduceReport:
    """What was sent; tests compare it with what the topics hold."""

    predictions: int = 0
    prediction_messages: int = 0
    labels: int = 0
    malformed: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.predictions / self.seconds if self.seconds else 0.0


def malformed_message(kind: int, good: dict[str, Any]) -> bytes:
    """One of several kinds of broken input, built from a good event (kind is taken modulo 5).

    Each kind is refused by the monitor's decoder, with a reason for its dead letter:

    >>> from driftwarden.core.decoding import PREDICTIONS
    >>> good = {"event_id": "req-1", "model_id": "m", "model_version": "1", "ts": 1.0,
    ...         "features": {"num_00": 0.5}, "prediction": 1}
    >>> for kind in range(5):
    ...     print(PREDICTIONS.decode(malformed_message(kind, good)).rejections[0].reason)
    not valid JSON: ...
    event_id: Field required
    ts: Input should be a valid number
    features.num_00...: Input should be a valid number; ...: Input should be a valid boolean; (+1 more errors)
    prediction...: Input should be a valid number; ...: Input should be a valid string
    """
    variants: list[Callable[[], bytes]] = [
        lambda: b"\x00not json at all",
        lambda: orjson.dumps({k: v for k, v in good.items() if k != "event_id"}),
        lambda: orjson.dumps({**good, "ts": "yesterday"}),
        lambda: orjson.dumps({**good, "features": {"num_00": {"nested": 1}}}),
        lambda: orjson.dumps({"schema": PREDICTION_BATCH_SCHEMA, "model_id": good["model_id"], "events": [
            {**good, "prediction": None}]}),
    ]  # fmt: skip
    return variants[kind % len(variants)]()


def envelope(schema: str, model_id: str, events: list[dict[str, Any]]) -> bytes:
    """One Kafka message value: a single event, or a batch envelope when there are several.

    >>> envelope("label-batch.v1", "m", [{"event_id": "a", "label": 1}])
    b'{"event_id":"a","label":1}'
    >>> orjson.loads(envelope("label-batch.v1", "m", [{"event_id": "a"}, {"event_id": "b"}]))["schema"]
    'label-batch.v1'
    """
    if len(events) == 1:
        return orjson.dumps(events[0])
    return orjson.dumps({"schema": schema, "model_id": model_id, "events": events})


def example_envelopes(examples: list[dict[str, Any]], size: int) -> tuple[list[bytes], list[bytes]]:
    """Labelled examples (of one model) as what the trainer joins them from: prediction and label envelopes.

    >>> example = {"event_id": "a", "model_id": "m", "model_version": "1", "ts": 2.0, "features": {},
    ...            "prediction": 1, "label": 0}
    >>> example_envelopes([example], 100)
    ([b'{"event_id":"a","model_id":"m","model_version":"1","ts":2.0,"features":{},"prediction":1}'], \
[b'{"event_id":"a","model_id":"m","ts":2.0,"label":0}'])
    """
    model_id = examples[0]["model_id"] if examples else ""
    predictions = [{k: v for k, v in e.items() if k != "label"} for e in examples]
    labels = [{k: e[k] for k in ("event_id", "model_id", "ts", "label")} for e in examples]
    return (
        [envelope(PREDICTION_BATCH_SCHEMA, model_id, predictions[i : i + size]) for i in range(0, len(examples), size)],
        [envelope(LABEL_BATCH_SCHEMA, model_id, labels[i : i + size]) for i in range(0, len(examples), size)],
    )


@asynccontextmanager
async def shared_producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer for one or many :class:`ScenarioProducer` s.

    Many model servers behind one producer (a gateway, a log shipper) put their messages into the
    same record batches; the embedded broker reads many tiny batches slowly, Kafka does not mind.
    """
    producer = AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        linger_ms=5,
        max_request_size=MAX_REQUEST_BYTES,
        max_batch_size=MAX_REQUEST_BYTES,
    )
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


class ScenarioProducer:
    """Sends one scenario's stream; ``run()`` returns a :class:`ProduceReport`."""

    def __init__(
        self,
        settings: Settings,
        scenario: Scenario,
        *,
        batch_size: int = 200,
        rate: float = 0.0,
        label_delay: int = 500,
        label_fraction: float = 1.0,
        malformed_every: int = 0,
        stamp: dict[str, float] | None = None,
        columnar: bool = False,
        shards: int = 0,
    ) -> None:
        """``stamp``: give each prediction its wall-clock send time as ``ts`` (as a model server
        does) and record it there by event_id, to measure end-to-end latency. ``shards``: above 0, the
        predictions of a sharded model, keyed ``model_id/shard`` round robin per message (labels keep
        the key ``model_id``)."""
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        if not 0.0 <= label_fraction <= 1.0:
            raise ValueError("label fraction must be between 0 and 1")
        if rate < 0 or label_delay < 0 or malformed_every < 0:
            raise ValueError("rate, label delay and malformed-every must not be negative")
        if columnar and (malformed_every or stamp is not None):
            raise ValueError("columnar batches go without malformed messages and send-time stamps")
        if columnar and shards:
            raise ValueError("a sharded model's predictions go as events (a columnar batch is dead-lettered)")
        if columnar and scenario.has_embedding:
            raise ValueError("columnar batches carry no arrays: send an embedding scenario as events")
        self.settings = settings
        self.scenario = scenario
        self.batch_size = batch_size
        self.rate = rate
        self.label_delay = label_delay
        self.label_fraction = label_fraction
        self.malformed_every = malformed_every
        self.stamp = stamp
        self.columnar = columnar
        self.shards = shards
        self.report = ProduceReport()
        self._pending_labels: deque[dict[str, Any]] = deque()
        self._label_rng = np.random.default_rng(scenario.seed + 1)
        self._key = scenario.model_id.encode()
        self._topics = settings.topics

    async def run(self, producer: AIOKafkaProducer | None = None) -> ProduceReport:
        """Send everything; with ``producer`` (see :func:`shared_producer`) share its connection and batches."""
        if producer is None:
            async with shared_producer(self.settings) as own:
                return await self.run(own)
        started = time.perf_counter()
        try:
            for chunk in generate(self.scenario, chunk_size=max(self.batch_size, 1_000)):
                predictions = [] if self.columnar else chunk.prediction_events()
                labels = chunk.label_events()
                for i in range(0, len(chunk), self.batch_size):
                    if self.columnar:
                        await self._send_columns(producer, chunk.prediction_columns(i, i + self.batch_size))
                    else:
                        await self._send_predictions(producer, predictions[i : i + self.batch_size])
                    self._queue_labels(labels[i : i + self.batch_size])
                    await self._send_due_labels(producer, keep=self.label_delay)
                    await self._pace(started)
            await self._send_due_labels(producer, keep=0)
        finally:
            await producer.flush()
        self.report.seconds = time.perf_counter() - started
        return self.report

    async def _send_predictions(self, producer: AIOKafkaProducer, events: list[dict[str, Any]]) -> None:
        if self.stamp is not None:
            now = time.time()
            for event in events:
                event["ts"] = now
                self.stamp[event["event_id"]] = now
        key = (
            shard_key(self.scenario.model_id, self.report.prediction_messages % self.shards)
            if self.shards
            else self._key
        )
        await producer.send(
            self._topics.predictions, envelope(PREDICTION_BATCH_SCHEMA, self.scenario.model_id, events), key=key
        )
        before = self.report.predictions
        self.report.predictions += len(events)
        self.report.prediction_messages += 1
        if self.malformed_every:
            due = self.report.predictions // self.malformed_every - before // self.malformed_every
            for _ in range(due):
                bad = malformed_message(self.report.malformed, events[0])
                await producer.send(self._topics.predictions, bad, key=self._key)
                self.report.malformed += 1

    async def _send_columns(self, producer: AIOKafkaProducer, document: dict[str, Any]) -> None:
        await producer.send(self._topics.predictions, orjson.dumps(document), key=self._key)
        self.report.predictions += len(document["event_id"])
        self.report.prediction_messages += 1

    def _queue_labels(self, labels: list[dict[str, Any]]) -> None:
        keep = self._label_rng.random(len(labels)) < self.label_fraction
        self._pending_labels.extend(label for label, kept in zip(labels, keep, strict=True) if kept)

    async def _send_due_labels(self, producer: AIOKafkaProducer, keep: int) -> None:
        """Send the labels whose predictions are more than ``keep`` events old."""
        due = max(0, len(self._pending_labels) - keep)
        while due > 0:
            n = min(due, self.batch_size)
            batch = [self._pending_labels.popleft() for _ in range(n)]
            value = envelope(LABEL_BATCH_SCHEMA, self.scenario.model_id, batch)
            await producer.send(self._topics.labels, value, key=self._key)
            self.report.labels += n
            due -= n

    async def _pace(self, started: float) -> None:
        if self.rate > 0:
            ahead = self.report.predictions / self.rate - (time.perf_counter() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
