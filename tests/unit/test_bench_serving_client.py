"""`bench serving`'s client keeps the answers of its timed run and checks every one of them afterwards: one wrong
answer among many fails the benchmark, whichever it is."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import orjson
import pytest

from driftwarden.bench.serving import MODEL_ID, _Answers, _load
from driftwarden.errors import DriftwardenError


def expected() -> _Answers:
    """What the client expects of every answer: label "1" with scores 0.2 / 0.8 from version 1."""
    answers = _Answers.__new__(_Answers)  # (without a served model: the expectations are set here)
    answers.protocol, answers.version, answers.classes = "v1", "1", ["0", "1"]
    answers.labels, answers.probabilities = ["1"], np.array([[0.2, 0.8]])
    return answers


def answer(label: str, scores: dict[str, float]) -> bytes:
    body = orjson.dumps({"model_id": MODEL_ID, "model_version": "1",
                         "predictions": [{"event_id": "e", "label": label, "scores": scores}]})  # fmt: skip
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


async def load_against(wrong_at: int | None) -> None:
    """20 timed requests (after a warm-up one per connection) to a loopback server whose ``wrong_at``-th answer
    (counted from 0, warm-up included) has the other label."""
    served = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            right = served != wrong_at
            served += 1
            writer.write(answer("1", {"0": 0.2, "1": 0.8}) if right else answer("0", {"0": 0.8, "1": 0.2}))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        await _load(port, [{"features": {"x": 1.0}}], 20, 2, expected(), os.getpid())
    assert served == 22


@pytest.mark.parametrize("wrong_at", [2, 12, 21])
def test_one_wrong_answer_of_the_timed_run_fails_the_benchmark(wrong_at):
    with pytest.raises(DriftwardenError, match="other labels"):
        asyncio.run(load_against(wrong_at))


def test_right_answers_pass():
    asyncio.run(load_against(None))
