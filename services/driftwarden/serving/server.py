"""ONNX serving: an HTTP API that micro-batches requests, hot-swaps promoted models and writes every
prediction back to the predictions topic (so monitoring sees serving without any glue).

Endpoints: ``POST /v1/models/{model_id}/predict`` with ``{"instances": [{"features": {...}}, ...]}``
(rows), ``POST /v2/models/{model_id}/infer`` (the Open Inference Protocol: columns,
:mod:`~driftwarden.serving.open_inference`) and its metadata and health endpoints, ``GET /healthz``,
``GET /readyz``, ``GET /metrics``. Both predict endpoints are front-ends of one micro-batcher, which
scores and writes back the rows of either. With a token configured, predict, infer and the model
metadata require ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.metadata
import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import chain, repeat
from typing import Any, TypeVar, cast

import numpy as np
import orjson
import uvloop
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import ValidationError

from driftwarden.core.columnar import PredictionColumns
from driftwarden.core.decoding import describe
from driftwarden.core.events import InferenceRequest, InferenceResponse, ModelPublished, ServedPrediction
from driftwarden.kafka.clients import client_options
from driftwarden.kafka.dead_letters import dead_letter
from driftwarden.kafka.outages import BrokerProbe, BrokerState, quiet_connection_errors
from driftwarden.kafka.reader import read_topic
from driftwarden.kafka.undecodable import GuardedFetch
from driftwarden.registry.store import ModelRegistry
from driftwarden.serving.models import (
    MAX_INSTANCES,
    ActiveModels,
    BadRequestError,
    Challenger,
    Columns,
    Instances,
    ServedModel,
    TooLargeError,
)
from driftwarden.serving.open_inference import decode_infer, infer_answer, model_metadata
from driftwarden.serving.supervisor import Supervisor
from driftwarden.serving.writer import ENVELOPE_BYTES, PredictionWriter, UnservableError, WriteBack, WriteError
from driftwarden.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# A micro-batch of fewer rows is scored on the event loop: handing it to a thread costs 300-500 µs of CPU
# (measured with 256, 1,024 and 4,096 rows), about what scoring 256 rows takes; 1,024 rows block the loop ~2 ms.
THREAD_ROWS = 1024
REQUEST_MESSAGE_BYTES = 16 * 1024 * 1024  # the largest inference request stream mode reads
# Namespace of the ids minted for the non-answering version's predictions (shadow, canary).
SHADOW_NAMESPACE = uuid.UUID("bc41b74d-c4e1-459f-9d3f-21d5a658b8e0")
# Namespace of the ids minted for stream requests' instances that bring none.
REQUEST_NAMESPACE = uuid.UUID("5d0f6a3e-2b7c-4f5e-9a1d-8c3b2e4f6a70")
# The model follower's fetches wait this long: a swap comes at most this late, and the embedded broker
# holds every fetch until the wait expires, so a shorter one only adds idle fetches (serving's idle CPU:
# 24-25 ms/s with this follower at 50 ms, 16.5-18 at 500).
MODEL_FETCH_WAIT_MS = 500
SMALL_REQUEST = 8  # fewer ids than this are made one by one (cheaper than the arrays)
_UUID_DIGITS = [i for i in range(36) if i not in (8, 13, 18, 23)]  # where a UUID's text has hex digits
REQUESTS = Counter("driftwarden_serving_requests", "Predict requests.", ["model_id", "status"])
ROWS = Counter("driftwarden_serving_predictions", "Rows scored.", ["model_id", "model_version"])
LATENCY = Histogram("driftwarden_serving_latency_seconds", "Request latency, queueing included.", ["model_id"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))  # fmt: skip
BATCH_ROWS = Histogram("driftwarden_serving_batch_rows", "Rows per micro-batch.", buckets=(1, 8, 32, 128, 512, 2048))
SWAPS = Counter("driftwarden_serving_swaps", "Model-published events followed, by outcome: the status activated, "
                "refused, ignored (rejected), invalid-event.", ["model_id", "outcome"])  # fmt: skip


@dataclass(frozen=True)
class ServingConfig:
    max_batch_rows: int = 256
    max_wait_s: float = 0.002  # a micro-batch collects requests for at most this long after its first ...
    idle_s: float = 0.00025  # ... and closes sooner, once no request has arrived for this long
    cost_per_request: float = 0.0
    cost_per_ms: float = 0.0
    token: str | None = None
    stream: bool = True  # also answer requests from the inference-requests topic
    body_timeout_s: float = 10.0  # reading a request body takes at most this long
    write_timeout_s: float = 10.0  # the broker acknowledges a write-back within this, or the request fails
    shutdown_timeout_s: float = 5.0  # after SIGTERM, in-flight work gets this long (the broker may be down)


@dataclass(frozen=True)
class Scored:
    """Predictions of rows by one model version (a request's, or all those of a micro-batch that one
    version answered), with how it was deployed when a challenger runs."""

    served: ServedModel
    labels: list[str]
    probabilities: np.ndarray  # a row per instance, a column per class (the manifest's order)
    frame: dict[str, np.ndarray]  # the instances as this version's input columns
    latency_ms: np.ndarray  # per row: from its request's arrival to the end of scoring
    deployment: str | None = None  # "primary" or "canary" (answered); "shadow" or "baseline" (not answered)
    other: Scored | None = None  # the other version's predictions for the same rows

    def take(self, rows: slice | np.ndarray, columns: bool = True) -> Scored:
        """The rows ``rows`` (a slice, or an array of row numbers) of these predictions, without the other's;
        without their input columns (``frame`` empty) unless ``columns``."""
        labels = self.labels[rows] if isinstance(rows, slice) else [self.labels[i] for i in rows]
        frame = {name: column[rows] for name, column in self.frame.items()} if columns else {}
        return Scored(self.served, labels, self.probabilities[rows], frame, self.latency_ms[rows], self.deployment)


# A request's answer from its predictions (without their input columns: ``frame`` is empty) and event ids
# (raising refuses it: nothing of it is written).
Answer = Callable[["Scored", list[str]], T]


# A front-end's parsing of a predict body: its instances and their answer (BadRequestError, TooLargeError).
Decoder = Callable[[Any], tuple[Instances, Answer[bytes]]]


@dataclass
class _Pending:
    instances: Instances
    answer: Answer[Any]
    enqueued: float
    future: asyncio.Future[Any]  # the answer, set once the write of its predictions is acknowledged


@dataclass
class MicroBatcher:
    """Collects requests per model (until ``max_batch_rows`` rows, ``max_wait_s``, or ``idle_s`` without a
    new request: :meth:`_collect`), scores once and writes the micro-batch's predictions back in one write
    (with those of micro-batches queued behind a write in flight:
    :class:`~driftwarden.serving.writer.PredictionWriter`)."""

    models: ActiveModels
    config: ServingConfig
    writer: PredictionWriter
    queues: dict[str, asyncio.Queue[_Pending]] = field(default_factory=dict)
    workers: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    async def submit(self, model_id: str, instances: Instances, answer: Answer[T]) -> T:
        """``answer(scored, event_ids)`` of the request's predictions, returned once they are written back
        (raises what ``answer`` raises, and nothing of the request is written; WriteError if the write fails)."""
        future = asyncio.get_running_loop().create_future()
        if model_id not in self.queues:
            self.queues[model_id] = asyncio.Queue()
            self.workers[model_id] = asyncio.create_task(self._work(model_id))
        self.queues[model_id].put_nowait(_Pending(instances, answer, time.perf_counter(), future))
        return cast(T, await future)  # (one wake-up: the answer comes with its write's acknowledgement)

    async def _work(self, model_id: str) -> None:
        queue = self.queues[model_id]
        while True:
            batch = await self._collect(queue)
            try:
                await self._score(model_id, batch)
            except Exception as exc:  # never leave a request waiting, never let the worker die
                log.exception("scoring a micro-batch of %s failed", model_id)
                for item in batch:
                    _refuse(item.future, exc)

    async def _collect(self, queue: asyncio.Queue[_Pending]) -> list[_Pending]:
        """The next micro-batch: the first request and those that follow it until ``max_batch_rows`` rows,
        ``max_wait_s`` after the first, or a wait of ``idle_s`` in which none arrived (clients waiting for
        their answers send no more: waiting on would only delay them). One timer per wait of ``idle_s``,
        none per request."""
        batch = [await queue.get()]
        rows = len(batch[0].instances)
        deadline = batch[0].enqueued + self.config.max_wait_s
        while True:
            while rows < self.config.max_batch_rows and not queue.empty():
                item = queue.get_nowait()
                batch.append(item)
                rows += len(item.instances)
            left = deadline - time.perf_counter()
            if rows >= self.config.max_batch_rows or left <= 0:
                return batch
            await asyncio.sleep(min(self.config.idle_s, left))
            if queue.empty():
                return batch

    async def _score(self, model_id: str, batch: list[_Pending]) -> None:
        served = self.models.get(model_id)  # one version for the whole micro-batch, even mid-swap
        challenger = self.models.challenger(model_id)
        if served is None:
            for item in batch:
                _refuse(item.future, LookupError(f"model {model_id!r} is not served"))
            return
        frame, refusals = served.frames([item.instances for item in batch])
        accepted = []
        for item, refusal in zip(batch, refusals, strict=True):
            if refusal is None:
                accepted.append(item)
            else:
                _refuse(item.future, refusal)
        if not accepted:
            return
        rows = sum(len(item.instances) for item in accepted)
        BATCH_ROWS.observe(rows)
        try:
            labels, probabilities = await score(served, frame)
            tried = await self._score_challenger(challenger, accepted)
        except Exception as exc:  # the model failed: every request of the batch gets a 500
            for item in accepted:
                _refuse(item.future, exc)
            return
        done = time.perf_counter()
        sizes = [len(item.instances) for item in accepted]
        bounds = np.cumsum([0, *sizes]).tolist()
        latency = np.repeat([(done - item.enqueued) * 1000 for item in accepted], sizes)
        champion = Scored(served, labels, probabilities, frame, latency)
        answering = [champion] * len(accepted)  # the version answering each request, with all the rows
        if tried is not None and challenger is not None:
            other = Scored(challenger.served, tried[1], tried[2], tried[0], latency)
            if challenger.mode == "shadow":
                shadowed = replace(champion, deployment="primary", other=replace(other, deployment="shadow"))
                answering = [shadowed] * len(accepted)
            else:
                primary = replace(champion, deployment="primary")
                canary = replace(other, deployment="canary", other=replace(champion, deployment="baseline"))
                answering = [canary if random.random() < challenger.fraction else primary for _ in accepted]
        ids = event_ids(list(chain.from_iterable(given_event_ids(item.instances) for item in accepted)))
        kept: list[int] = []  # the requests answered, to write back
        answered: list[Any] = []
        for index, (item, version) in enumerate(zip(accepted, answering, strict=True)):
            start, stop = bounds[index], bounds[index + 1]
            try:
                answered.append(item.answer(version.take(slice(start, stop), columns=False), ids[start:stop]))
            except Exception as exc:  # UnservableError (the answer is too large), or anything unexpected
                _refuse(item.future, exc)
            else:
                kept.append(index)
        ROWS.labels(model_id, served.version).inc(rows)
        if not kept:
            return
        written = self.writer.enqueue(model_id, write_back(answering, kept, bounds, ids, self.config), len(kept))
        for index, answer, done_writing in zip(kept, answered, written, strict=True):
            done_writing.add_done_callback(partial(_release, accepted[index].future, answer))

    async def _score_challenger(
        self, challenger: Challenger | None, items: list[_Pending]
    ) -> tuple[dict[str, np.ndarray], list[str], np.ndarray] | None:
        """The challenger's input columns and predictions for the same rows (None if there is none or it
        cannot score them)."""
        if challenger is None:
            return None
        try:
            frame, refusals = challenger.served.frames([item.instances for item in items])
            refused = next((refusal for refusal in refusals if refusal is not None), None)
            if refused is not None:
                raise refused
            return frame, *await score(challenger.served, frame)
        except Exception as exc:  # the challenger must never fail a request the champion can answer
            log.warning("challenger v%s cannot score this batch: %s", challenger.served.version, exc)
            return None


def _refuse(future: asyncio.Future[Any], why: BaseException) -> None:
    """Answer a request with why it is refused or failed, unless it went away (cancelled): setting a
    cancelled request's future would raise and fail the rest of its micro-batch."""
    if not future.done():
        future.set_exception(why)


