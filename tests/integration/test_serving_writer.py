"""Serving's write-back against the real broker: one write per micro-batch (and micro-batches queued
behind a write in flight go out together: group commit), each request answered only once the write
carrying its predictions is acknowledged, a refused request never written, a failed write failing
every request it carried."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import orjson
import pytest
from helpers_integration import unique_model

from driftwarden.core.columnar import PredictionColumns
from driftwarden.core.decoding import PREDICTIONS
from driftwarden.kafka.broker import EmbeddedBroker
from driftwarden.kafka.object_store import free_low_port
from driftwarden.kafka.outages import BrokerState
from driftwarden.monitor.status import records_for
from driftwarden.registry.store import ModelRegistry
from driftwarden.serving.models import ActiveModels
from driftwarden.serving.server import MicroBatcher, ServingConfig, http_answer
from driftwarden.serving.writer import PredictionWriter, UnservableError, WriteBack, WriteError
from driftwarden.settings import Settings
from driftwarden.trainer.model import TrainerConfig
from driftwarden.trainer.workflow import bootstrap
from driftwarden_load.scenarios import Scenario, generate

pytestmark = pytest.mark.integration


def events(model_id: str, request: int, n: int) -> list[PredictionColumns]:
    """A request's predictions, as serving writes them: one columnar batch (one model version)."""
    ids = [f"r{request}-{i}" for i in range(n)]
    return [PredictionColumns(model_id, "1", ids, np.full(n, 1.0), {"x": np.arange(n, dtype=float)}, ["0"] * n,
                              {"0": np.ones(n)})]  # fmt: skip


def ids_on_topic(kafka: Settings, model_id: str) -> list[list[str]]:
    """The event ids of each prediction message of ``model_id`` (each a columnar batch), in topic order."""
    values = asyncio.run(records_for(kafka, kafka.topics.predictions, model_id))
    decoded = [PREDICTIONS.decode(value) for value in values]
    assert all(d.rejections == [] and d.events == [] and len(d.columns) == 1 for d in decoded)
    return [d.columns[0].event_ids for d in decoded]


def write_back(requests: list[list[PredictionColumns]]) -> WriteBack:
    """A micro-batch of ``requests`` as serving hands it to the writer: each batch with its request's number."""
    return [(batch, np.full(len(batch), index)) for index, batches in enumerate(requests) for batch in batches]


async def write_concurrently(
    kafka: Settings, model_id: str, micro_batches: list[list[list[PredictionColumns]]]
) -> list[object]:
    """Each request's outcome, the first micro-batch written at once, the others queued behind its write."""
    writer = PredictionWriter(kafka, BrokerState("test"))
    await writer.start()
    try:
        outcomes = writer.enqueue(model_id, write_back(micro_batches[0]), len(micro_batches[0]))
        await asyncio.sleep(0)  # the first micro-batch's write is under way: the rest queue behind it
        for requests in micro_batches[1:]:
            outcomes += writer.enqueue(model_id, write_back(requests), len(requests))
        return await asyncio.gather(*outcomes, return_exceptions=True)
    finally:
        await writer.stop(10)


