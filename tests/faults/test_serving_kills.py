"""kill -9 of a real serving process under HTTP and stream-mode load, then a restart (issue 14).

HTTP clients keep 4 requests in flight (their own event ids) while stream requests arrive on the
requests topic (some without event ids, some malformed or unservable); serving is killed at a seeded
moment once a seeded number of HTTP predictions was answered, plus a seeded pause, and restarted.
Afterwards, from the topics alone:

* every prediction answered with HTTP 200 is on the predictions topic exactly once (serving answers
  only once the write-back is acknowledged, and never writes an answered request again);
* every stream request produced is answered or dead-lettered, never both, never neither
  (produced = answered + dead-lettered); a request answered again after the restart (it was not yet
  committed) has the same prediction ids each time, and they are on the predictions topic: at least
  once, with the same id;
* the stream consumer committed every request, is running, and ``/readyz`` says ready.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import urllib.request
import uuid
from collections import Counter
from itertools import count
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import TopicPartition
from fault_brokers import committed_offsets, send_records
from service_trials import Service, read_events, trial_settings

from driftwarden.bench.invariants import accounting_problems, dead_letter_coordinates, wait_counts
from driftwarden.core.decoding import PREDICTIONS
from driftwarden.core.events import DeadLetter, InferenceResponse
from driftwarden.kafka.broker import free_port
from driftwarden.kafka.reader import read_topic, watermarks
from driftwarden.registry.store import ModelRegistry
from driftwarden.serving.readiness import wait_until_ready
from driftwarden.settings import Settings
from driftwarden.trainer.model import TrainerConfig
from driftwarden.trainer.workflow import bootstrap
from driftwarden_load.scenarios import Scenario, generate

pytestmark = pytest.mark.integration

SEED = 1405
MODEL = "served-under-fire"
STREAM_REQUESTS = 240


class HttpLoad:
    """Clients posting 10-instance requests with their own event ids to whatever ``url`` is now."""

    def __init__(self, url: str, rows: list[dict[str, Any]]) -> None:
        self.url, self.rows = url, rows
        self.answered: list[str] = []  # event ids of predictions answered with HTTP 200
        self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            await asyncio.gather(*(self._client(session, c) for c in range(4)))

    async def _client(self, session: aiohttp.ClientSession, client: int) -> None:
        for n in count(client * 10):
            if self.stop.is_set():
                return
            ids = [str(uuid.uuid4()) for _ in range(10)]
            rows = [self.rows[(n * 10 + i) % len(self.rows)] for i in range(10)]
            body = orjson.dumps({"instances": [{"features": f, "event_id": e} for f, e in zip(rows, ids, strict=True)]})
            try:
                async with session.post(f"{self.url}/v1/models/{MODEL}/predict", data=body) as response:
                    if response.status == 200:
                        answer = await response.json()
                        assert [p["event_id"] for p in answer["predictions"]] == ids
                        self.answered += ids
                        continue
            except (aiohttp.ClientError, TimeoutError):
                pass
            self.failed += 1
            await asyncio.sleep(0.05)


def stream_requests(rows: list[dict[str, Any]]) -> list[tuple[str | None, bytes]]:
    """(request id, value): mostly servable requests (every 4th without event ids), every 9th missing a
    feature (refused), every 10th not JSON (dead-lettered); the last repeats one without event ids."""
    made: list[tuple[str | None, bytes]] = []
    for n in range(STREAM_REQUESTS):
        if n % 10 == 9:
            made.append((None, b'{"request_id": "broken'))
            continue
        request_id = f"req-{n}-{uuid.uuid4().hex[:8]}"
        instances: list[dict[str, Any]] = [{"features": rows[(n * 5 + i) % len(rows)]} for i in range(5)]
        if n % 9 == 8:
            instances[0] = {"features": {"num_00": 1.0}}
        if n % 4:
            instances = [i | {"event_id": str(uuid.uuid4())} for i in instances]
        made.append((request_id, orjson.dumps({"request_id": request_id, "model_id": MODEL, "instances": instances})))
    return [*made, made[4]]  # sent again as a retrying producer would: answered again, as after a replay


class StreamLoad:
    """Stream requests produced 10 at a time every 0.15 s onto the requests topic; where each landed."""

    def __init__(self, settings: Settings, requests: list[tuple[str | None, bytes]]) -> None:
        self.settings, self.requests = settings, requests
        self.placed: list[tuple[int, int]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for start in range(0, len(self.requests), 10):
            batch = [(MODEL.encode(), value) for _, value in self.requests[start : start + 10]]
            self.placed += send_records(self.settings, self.settings.topics.inference_requests, batch)
            time.sleep(0.15)


def predictions_on_topic(settings: Settings) -> Counter[str]:
    async def read() -> Counter[str]:
        ids: Counter[str] = Counter()
        async for record in read_topic(settings, settings.topics.predictions):
            decoded = PREDICTIONS.decode(record.value or b"")
            ids.update([*(e.event_id for e in decoded.events), *(i for c in decoded.columns for i in c.event_ids)])
        return ids

    return asyncio.run(read())


def stream_outcomes(settings: Settings) -> tuple[dict[str, list[InferenceResponse]], set[tuple[int, int]]]:
    """Responses by request id, and the (partition, offset) of every dead-lettered request."""
    responses: dict[str, list[InferenceResponse]] = {}
    for response in read_events(settings, settings.topics.inference_responses, InferenceResponse):
        responses.setdefault(response.request_id, []).append(response)
    letters = read_events(settings, settings.topics.dead_letters, DeadLetter)
    topic = settings.topics.inference_requests
    return responses, {(p, o) for t, p, o, _ in dead_letter_coordinates(letters) if t == topic}


def lag(settings: Settings) -> dict[str, int]:
    """{"committed": 1} once the stream consumer's group committed every request on the topic."""
    topic = settings.topics.inference_requests
    marks = asyncio.run(watermarks(settings, [(topic, p) for p in range(settings.partitions)]))
    committed = committed_offsets(settings, f"{settings.topic_prefix}serving",
                                  [TopicPartition(topic, p) for p in range(settings.partitions)])  # fmt: skip
    return {"committed": int(all((committed[TopicPartition(topic, p)] or 0) == high
                                 for (_, p), (_, high) in marks.items()))}  # fmt: skip