def _release(future: asyncio.Future[Any], answer: Any, written: asyncio.Future[None]) -> None:
    """Answer a request once the write of its predictions is done: ``answer``, or why the write failed.

    The writer's outcome is not the request's own future: a request that goes away (cancelled) does not
    cancel the write that carries the others' predictions (the writer sets its outcomes, never cancels them)."""
    failed = written.exception()  # (retrieved even when the request went away: no "never retrieved" log)
    if failed is not None:
        _refuse(future, failed)
    elif not future.done():
        future.set_result(answer)


async def score(served: ServedModel, frame: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """``served.score(frame)``: in a worker thread (the event loop goes on meanwhile) unless the batch is
    so small that handing it to a thread would cost more than scoring it here."""
    if len(next(iter(frame.values()), ())) < THREAD_ROWS:
        return served.score(frame)
    return await asyncio.get_running_loop().run_in_executor(None, served.score, frame)


def write_back(
    answering: list[Scored], kept: list[int], bounds: list[int], event_ids: list[str], config: ServingConfig
) -> WriteBack:
    """A micro-batch's predictions to write back: the rows of requests ``kept`` (request ``i``: rows
    ``bounds[i]:bounds[i + 1]``, answered by ``answering[i]``, all rows of the micro-batch), a columnar
    batch per version and deployment, each with the request of each of its rows (its place in ``kept``)."""
    owner = np.full(len(answering), -1)
    owner[kept] = np.arange(len(kept))
    owners = np.repeat(owner, np.diff(bounds))
    requests: dict[int, tuple[Scored, list[int]]] = {}  # the requests of each answering version
    for index in kept:
        requests.setdefault(id(answering[index]), (answering[index], []))[1].append(index)
    written = []
    for version, indices in requests.values():
        if len(indices) == len(answering):  # (all the rows: no copy)
            rows: slice | np.ndarray = slice(None)
            part, ids = version, event_ids
        else:
            rows = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in indices])
            other = None if version.other is None else version.other.take(rows)
            part, ids = replace(version.take(rows), other=other), [event_ids[i] for i in rows]
        written += [(columns, owners[rows]) for columns in prediction_columns(part, ids, config)]
    return written