def test_micro_batches_queued_during_a_write_go_out_together_in_order(kafka: Settings) -> None:
    model_id = unique_model("group-commit")
    requests = [events(model_id, r, 3) for r in range(40)]
    outcomes = asyncio.run(write_concurrently(kafka, model_id, [requests[:1], requests[1:14], requests[14:15],
                                                                requests[15:]]))  # fmt: skip
    assert outcomes == [None] * 40
    messages = ids_on_topic(kafka, model_id)
    assert [len(m) for m in messages] == [3, 117], "one write for the first micro-batch, one for the 3 behind it"
    assert [i for m in messages for i in m] == [i for r in requests for i in r[0].event_ids]


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("scores", float("nan"), "prediction 1: the monitor would reject it: scores.0: Input should be a valid number"),
        ("scores", 1.5, "prediction 1: the monitor would reject it: scores.0: Input should be a number greater"),
        ("ts", float("inf"), "prediction 1: the monitor would reject it: ts: Input should be a valid number"),
        ("event_id", "x" * 129, "prediction 1: the monitor would reject it: event_id: a string of 1-128 characters"),
    ],
)
def test_a_refused_request_is_never_written_and_the_others_are(kafka: Settings, column, value, reason) -> None:
    model_id = unique_model("group-refuse")
    requests = [events(model_id, r, 2) for r in range(5)]
    refused = requests[2][0]
    {"scores": refused.scores["0"], "ts": refused.ts, "event_id": refused.event_ids}[column][1] = value
    outcomes = asyncio.run(write_concurrently(kafka, model_id, [requests[:1], requests[1:4], requests[4:]]))
    assert [type(o) for o in outcomes] == [type(None), type(None), UnservableError, type(None), type(None)]
    assert str(outcomes[2]).startswith(reason)
    written = [i for m in ids_on_topic(kafka, model_id) for i in m]
    assert written == [i for r in (0, 1, 3, 4) for i in requests[r][0].event_ids]


def test_a_failed_write_fails_every_request_it_carried(tmp_path) -> None:
    """The broker stops between two micro-batches: every request of the second fails, none is answered."""
    settings = Settings(topic_prefix=f"dwwb-{uuid.uuid4().hex[:8]}.", state_dir=tmp_path)
    broker = EmbeddedBroker(tmp_path / "broker.log", port=free_low_port(), settings=settings)
    broker.start()

    async def run() -> tuple[list[object], list[object]]:
        writer = PredictionWriter(broker.settings, BrokerState("test"), timeout_s=3)
        await writer.start()
        try:
            first = [events("m", r, 2) for r in range(4)]
            written = await asyncio.gather(*writer.enqueue("m", write_back(first), 4), return_exceptions=True)
            broker.stop()
            second = [events("m", r, 2) for r in range(4, 9)]
            return written, await asyncio.gather(*writer.enqueue("m", write_back(second), 5), return_exceptions=True)
        finally:
            await writer.stop(5)

    try:
        written, failed = asyncio.run(run())
    finally:
        broker.stop()
    assert written == [None] * 4
    assert [type(o) for o in failed] == [WriteError] * 5
    assert all("was not acknowledged" in str(o) for o in failed)


def test_a_micro_batch_closes_once_requests_stop_arriving_and_at_most_max_wait_after_its_first(
    kafka: Settings, served
) -> None:
    """Three requests sent together are one micro-batch, closed once none has arrived for ``idle_s`` (not
    after ``max_wait_s``, a minute: the test would time out); a fourth sent later is one of its own.
    Requests that keep arriving are cut into micro-batches ``max_wait_s`` long."""
    model_id, models, rows = served

    async def run() -> None:
        writer = PredictionWriter(kafka, BrokerState("test"))
        await writer.start()
        try:

            def submit(batcher: MicroBatcher, row: dict[str, object]) -> asyncio.Task[bytes]:
                return asyncio.create_task(batcher.submit(model_id, [{"features": row["features"]}], http_answer))

            idle = MicroBatcher(models, ServingConfig(max_wait_s=60, idle_s=0.05), writer)
            together = [submit(idle, row) for row in rows[:3]]
            await asyncio.sleep(0.5)
            await asyncio.wait_for(asyncio.gather(*together, submit(idle, rows[3])), 30)
            steady = MicroBatcher(models, ServingConfig(max_wait_s=0.1, idle_s=60), writer)
            sent = []
            for i in range(20):  # one request every 0.02 s: never idle for 60 s
                sent.append(submit(steady, rows[i % len(rows)]))
                await asyncio.sleep(0.02)
            await asyncio.wait_for(asyncio.gather(*sent), 30)
        finally:
            await writer.stop(10)

    asyncio.run(run())
    sizes = [len(message) for message in ids_on_topic(kafka, model_id)]
    assert sizes[:2] == [3, 1], sizes
    assert sum(sizes[2:]) == 20 and len(sizes[2:]) >= 2 and sizes[2] >= 2, sizes


