"""Serving's write-back against the real broker: one write per micro-batch (group commit), each request
answered only once the write carrying its predictions is acknowledged, a refused request never queued."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from conftest import unique_model

from driftwarden.kafka.outages import BrokerState
from driftwarden.monitor.status import records_for
from driftwarden.serving.writer import PredictionWriter, UnservableError, WriteError
from driftwarden.settings import Settings

pytestmark = pytest.mark.integration


def events(model_id: str, request: int, n: int) -> list[dict[str, object]]:
    return [
        {"event_id": f"r{request}-{i}", "model_id": model_id, "model_version": "1", "ts": 1.0,
         "features": {"x": float(i)}, "prediction": "0", "scores": {"0": 1.0}}
        for i in range(n)
    ]  # fmt: skip


def ids_on_topic(kafka: Settings, model_id: str) -> list[list[str]]:
    """The event ids of each prediction message of ``model_id``, in topic order."""
    values = asyncio.run(records_for(kafka, kafka.topics.predictions, model_id))
    return [[event["event_id"] for event in orjson.loads(value)["events"]] for value in values]


async def write_concurrently(kafka: Settings, model_id: str, requests: list[list[dict[str, object]]]) -> list[object]:
    writer = PredictionWriter(kafka, BrokerState("test"))
    await writer.start()
    try:
        first = asyncio.ensure_future(writer.write(model_id, requests[0]))
        await asyncio.sleep(0)  # the first request's write is under way: the rest queue behind it
        rest = await asyncio.gather(*(writer.write(model_id, r) for r in requests[1:]), return_exceptions=True)
        return [await first, *rest]
    finally:
        await writer.stop(10)


def test_requests_queued_during_a_write_go_out_together_in_arrival_order(kafka: Settings) -> None:
    model_id = unique_model("group-commit")
    requests = [events(model_id, r, 3) for r in range(40)]
    outcomes = asyncio.run(write_concurrently(kafka, model_id, requests))
    assert outcomes == [None] * 40
    messages = ids_on_topic(kafka, model_id)
    assert [len(m) for m in messages] == [3, 117], "one write for the first request, one for the 39 queued behind it"
    assert [i for m in messages for i in m] == [e["event_id"] for r in requests for e in r]


def test_a_refused_request_is_never_queued_and_the_others_are_written(kafka: Settings) -> None:
    model_id = unique_model("group-refuse")
    requests = [events(model_id, r, 2) for r in range(5)]
    requests[2][1]["scores"] = {"0": float("nan")}
    outcomes = asyncio.run(write_concurrently(kafka, model_id, requests))
    assert [type(o) for o in outcomes] == [type(None), type(None), UnservableError, type(None), type(None)]
    written = [i for m in ids_on_topic(kafka, model_id) for i in m]
    assert written == [e["event_id"] for r in (0, 1, 3, 4) for e in requests[r]]


def test_a_failed_write_fails_every_request_it_carried(kafka: Settings) -> None:
    async def run() -> list[object]:
        state = BrokerState("test")
        writer = PredictionWriter(kafka, state)
        await writer.start()
        try:
            state.down("the broker is gone, as far as this writer knows")
            return await asyncio.gather(*(writer.write("m", events("m", r, 1)) for r in range(3)),
                                        return_exceptions=True)  # fmt: skip
        finally:
            await writer.stop(10)

    assert [type(o) for o in asyncio.run(run())] == [WriteError] * 3