def test_serving_killed_under_load_answers_every_request_once_and_loses_no_stream_request(service_broker, tmp_path):
    settings = trial_settings(service_broker, tmp_path, "serving-kills")
    examples = [e | {"model_id": MODEL} for chunk in generate(Scenario(n_events=3_000, seed=5))
                for e in chunk.training_examples()]  # fmt: skip
    assert bootstrap(ModelRegistry(settings.registry_dir), MODEL, examples, TrainerConfig()).status == "promoted"
    rows = [e["features"] for e in examples[:500]]
    rng = random.Random(SEED)

    port = free_port()
    serving = Service(["serve", "--port", str(port)], settings, tmp_path, "serving")
    http = HttpLoad(f"http://127.0.0.1:{port}", rows)
    requests = stream_requests(rows)
    stream = StreamLoad(settings, requests)
    try:
        asyncio.run(wait_until_ready(http.url, timeout_s=60, process=serving.process))
        http.thread.start()
        stream.thread.start()
        kill_after = (rng.randrange(200, 1_000), rng.randrange(40, 120))  # HTTP predictions, stream requests sent
        while len(http.answered) < kill_after[0] or len(stream.placed) < kill_after[1]:
            assert serving.alive() and http.thread.is_alive(), serving.log.read_text()[-3000:]
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.3))
        serving.kill()
        answered_before_kill = len(http.answered)
        port = free_port()
        serving.restart(["serve", "--port", str(port)])
        http.url = f"http://127.0.0.1:{port}"
        asyncio.run(wait_until_ready(http.url, timeout_s=60, process=serving.process))
        while len(http.answered) < answered_before_kill + 200:  # answering again after the restart
            assert serving.alive(), serving.log.read_text()[-3000:]
            time.sleep(0.05)
        http.stop.set()
        http.thread.join(30)
        stream.thread.join(60)

        by_place = dict(zip(stream.placed, (request_id for request_id, _ in requests), strict=True))

        def accounted() -> dict[str, int]:
            responses, dead = stream_outcomes(settings)
            ok = {r for r, answers in responses.items() if any(a.error is None for a in answers)}
            repeated = [a for a in responses.get(str(requests[-1][0]), []) if a.error is None]
            return {"requests": sum(1 for p, r in by_place.items() if r in ok or p in dead), "repeated": len(repeated)}

        wait_counts(accounted, {"requests": len(requests), "repeated": 2}, stall_s=60)
        wait_counts(lambda: lag(settings), {"committed": 1}, stall_s=30)
        responses, dead = stream_outcomes(settings)
        with urllib.request.urlopen(f"{http.url}/readyz", timeout=5) as response:
            ready = orjson.loads(response.read())
        assert ready["ready"] and ready["problems"] == {}, ready
        assert serving.alive()
    finally:
        http.stop.set()
        serving.stop()

    print(f"HTTP: {len(http.answered):,} predictions answered ({answered_before_kill:,} before the kill), "
          f"{http.failed} requests failed; stream: {sum(len(v) for v in responses.values())} responses to "
          f"{len(requests)} requests")  # fmt: skip
    written = predictions_on_topic(settings)
    assert not [e for e in http.answered if written[e] != 1], "an answered HTTP prediction is not on the topic once"

    answered = {r for r, answers in responses.items() if any(a.error is None for a in answers)}
    assert accounting_problems("stream requests", len(requests), len({p for p, r in by_place.items() if r in answered}),
                               len(dead)) == []  # fmt: skip
    assert not {p for p, r in by_place.items() if r in answered} & dead, "a request both answered and dead-lettered"
    assert len(responses[str(requests[-1][0])]) == 2  # the repeated request, answered twice
    for request_id in answered:
        ids = {tuple(p.event_id for p in a.predictions) for a in responses[request_id] if a.error is None}
        assert len(ids) == 1, f"{request_id} answered again under other ids: {ids}"
        assert all(written[e] >= 1 for e in next(iter(ids))), f"{request_id}: a prediction not written back"