@pytest.fixture
def served(tmp_path) -> tuple[str, ActiveModels, list[dict[str, object]]]:
    """A model served from a registry of its own (id, active models) and 5 rows to send it."""
    model_id = unique_model("went-away")
    registry = ModelRegistry(tmp_path / "registry")
    bootstrap(registry, model_id, [e | {"model_id": model_id} for chunk in generate(Scenario(n_events=2_000))
                                   for e in chunk.training_examples()], TrainerConfig())  # fmt: skip
    models = ActiveModels(registry)
    models.load_champions()
    return model_id, models, next(generate(Scenario(n_events=5, seed=3), chunk_size=5)).prediction_events()


def test_a_request_that_goes_away_does_not_cancel_the_write_of_its_micro_batch(kafka: Settings, served) -> None:
    """One of 5 requests of a micro-batch is cancelled while the write carrying it awaits the broker: the
    write goes out whole, the other 4 are answered, and the event loop reports nothing (no future left
    unretrieved, no answer set on a cancelled request)."""
    model_id, models, rows = served

    async def run() -> tuple[list[object], list[dict[str, object]]]:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, object]] = []
        loop.set_exception_handler(lambda _, context: reported.append(context))
        writer = PredictionWriter(kafka, BrokerState("test"))
        await writer.start()
        try:
            batcher = MicroBatcher(models, ServingConfig(), writer)
            requests = [asyncio.create_task(batcher.submit(model_id, [{"features": row["features"]}], http_answer))
                        for row in rows]  # fmt: skip
            while model_id not in writer._writing:  # the micro-batch is scored, its write awaits the broker
                await asyncio.sleep(0.001)
            requests[2].cancel()
            outcomes = await asyncio.wait_for(asyncio.gather(*requests, return_exceptions=True), 30)
            del requests
            await asyncio.sleep(0.1)  # (the writer's outcome futures are collected)
            return outcomes, reported
        finally:
            await writer.stop(10)

    outcomes, reported = asyncio.run(run())
    assert [type(o) for o in outcomes] == [bytes, bytes, asyncio.CancelledError, bytes, bytes]
    answered = [p["event_id"] for o in outcomes if isinstance(o, bytes) for p in orjson.loads(o)["predictions"]]
    (written,) = ids_on_topic(kafka, model_id)
    assert len(written) == 5 and set(answered) < set(written), "one write, the cancelled request's row in it"
    assert reported == []


def test_a_refused_request_that_went_away_fails_none_of_the_others(kafka: Settings, served) -> None:
    """A request whose rows the model refuses is cancelled before its micro-batch is scored: the other 4 of
    the micro-batch are still answered (refusing a request that went away must not fail the rest)."""
    model_id, models, rows = served

    async def run() -> list[object]:
        writer = PredictionWriter(kafka, BrokerState("test"))
        await writer.start()
        try:
            config = ServingConfig(max_wait_s=0.5, idle_s=0.5)  # (one micro-batch of all 5)
            batcher = MicroBatcher(models, config, writer)
            sent = [[{"features": row["features"]}] for row in rows]
            sent[2] = [{"features": {}}]  # (refused: no feature the model needs)
            requests = [asyncio.create_task(batcher.submit(model_id, rows_, http_answer)) for rows_ in sent]
            await asyncio.sleep(0.05)  # (all 5 queued, the micro-batch still collecting)
            requests[2].cancel()
            return await asyncio.wait_for(asyncio.gather(*requests, return_exceptions=True), 30)
        finally:
            await writer.stop(10)

    outcomes = asyncio.run(run())
    assert [type(o) for o in outcomes] == [bytes, bytes, asyncio.CancelledError, bytes, bytes]
    (written,) = ids_on_topic(kafka, model_id)
    assert len(written) == 4