def prediction_columns(scored: Scored, event_ids: list[str], config: ServingConfig) -> list[PredictionColumns]:
    """Predictions to write back: the answering version's, then the other version's (tagged, with the same
    features), each as one columnar batch."""
    n = len(event_ids)
    ts, latency = np.full(n, time.time()), scored.latency_ms
    cost = config.cost_per_request + config.cost_per_ms * latency

    def columns(version: Scored, ids: list[str], segment: dict[str, list[str | None]] | None) -> PredictionColumns:
        scores = {c: version.probabilities[:, j] for j, c in enumerate(version.served.manifest.classes)}
        return PredictionColumns(version.served.manifest.model_id, version.served.version, ids, ts, dict(scored.frame),
                                 list(version.labels), scores, segment, latency, cost)  # fmt: skip

    answered = columns(scored, event_ids, {"deployment": [scored.deployment] * n} if scored.deployment else None)
    other = scored.other
    if other is None or not other.deployment:
        return [answered]
    tag = other.deployment
    segment: dict[str, list[str | None]] = {"deployment": [tag] * n, "answered_event_id": list(event_ids)}
    return [answered, columns(other, [shadow_event_id(event_id, tag) for event_id in event_ids], segment)]


def rows_request(body: Any) -> tuple[list[Any], Answer[bytes]]:
    """A v1 predict body's instances (BadRequestError, TooLargeError), and their answer."""
    instances = body.get("instances") if isinstance(body, dict) else None
    if not isinstance(instances, list) or not instances:
        raise BadRequestError("body must be an object with a non-empty 'instances' list")
    if len(instances) > MAX_INSTANCES:
        raise TooLargeError(f"at most {MAX_INSTANCES} instances per request, got {len(instances)}")
    return instances, http_answer


def columns_request(body: Any) -> tuple[Columns, Answer[bytes]]:
    """An inference request's instances as columns (BadRequestError, TooLargeError), and their answer."""
    request = decode_infer(body)
    return request.columns, partial(infer_answer, request)


def http_answer(scored: Scored, event_ids: list[str]) -> bytes:
    """The body answering a v1 predict request: a prediction object per instance."""
    model = scored.served
    return orjson.dumps({"model_id": model.manifest.model_id, "model_version": model.version,
                         "predictions": answers(scored, event_ids)})  # fmt: skip


def stream_answer(response: InferenceResponse, scored: Scored, event_ids: list[str]) -> InferenceResponse:
    """``response`` with a stream request's predictions (UnservableError if it would be too large to write)."""
    predictions = [ServedPrediction(**prediction) for prediction in answers(scored, event_ids)]
    answered = response.model_copy(update={"model_version": scored.served.version, "predictions": predictions})
    size = len(answered.to_json())
    if size > ENVELOPE_BYTES:
        raise UnservableError(f"the response would be {size} bytes, over the {ENVELOPE_BYTES}-byte message "
                              f"limit: send fewer instances per request")  # fmt: skip
    return answered


def answers(scored: Scored, event_ids: list[str]) -> list[dict[str, Any]]:
    """What a request is answered: per instance its event id, label and class probabilities."""
    scores = map(dict, map(zip, repeat(scored.served.manifest.classes), scored.probabilities.tolist()))
    rows = zip(event_ids, scored.labels, scores, strict=True)
    return [{"event_id": i, "label": label, "scores": s} for i, label, s in rows]


def given_event_ids(instances: Instances) -> list[Any]:
    """The event ids a request's instances bring (None, or whatever was sent, where they bring none).

    >>> given_event_ids([{"event_id": "mine"}, {}]), given_event_ids(Columns({}, 2))
    (['mine', None], [None, None])
    """
    if isinstance(instances, Columns):
        return instances.event_ids or [None] * len(instances)
    return [instance.get("event_id") for instance in instances]


def event_ids(given: list[Any]) -> list[Any]:
    """Each instance's event id: the one it brings, else a new random UUID.

    >>> ids = event_ids(["mine", None, ""])
    >>> ids[0], [uuid.UUID(i).version for i in ids[1:]], ids[1] != ids[2]
    ('mine', [4, 4], True)
    """
    ids = list(given)
    missing = [i for i, event_id in enumerate(ids) if not event_id]
    for i, event_id in zip(missing, random_uuids(len(missing)), strict=True):
        ids[i] = event_id
    return ids


def random_uuids(n: int) -> list[str]:
    """``n`` random (version 4) UUIDs as text, made together with numpy: a tenth of ``uuid.uuid4()``'s cost
    per id for a large request.

    >>> all(str(uuid.UUID(text)) == text and uuid.UUID(text).version == 4 for text in random_uuids(100))
    True
    """
    if n < SMALL_REQUEST:
        return [random_uuid() for _ in range(n)]
    octets = np.frombuffer(os.urandom(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    octets[:, 6] = octets[:, 6] & 0x0F | 0x40  # version 4
    octets[:, 8] = octets[:, 8] & 0x3F | 0x80  # RFC 4122 variant
    text = np.full((n, 36), ord("-"), dtype=np.uint8)
    text[:, _UUID_DIGITS] = np.frombuffer(octets.tobytes().hex().encode(), dtype=np.uint8).reshape(n, 32)
    ids: list[str] = text.view("S36").ravel().astype("U36").tolist()
    return ids


def random_uuid() -> str:
    """A random (version 4) UUID as text, as ``str(uuid.uuid4())`` (122 random bits) at a third of its cost.

    >>> texts = [random_uuid() for _ in range(200)]
    >>> all(str(uuid.UUID(text)) == text and uuid.UUID(text).version == 4 for text in texts), len(set(texts))
    (True, 200)
    """
    digits = os.urandom(16).hex()
    variant = "89ab"[int(digits[16], 16) & 3]  # RFC 4122
    return f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-{variant}{digits[17:20]}-{digits[20:]}"


def request_event_id(request_id: str, index: int) -> str:
    """The event id of instance ``index`` of a stream request that brings none: the same every time the
    request is answered (a request not yet committed when serving died is answered again on restart).

    >>> request_event_id("r-1", 0) == request_event_id("r-1", 0) != request_event_id("r-1", 1)
    True
    """
    return str(uuid.uuid5(REQUEST_NAMESPACE, f"{request_id}\x1f{index}"))


def shadow_event_id(event_id: str, deployment: str) -> str:
    """The event id of the other version's answer to the same instance: stable, and a valid ``event_id``.

    Producers' ids are any string (not only UUIDs), so the id is derived by name in a fixed namespace.

    >>> shadow_event_id("req-7f3a", "shadow") == shadow_event_id("req-7f3a", "shadow")
    True
    >>> shadow_event_id("req-7f3a", "shadow") != shadow_event_id("req-7f3b", "shadow")
    True
    >>> len(shadow_event_id("01JD9Y0ZQ8K3M2N4P5R6S7T8V9", "canary"))
    36
    """
    return str(uuid.uuid5(SHADOW_NAMESPACE, f"{event_id}\x1f{deployment}"))


class ServingApp:
    def __init__(self, settings: Settings, config: ServingConfig) -> None:
        self.settings = settings
        self.config = config
        self.models = ActiveModels(ModelRegistry(settings.registry_dir))
        self.broker = BrokerState("serving")
        self.writer = PredictionWriter(settings, self.broker, config.write_timeout_s)
        self.batcher = MicroBatcher(self.models, config, self.writer)
        self.supervisor = Supervisor()
        self.started = False
        self._metrics: dict[str, tuple[Histogram, Counter]] = {}

    def web_app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/models/{model_id}/predict", self.predict)
        app.router.add_post("/v2/models/{model_id}/infer", self.infer)
        app.router.add_get("/v2/models/{model_id}", self.model_metadata)
        app.router.add_get("/v2/models/{model_id}/ready", self.model_ready)
        app.router.add_get("/v2", self.server_metadata)
        app.router.add_get("/v2/health/live", self.healthz)
        app.router.add_get("/v2/health/ready", self.readyz)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, _: web.Application) -> None:
        self.models.load_champions()
        await self.writer.start()
        since_ts = time.time()
        self.supervisor.start("broker-probe", self._probe_broker)
        self.supervisor.start("model-follower", lambda started: self._follow_models(since_ts, started))
        if self.config.stream:
            self.supervisor.start("stream-consumer", self._consume_requests)
        self.started = True

    async def _cleanup(self, _: web.Application) -> None:
        for task in self.batcher.workers.values():
            task.cancel()
        await self.supervisor.stop(self.config.shutdown_timeout_s)
        await self.writer.stop(self.config.shutdown_timeout_s)

    async def _probe_broker(self, started: Callable[[], None]) -> None:
        started()
        await BrokerProbe(self.settings, self.broker).run()

    def _metric_label(self, model_id: str) -> str:
        """Only served models get their own metric series (URLs are caller-controlled)."""
        return model_id if self.models.get(model_id) is not None else "unknown"

    async def _consume_requests(self, started: Callable[[], None]) -> None:
        """Stream mode: answer inference requests from the requests topic on the responses topic.

        Every request is answered or refused (error response and dead letter) and committed past."""
        topics = self.settings.topics
        consumer = AIOKafkaConsumer(
            topics.inference_requests,
            **client_options(self.settings),
            group_id=f"{self.settings.topic_prefix}serving",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(self.settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(self.settings.heartbeat_interval_s * 1000),
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            max_partition_fetch_bytes=REQUEST_MESSAGE_BYTES,  # 10,000 instances of 20 features: ~3.4 MB
            fetch_max_bytes=4 * REQUEST_MESSAGE_BYTES,
        )
        try:
            await consumer.start()
            started()
            fetch = GuardedFetch(consumer, grouped=True)
            while True:
                records, undecodable = await fetch.getmany(timeout_ms=200, max_records=500)
                letters = [letter.to_json() for letter in undecodable]
                if letters:
                    await self.writer.publish(topics.dead_letters, None, letters)
                if records:  # concurrently, so that the micro-batcher can merge them; commit once all answered
                    await asyncio.gather(*(self._serve_record(record) for record in records))
                if records or letters:
                    await consumer.commit()
        finally:
            try:
                await asyncio.wait_for(consumer.stop(), self.config.shutdown_timeout_s)
            except TimeoutError:
                log.warning("the stream consumer did not stop within %.0f s", self.config.shutdown_timeout_s)

    async def _serve_record(self, record: Any) -> None:
        """Answer one request, or refuse it with an error response and a dead letter (raises only when
        the broker cannot take the answer: the request is then not committed and comes again)."""
        try:
            request = InferenceRequest.model_validate_json(record.value or b"")
        except ValidationError as exc:
            await self._refuse_record(record, f"invalid inference request: {describe(exc.errors())}")
            return
        response = InferenceResponse(request_id=request.request_id, model_id=request.model_id, ts=time.time())
        label = self._metric_label(request.model_id)
        try:
            response = await self._answer(request, response)
        except (BadRequestError, LookupError, UnservableError) as exc:
            REQUESTS.labels(label, "stream-error").inc()
            response = response.model_copy(update={"error": str(exc)})
            await self._refuse_record(record, f"inference request refused: {exc}")
        except WriteError:
            raise
        except Exception as exc:  # an internal failure: refused, never a dead consumer
            log.exception("stream request %s failed", request.request_id)
            REQUESTS.labels(label, "stream-error").inc()
            response = response.model_copy(update={"error": f"internal error: {type(exc).__name__}: {exc}"})
            await self._refuse_record(record, f"inference request failed: {type(exc).__name__}: {exc}")
        else:
            REQUESTS.labels(label, "stream").inc()
        responses = self.settings.topics.inference_responses
        await self.writer.publish(responses, request.request_id.encode(), [response.to_json()])

    async def _answer(self, request: InferenceRequest, response: InferenceResponse) -> InferenceResponse:
        if self.models.get(request.model_id) is None:
            raise LookupError(f"model {request.model_id!r} is not served")
        instances = [instance.model_dump(exclude_none=True) for instance in request.instances]
        for index, instance in enumerate(instances):  # a request answered again writes the same ids again
            instance.setdefault("event_id", request_event_id(request.request_id, index))
        return await self.batcher.submit(request.model_id, instances, partial(stream_answer, response))

    async def _refuse_record(self, record: Any, reason: str) -> None:
        letter = dead_letter(record, reason)
        await self.writer.publish(self.settings.topics.dead_letters, record.key, [letter.to_json()])

    async def _follow_models(self, since_ts: float, started: Callable[[], None]) -> None:
        """Hot-swap on every promoted model published from now on; one bad event affects only itself."""
        topic = self.settings.topics.models
        started()
        waits = {"fetch_max_wait_ms": max(self.settings.fetch_max_wait_ms, MODEL_FETCH_WAIT_MS)}
        async for record in read_topic(self.settings.model_copy(update=waits), topic, follow=True, since_ts=since_ts):
            try:
                event = ModelPublished.model_validate_json(record.value or b"")
            except ValueError:
                SWAPS.labels("unknown", "invalid-event").inc()
                log.warning("ignoring an invalid model-published event at offset %d", record.offset)
                continue
            if event.status in ("promoted", "canary", "shadow"):
                await self.swap(event)
            else:  # a rejected challenger: nothing to serve, but every event is accounted for
                SWAPS.labels(self._metric_label(event.model_id), "ignored").inc()

    async def swap(self, event: ModelPublished) -> None:
        """Activate the announced version if its manifest allows it and its sha256 matches the event."""
        loop = asyncio.get_running_loop()
        try:
            served = await loop.run_in_executor(None, self.models.load_announced, event)
        except Exception as exc:  # RegistryError, or anything unexpected: only this version is refused
            SWAPS.labels(self._metric_label(event.model_id), "refused").inc()
            log.error("refusing %s v%s, still serving %s: %s", event.model_id, event.model_version,
                      self.models.models().get(event.model_id), exc)  # fmt: skip
            return
        if event.status == "promoted":
            self.models.activate(served)
        else:
            self.models.set_challenger(Challenger(served, event.status, event.traffic_fraction or 0.0))
        SWAPS.labels(event.model_id, event.status).inc()

    def _authorized(self, request: web.Request) -> bool:
        if not self.config.token:
            return True
        # aiohttp decodes headers with surrogate escapes: a header that is not UTF-8 must not raise.
        header = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
        return hmac.compare_digest(header, f"Bearer {self.config.token}".encode())

    async def predict(self, request: web.Request) -> web.Response:
        """``POST /v1/models/{model_id}/predict``: rows in, a prediction object per row out."""
        return await self._serve(request, rows_request)

    async def infer(self, request: web.Request) -> web.Response:
        """``POST /v2/models/{model_id}/infer`` (the Open Inference Protocol): columns in, columns out."""
        return await self._serve(request, columns_request)

    async def _serve(self, request: web.Request, decode: Decoder) -> web.Response:
        """Answer a predict request whose parsed body ``decode`` turns into instances and their answer."""
        model_id = request.match_info["model_id"]
        if not self._authorized(request):
            return _error(401, "missing or wrong bearer token")
        label = self._metric_label(model_id)
        try:
            arrived = request.content.is_eof()  # (then reading cannot wait: no timer to set and cancel)
            async with contextlib.nullcontext() if arrived else asyncio.timeout(self.config.body_timeout_s):
                raw = await request.read()
        except TimeoutError:
            return _error(408, f"the request body did not arrive within {self.config.body_timeout_s:.0f} s", label)
        try:
            instances, answer = decode(orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            return _error(400, f"body is not valid JSON: {exc}", label)
        except TooLargeError as exc:
            return _error(413, str(exc), label)
        except BadRequestError as exc:
            return _error(400, str(exc), label)
        if self.models.get(model_id) is None:
            return _error(404, f"model {model_id!r} is not served (serving: {sorted(self.models.models())})")
        try:
            return await self._predict(model_id, instances, answer)
        except BadRequestError as exc:
            return _error(400, str(exc), label)
        except LookupError as exc:
            return _error(404, str(exc), label)
        except UnservableError as exc:
            return _error(422, f"refused: {exc}", label)
        except WriteError as exc:
            return _error(503, f"not answered: the prediction could not be written to the stream: {exc}", label)
        except Exception as exc:
            log.exception("predict for %s failed", model_id)
            return _error(500, f"internal error: {type(exc).__name__}: {exc}", label)

    async def _predict(self, model_id: str, instances: Instances, answer: Answer[bytes]) -> web.Response:
        started = time.perf_counter()
        body = await self.batcher.submit(model_id, instances, answer)  # answered once written
        latency, answered = self._answer_metrics(model_id)
        latency.observe(time.perf_counter() - started)
        answered.inc()
        return web.Response(body=body, content_type="application/json")

    def _answer_metrics(self, model_id: str) -> tuple[Histogram, Counter]:
        """The latency and answered-request series of a served model (looked up once: ``labels`` costs more
        than the update)."""
        if model_id not in self._metrics:
            self._metrics[model_id] = LATENCY.labels(model_id), REQUESTS.labels(model_id, "200")
        return self._metrics[model_id]

    async def model_metadata(self, request: web.Request) -> web.Response:
        """``GET /v2/models/{model_id}``: the inputs an inference request must carry, and the outputs."""
        model_id = request.match_info["model_id"]
        if not self._authorized(request):
            return _error(401, "missing or wrong bearer token")
        served = self.models.get(model_id)
        if served is None:
            return _error(404, f"model {model_id!r} is not served (serving: {sorted(self.models.models())})")
        metadata = model_metadata(served, self.models.challenger(model_id))
        return web.Response(body=orjson.dumps(metadata), content_type="application/json")

    async def model_ready(self, request: web.Request) -> web.Response:
        """``GET /v2/models/{model_id}/ready``: 200 while the model is served, else 404."""
        if not self._authorized(request):
            return _error(401, "missing or wrong bearer token")
        model_id = request.match_info["model_id"]
        if self.models.get(model_id) is None:
            return _error(404, f"model {model_id!r} is not served")
        return web.json_response({"name": model_id, "ready": True})

    async def server_metadata(self, _: web.Request) -> web.Response:
        """``GET /v2``: the server's name and version (no protocol extensions)."""
        return web.json_response(
            {"name": "driftwarden", "version": importlib.metadata.version("driftwarden"), "extensions": []}
        )

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, _: web.Request) -> web.Response:
        """200 only when models are served, every background component runs and the broker answers."""
        served = self.models.models()
        problems = self.supervisor.problems()
        if not self.broker.reachable:
            problems["kafka"] = f"writes cannot be acknowledged: the broker is {self.broker.describe()}"
        if not served:
            problems["models"] = "no model is served"
        if not self.started:
            problems["startup"] = "not started"
        status = 503 if problems else 200
        return web.json_response({"ready": status == 200, "models": served, "problems": problems}, status=status)

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def _error(status: int, message: str, label: str = "unknown") -> web.Response:
    REQUESTS.labels(label, str(status)).inc()
    return web.Response(status=status, body=orjson.dumps({"error": message}), content_type="application/json")


def run_server(settings: Settings, config: ServingConfig, host: str, port: int) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
    )
    app = ServingApp(settings, config)
    quiet_connection_errors(app.broker)
    web.run_app(app.web_app(), host=host, port=port, print=lambda *_: None, access_log=None,
                shutdown_timeout=config.shutdown_timeout_s, loop=uvloop.new_event_loop())  # fmt: skip
