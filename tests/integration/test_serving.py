"""ONNX serving on real processes: scoring, write-back to the stream, errors, hot swap, rollback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
from helpers_integration import unique_model

from driftwarden.core.columnar import PredictionColumns
from driftwarden.core.decoding import PREDICTIONS
from driftwarden.core.events import ModelPublished, PredictionEvent, RetrainCommand, TrainingWindow
from driftwarden.core.training_join import TrainingJoin
from driftwarden.kafka.broker import free_port
from driftwarden.kafka.reader import read_topic
from driftwarden.monitor.status import records_for, wait_for_status
from driftwarden.processes import spawn, terminate
from driftwarden.registry.store import ModelRegistry
from driftwarden.serving.open_inference import infer_body
from driftwarden.serving.readiness import wait_until_ready
from driftwarden.settings import Settings
from driftwarden.trainer.model import TrainerConfig
from driftwarden.trainer.workflow import retrain, verdict
from driftwarden_load.scenarios import Scenario, generate

pytestmark = pytest.mark.integration
TOKEN = "s3cret-token"


@dataclass
class Serving:
    url: str
    registry: ModelRegistry
    model_id: str
    settings: Settings
    log: Path


def train_version(registry: ModelRegistry, model_id: str, name: str, seed: int) -> RetrainCommand:
    """Register a new version trained on a scenario's data; promoted unless it is no better."""
    data = [e | {"model_id": model_id} for chunk in generate(Scenario(name=name, n_events=3_000, onset=0, seed=seed))
            for e in chunk.training_examples()]  # fmt: skip
    command = RetrainCommand(
        command_id=str(uuid.uuid4()), idempotency_key=f"{model_id}:{seed}", model_id=model_id, model_version="1",
        ts=0, reasons=["0123456789abcdef"], window=TrainingWindow(start_ts=0, end_ts=1),
    )  # fmt: skip
    published = retrain(command, data, registry, TrainerConfig())
    assert published.status == "promoted", published.reason
    return command


@pytest.fixture(scope="module")
def serving(kafka: Settings, tmp_path_factory) -> Serving:
    directory = tmp_path_factory.mktemp("serving")
    registry = ModelRegistry(directory / "registry")
    model_id = unique_model("served")
    train_version(registry, model_id, "stable", seed=1)
    port = free_port()
    settings = kafka.model_copy(update={"registry_dir": registry.root, "state_dir": directory})
    process = spawn(["serve", "--port", str(port), "--token", TOKEN], settings, directory / "serving.log")
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(wait_until_ready(url, timeout_s=60, process=process))
    except Exception:
        terminate(process)
        raise RuntimeError((directory / "serving.log").read_text()) from None
    yield Serving(url, registry, model_id, settings, directory / "serving.log")
    terminate(process)


def instances(n: int, seed: int = 0) -> list[dict]:
    events = next(generate(Scenario(n_events=n, seed=seed), chunk_size=n)).prediction_events()
    return [{"features": e["features"]} for e in events]


PATHS = {"v1": "/v1/models/{}/predict", "v2": "/v2/models/{}/infer"}  # rows, and the Open Inference Protocol


def post(
    serving: Serving, body: object, token: str | None = TOKEN, model_id: str | None = None, timeout: float = 10,
    api: str = "v1",
) -> tuple[int, dict]:  # fmt: skip
    request = urllib.request.Request(
        serving.url + PATHS[api].format(model_id or serving.model_id), data=orjson.dumps(body), method="POST",
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def publish(kafka: Settings, event: ModelPublished) -> None:
    from aiokafka import AIOKafkaProducer

    from driftwarden.kafka.clients import client_options

    async def send() -> None:
        producer = AIOKafkaProducer(**client_options(kafka))
        await producer.start()
        try:
            await producer.send_and_wait(kafka.topics.models, event.to_json(), key=event.model_id.encode())
        finally:
            await producer.stop()

    asyncio.run(send())


def test_predictions_are_scored_and_written_back_to_the_stream(kafka, monitor_worker, serving):
    status, body = post(serving, {"instances": instances(300)})
    assert status == 200 and body["model_version"] == "1"
    assert len(body["predictions"]) == 300
    first = body["predictions"][0]
    assert first["label"] in {"0", "1"} and abs(sum(first["scores"].values()) - 1) < 1e-5
    written = written_events(kafka, serving.model_id)
    assert {e.event_id for e in written} >= {p["event_id"] for p in body["predictions"]}
    assert all(e.model_version == "1" and e.latency_ms is not None and e.cost is not None for e in written)
    status = asyncio.run(wait_for_status(kafka, serving.model_id, lambda s: s.events_processed >= 300, 60))
    assert status.model_version == "1"  # the monitor sees serving's predictions without any glue


def micro_batches(serving: Serving) -> float:
    """How many micro-batches serving has scored, from its /metrics."""
    with urllib.request.urlopen(f"{serving.url}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return next(float(line.split()[-1]) for line in lines if line.startswith("driftwarden_serving_batch_rows_count"))


def test_concurrent_requests_are_written_back_once_per_micro_batch_each_request_whole(kafka, serving):
    before = micro_batches(serving)
    bodies = [orjson.dumps({"instances": instances(2, seed=seed)}) for seed in range(160)]

    async def send() -> list[list[str]]:
        url = f"{serving.url}/v1/models/{serving.model_id}/predict"
        queue = list(bodies)
        answered: list[list[str]] = []
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:

            async def client() -> None:
                while queue:
                    async with session.post(url, data=queue.pop()) as response:
                        assert response.status == 200
                        answered.append([p["event_id"] for p in (await response.json())["predictions"]])

            await asyncio.gather(*(client() for _ in range(16)))
        return answered

    answered = asyncio.run(send())
    batches = micro_batches(serving) - before
    ours = {event_id for ids in answered for event_id in ids}
    messages = [ids for m in written_messages(kafka, serving.model_id) if (ids := set(m.event_ids) & ours)]
    assert sorted(i for m in messages for i in m) == sorted(ours)  # every answered prediction, once
    assert all(any(set(ids) <= m for m in messages) for ids in answered)  # a request's rows in one message
    assert len(messages) <= batches < len(answered), (len(messages), batches)  # a write per micro-batch at most


def test_the_monitor_takes_the_columnar_write_back_as_it_took_a_prediction_event_per_row(serving):
    """Serving used to write one prediction.v1 event per row (the request's features, the answer); it now
    writes a columnar batch per micro-batch. The rows are those events, and the monitor core counts,
    deduplicates and joins them (labels for the event ids answered to clients) exactly as those events, and
    the trainer joins the same examples from them."""
    from driftwarden.core.events import LabelEvent
    from driftwarden.core.monitor import Monitor
    from driftwarden.serving.models import ActiveModels

    rows = instances(120, seed=9)
    sizes = [1, 1, 2, 3, 5, 8, 13, 21, 34, 32]  # concurrent requests: a write carries several of them

    async def send() -> list[dict]:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:

            async def predict(chunk: list[dict]) -> dict:
                url = f"{serving.url}/v1/models/{serving.model_id}/predict"
                async with session.post(url, data=orjson.dumps({"instances": chunk})) as response:
                    assert response.status == 200
                    return orjson.loads(await response.read())

            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            return await asyncio.gather(*(predict(rows[s : s + n]) for s, n in zip(starts, sizes, strict=True)))

    bodies = asyncio.run(send())
    answered = [(body, p) for body in bodies for p in body["predictions"]]
    instance = {p["event_id"]: row for (_, p), row in zip(answered, rows, strict=True)}
    messages = [m for m in written_messages(serving.settings, serving.model_id) if m.event_ids[0] in instance]
    assert len(messages) < len(sizes) and all(set(m.event_ids) <= instance.keys() for m in messages)
    version = bodies[0]["model_version"]
    onnx = ActiveModels(serving.registry).load(serving.model_id, version).onnx

    def as_before(message: PredictionColumns) -> list[PredictionEvent]:
        """The message's rows as serving wrote them before: from the request and the answer."""
        events = []
        for row in message.rows():
            body, answer = answers[row["event_id"]]
            features = instance[row["event_id"]]["features"]
            events.append(PredictionEvent.model_validate({
                "event_id": answer["event_id"], "model_id": serving.model_id, "model_version": body["model_version"],
                "ts": row["ts"], "features": {n: features[n] for n in onnx.numeric + onnx.categorical},
                "prediction": answer["label"], "scores": answer["scores"], "latency_ms": row["latency_ms"],
                "cost": row["cost"],
            }))  # fmt: skip
        return events

    answers = {p["event_id"]: (body, p) for body, p in answered}
    before = [as_before(m) for m in messages]
    assert [e for m in messages for e in m.events()] == [e for events in before for e in events]
    assert sorted(e.event_id for events in before for e in events) == sorted(instance)

    now = time.time()
    labels = [LabelEvent(event_id=p["event_id"], model_id=serving.model_id, ts=now, label=str(i % 2))
              for i, (_, p) in enumerate(answered)]  # fmt: skip
    columnar, per_row = Monitor(), Monitor()
    for monitor, inputs in ((columnar, [[m] for m in messages]), (per_row, before)):
        for _ in range(2):  # the second time every row is a duplicate
            for batch in inputs:
                accepted, refused = monitor.screen(batch, now)
                assert refused == []
                monitor.observe(accepted, now)
        monitor.observe_labels(labels, now)
    status = columnar.status(serving.model_id, now)
    assert status == per_row.status(serving.model_id, now)
    # The trainer joins the same examples from the write-back's columnar messages as from the events.
    joins = [TrainingJoin(serving.model_id, 0.0, 2e9) for _ in range(2)]
    for message in messages:
        assert joins[0].add_predictions(message.to_json()) == []
    for event in (e for events in before for e in events):
        assert joins[1].add_predictions(event.to_json()) == []
    for join in joins:
        for label in labels:
            join.add_labels(label.to_json())
    examples = [sorted(join.examples(), key=lambda e: e["event_id"]) for join in joins]
    assert len(examples[0]) == 120 and examples[0] == examples[1]
    assert status.events_processed == 120 and status.label_joins["duplicate_predictions"] == 120
    assert status.label_joins["joined"] == 120 and status.label_joins["pending_predictions"] == 0


@pytest.mark.parametrize(
    ("body", "token", "code", "message"),
    [
        ({"instances": instances(2)}, None, 401, "bearer token"),
        ({"instances": instances(2)}, "wrong", 401, "bearer token"),
        ({"instances": []}, TOKEN, 400, "non-empty 'instances' list"),
        ({"rows": []}, TOKEN, 400, "non-empty 'instances' list"),
        ({"instances": [{"features": {"num_00": 1.0}}]}, TOKEN, 400, "instances[0].features.num_01: missing"),
        ({"instances": [instances(1)[0], {"features": {**instances(1)[0]["features"], "num_03": "high"}}]}, TOKEN,
         400, "instances[1].features.num_03: expected a number, got 'high'"),
        ({"instances": [{"features": {**instances(1)[0]["features"], "cat_00": [1]}}]}, TOKEN, 400,
         "instances[0].features.cat_00: expected a category"),
        ({"instances": ["x"]}, TOKEN, 400, "instances[0]: expected an object"),
    ],
)  # fmt: skip
def test_bad_requests_get_a_precise_4xx(serving, body, token, code, message):
    status, response = post(serving, body, token=token)
    assert status == code and message in response["error"]


def test_unknown_model_is_404(serving):
    status, response = post(serving, {"instances": instances(1)}, model_id="nobody")
    assert status == 404 and "'nobody' is not served" in response["error"]


def test_hot_swap_under_load_never_fails_a_request_and_refuses_a_corrupt_model(kafka, serving):
    command = train_version(serving.registry, serving.model_id, "concept-drift", seed=2)  # v2, champion on disk
    v2 = verdict(serving.registry.champion(serving.model_id), command, serving.registry)
    assert v2.model_version == "2"
    statuses, versions = [], []

    async def load(stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
            body = orjson.dumps({"instances": instances(8)})

            async def client() -> None:
                while not stop.is_set():
                    url = f"{serving.url}/v1/models/{serving.model_id}/predict"
                    async with session.post(url, data=body) as response:
                        statuses.append(response.status)
                        versions.append((await response.json())["model_version"])

            await asyncio.gather(*(client() for _ in range(8)))

    async def scenario() -> None:
        stop = asyncio.Event()
        clients = asyncio.create_task(load(stop))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(publish, kafka, v2)
        for _ in range(100):
            await asyncio.sleep(0.2)
            if versions and versions[-1] == "2":
                break
        await asyncio.sleep(0.5)
        stop.set()
        await clients

    asyncio.run(scenario())
    assert statuses and set(statuses) == {200}
    assert versions[0] == "1" and versions[-1] == "2" and set(versions) == {"1", "2"}

    # A promoted v3 whose file is corrupt is refused; v2 keeps serving.
    command3 = train_version(serving.registry, serving.model_id, "stable", seed=3)
    model_file = serving.registry.root / serving.model_id / "3" / "model.onnx"
    model_file.write_bytes(b"not a model")
    publish(kafka, verdict(serving.registry.manifest(serving.model_id, "3"), command3, serving.registry))
    # A rejected challenger is announced but never served.
    rejected = verdict(serving.registry.manifest(serving.model_id, "3"), command3, serving.registry)
    publish(kafka, rejected.model_copy(update={"status": "rejected", "reason": "worse than the champion"}))
    time.sleep(3)
    assert post(serving, {"instances": instances(2)})[1]["model_version"] == "2"
    assert "refusing" in serving.log.read_text()


def test_rollback_restores_the_previous_version_everywhere(serving):
    serving.registry.set_champion(serving.model_id, "2")
    env = {**serving.settings.to_env(), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "driftwarden", "rollback", "--model-id", serving.model_id, "--to", "1"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "champion is v1 again (was v2)" in result.stdout
    deadline = time.monotonic() + 30
    while post(serving, {"instances": instances(1)})[1]["model_version"] != "1":
        assert time.monotonic() < deadline, "serving did not roll back"
        time.sleep(0.3)


def test_stream_mode_answers_requests_from_the_topic(kafka, serving):
    from aiokafka import AIOKafkaProducer

    from driftwarden.core.events import DeadLetter, InferenceResponse
    from driftwarden.kafka.clients import client_options

    good = {"request_id": f"good-{uuid.uuid4().hex}", "model_id": serving.model_id, "instances": instances(5)}
    event_id = str(uuid.uuid4())
    good["instances"][0]["event_id"] = event_id  # callers may bring their own ids
    bad = {"request_id": f"bad-{uuid.uuid4().hex}", "model_id": serving.model_id,
           "instances": [{"features": {"num_00": 1.0}}]}  # fmt: skip

    async def send() -> None:
        producer = AIOKafkaProducer(**client_options(kafka))
        await producer.start()
        try:
            for value in (orjson.dumps(good), orjson.dumps(bad), b"{not json"):
                await producer.send(kafka.topics.inference_requests, value, key=serving.model_id.encode())
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())

    async def responses() -> dict[str, InferenceResponse]:
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            found = {}
            for request_id in (good["request_id"], bad["request_id"]):
                values = await records_for(kafka, kafka.topics.inference_responses, request_id)
                if values:
                    found[request_id] = InferenceResponse.model_validate_json(values[0])
            if len(found) == 2 or asyncio.get_running_loop().time() > deadline:
                return found
            await asyncio.sleep(0.5)

    answers = asyncio.run(responses())
    answer = answers[good["request_id"]]
    assert answer.error is None and answer.model_version is not None and len(answer.predictions) == 5
    assert answer.predictions[0].event_id == event_id
    assert "instances[0].features.num_01: missing" in answers[bad["request_id"]].error
    letters = [DeadLetter.model_validate_json(v)
               for v in asyncio.run(records_for(kafka, kafka.topics.dead_letters, serving.model_id))]  # fmt: skip
    assert any(letter.reason.startswith("invalid inference request") for letter in letters)


def test_shadow_then_canary_then_promotion(kafka, serving):
    from driftwarden.trainer.model import TrainerConfig as Config

    data = [e | {"model_id": serving.model_id}
            for chunk in generate(Scenario(name="concept-drift", n_events=3_000, onset=0, seed=21))
            for e in chunk.training_examples()]  # fmt: skip
    command = RetrainCommand(
        command_id=str(uuid.uuid4()), idempotency_key=f"{serving.model_id}:staged", model_id=serving.model_id,
        model_version="1", ts=0, reasons=["0123456789abcdef"], window=TrainingWindow(start_ts=0, end_ts=1),
    )  # fmt: skip
    shadow = retrain(command, data, serving.registry, Config(rollout="shadow"))
    champion = serving.registry.champion(serving.model_id).version
    assert shadow.status == "shadow" and shadow.model_version != champion
    publish(kafka, shadow)

    def written_for(event_ids: set[str]) -> list:
        def answering(event: PredictionEvent) -> bool:
            return event.event_id in event_ids or (event.segment or {}).get("answered_event_id") in event_ids

        return list(filter(answering, written_events(kafka, serving.model_id)))

    def wait_for(predicate, what: str):
        deadline = time.monotonic() + 30
        while True:
            status, body = post(serving, {"instances": instances(4)})
            assert status == 200
            if predicate(body):
                return body
            assert time.monotonic() < deadline, what
            time.sleep(0.3)

    # Shadow: the champion answers; the challenger's predictions for the same rows are published, tagged.
    body = wait_for(lambda b: written_for({p["event_id"] for p in b["predictions"]}).__len__() == 8, "no shadow")
    assert body["model_version"] == champion
    versions = {
        (e.model_version, e.segment["deployment"]) for e in written_for({p["event_id"] for p in body["predictions"]})
    }
    assert versions == {(champion, "primary"), (shadow.model_version, "shadow")}

    # Canary answering every request: the challenger answers, the champion's predictions are the baseline.
    publish(kafka, shadow.model_copy(update={"status": "canary", "traffic_fraction": 1.0}))
    body = wait_for(lambda b: b["model_version"] == shadow.model_version, "no canary")
    versions = {
        (e.model_version, e.segment["deployment"]) for e in written_for({p["event_id"] for p in body["predictions"]})
    }
    assert versions == {(shadow.model_version, "canary"), (champion, "baseline")}
    status, answer = post(serving, infer_body(instances(3)), api="v2")  # the Open Inference Protocol: the same
    ids = next(output["data"] for output in answer["outputs"] if output["name"] == "event_id")
    assert status == 200 and answer["model_version"] == shadow.model_version
    written = written_for(set(ids))
    assert {(e.model_version, e.segment["deployment"]) for e in written} == versions and len(written) == 6

    # Promotion ends the rollout: one version, no tags.
    env = {**serving.settings.to_env(), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "driftwarden", "promote", "--model-id", serving.model_id, "--version",
         shadow.model_version], env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body = wait_for(lambda b: len(written_for({p["event_id"] for p in b["predictions"]})) == 4, "still staged")
    assert body["model_version"] == shadow.model_version
    assert all(e.segment is None for e in written_for({p["event_id"] for p in body["predictions"]}))


def send_requests(kafka: Settings, key: str, values: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    from driftwarden.kafka.clients import client_options

    async def send() -> None:
        producer = AIOKafkaProducer(**client_options(kafka), max_request_size=8 * 1024 * 1024)
        await producer.start()
        try:
            for value in values:
                await producer.send(kafka.topics.inference_requests, value, key=key.encode())
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())


def wait_for_responses(kafka: Settings, request_ids: list[str], timeout_s: float = 90) -> dict:
    from driftwarden.core.events import InferenceResponse

    async def poll() -> dict:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            found = {}
            for record in [r async for r in read_topic(kafka, kafka.topics.inference_responses)]:
                if record.key is not None and record.key.decode() in request_ids:
                    found[record.key.decode()] = InferenceResponse.model_validate_json(record.value)
            if len(found) == len(request_ids) or asyncio.get_running_loop().time() > deadline:
                return found
            await asyncio.sleep(0.5)

    return asyncio.run(poll())


def written_messages(kafka: Settings, model_id: str) -> list[PredictionColumns]:
    """Serving's write-back messages for ``model_id``: each a columnar batch the monitor takes whole."""
    decoded = [PREDICTIONS.decode(v) for v in asyncio.run(records_for(kafka, kafka.topics.predictions, model_id))]
    assert all(d.rejections == [] and d.events == [] and len(d.columns) == 1 for d in decoded)
    return [d.columns[0] for d in decoded]


def written_events(kafka: Settings, model_id: str) -> list[PredictionEvent]:
    return [event for batch in written_messages(kafka, model_id) for event in batch.events()]


def test_stream_mode_survives_a_huge_request_and_float32_overflow_and_commits_past_them(kafka, serving):
    from driftwarden.core.events import DeadLetter

    big = {"request_id": f"big-{uuid.uuid4().hex}", "model_id": serving.model_id, "instances": instances(5_000)}
    overflow = instances(3)
    overflow[1]["features"]["num_02"] = 1e39
    nan = {"request_id": f"nan-{uuid.uuid4().hex}", "model_id": serving.model_id, "instances": overflow}
    stranger = {"request_id": f"who-{uuid.uuid4().hex}", "model_id": f"nobody-{uuid.uuid4().hex[:6]}",
                "instances": instances(1)}  # fmt: skip
    huge = {"request_id": f"huge-{uuid.uuid4().hex}", "model_id": serving.model_id, "instances": instances(10_000)}
    after = {"request_id": f"after-{uuid.uuid4().hex}", "model_id": serving.model_id, "instances": instances(2)}
    requests = (big, nan, stranger, huge, after)
    send_requests(kafka, serving.model_id, [orjson.dumps(r) for r in requests])

    answers = wait_for_responses(kafka, [r["request_id"] for r in requests])
    assert answers[big["request_id"]].error is None and len(answers[big["request_id"]].predictions) == 5_000
    assert "over the 983040-byte message limit: send fewer instances" in answers[huge["request_id"]].error
    assert "instances[1].features.num_02: 1e+39 is outside the float32 range" in answers[nan["request_id"]].error
    assert "is not served" in answers[stranger["request_id"]].error
    assert answers[after["request_id"]].error is None  # the consumer lives on after both
    ids = {p.event_id for p in answers[big["request_id"]].predictions}
    assert len(ids & {e.event_id for e in written_events(kafka, serving.model_id)}) == 5_000  # split write-back
    letters = [DeadLetter.model_validate_json(v)
               for v in asyncio.run(records_for(kafka, kafka.topics.dead_letters, serving.model_id))]  # fmt: skip
    assert any("outside the float32 range" in letter.reason for letter in letters)
    assert any("is not served" in letter.reason for letter in letters)
    assert any("over the 983040-byte message limit" in letter.reason and "payload truncated" in letter.reason
               for letter in letters)  # the 3.4 MB request, kept in part with its digest  # fmt: skip

    deadline = time.monotonic() + 30
    while (lag := asyncio.run(uncommitted_requests(kafka))) != 0:
        assert time.monotonic() < deadline, f"{lag} requests never committed past"
        time.sleep(0.5)


async def uncommitted_requests(kafka: Settings) -> int:
    """Requests on the topic beyond serving's committed offsets."""
    ends: dict[int, int] = {}
    async for record in read_topic(kafka, kafka.topics.inference_requests):
        ends[record.partition] = record.offset + 1
    return sum([end - await committed_offset(kafka, partition) for partition, end in ends.items()])


def test_http_predict_up_to_the_documented_limit_is_answered_and_written_and_above_it_is_413(kafka, serving):
    rows = instances(10_000, seed=4)
    status, body = post(serving, {"instances": rows}, timeout=120)
    assert status == 200, body
    assert len(body["predictions"]) == 10_000
    ids = {p["event_id"] for p in body["predictions"]}
    assert len(ids & {e.event_id for e in written_events(kafka, serving.model_id)}) == 10_000
    status, body = post(serving, {"instances": rows + rows[:1]}, timeout=120)
    assert status == 413 and "at most 10000 instances per request, got 10001" in body["error"]


def test_features_beyond_float32_are_refused_before_anything_is_written(kafka, serving):
    rows = instances(2)
    rows[0]["features"]["num_05"] = -1e300
    status, body = post(serving, {"instances": rows})
    assert status == 400 and "instances[0].features.num_05: -1e+300 is outside the float32 range" in body["error"]


def test_unknown_or_unauthenticated_model_ids_create_no_metric_series(serving):
    strangers = [f"stranger-{uuid.uuid4().hex[:8]}" for _ in range(20)]
    for model_id in strangers[:10]:
        assert post(serving, {"instances": instances(1)}, token=None, model_id=model_id)[0] == 401
    for model_id in strangers[10:]:
        assert post(serving, {"instances": instances(1)}, model_id=model_id)[0] == 404
    with urllib.request.urlopen(f"{serving.url}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert not [name for name in strangers if name in metrics]
    assert 'model_id="unknown",status="401"' in metrics and 'model_id="unknown",status="404"' in metrics


def test_a_body_that_never_finishes_arriving_gets_a_408(serving):
    import socket

    host, port = serving.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST /v1/models/{serving.model_id}/predict HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\n{{\"inst".encode())  # fmt: skip
        started = time.monotonic()
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 408") and "did not arrive within 10 s" in answer
    assert time.monotonic() - started < 25


def test_the_follower_refuses_bad_announcements_one_by_one_and_keeps_following(kafka, serving):
    registry, model_id = serving.registry, serving.model_id
    before = post(serving, {"instances": instances(1)})[1]["model_version"]
    corrupt, rejected, mismatch, fine = (copy_of_version(registry, model_id, before) for _ in range(4))
    (registry.root / model_id / corrupt.model_version / "manifest.json").write_text("{ not json")
    manifest_path = registry.root / model_id / rejected.model_version / "manifest.json"
    manifest_path.write_text(manifest_path.read_text().replace('"status": "shadow"', '"status": "rejected"'))
    publish(kafka, corrupt)
    publish(kafka, rejected)
    publish(kafka, mismatch.model_copy(update={"sha256": "0" * 64}))
    publish(kafka, fine)  # and then a good one
    deadline = time.monotonic() + 30
    while post(serving, {"instances": instances(1)})[1]["model_version"] != fine.model_version:
        assert time.monotonic() < deadline, "the follower stopped following"
        time.sleep(0.3)
    log = serving.log.read_text()
    assert f"refusing {model_id} v{corrupt.model_version}" in log and "manifest.json is unreadable or corrupt" in log
    assert "its manifest says 'rejected'" in log
    assert f"v{mismatch.model_version}: event sha256 does not match" in log
    with urllib.request.urlopen(f"{serving.url}/readyz", timeout=10) as response:
        assert orjson.loads(response.read())["problems"] == {}


def copy_of_version(registry: ModelRegistry, model_id: str, version: str) -> ModelPublished:
    """A new version with the same model as ``version``, registered (not champion) and its announcement."""
    source = registry.manifest(model_id, version)
    fields = source.model_dump(exclude={"model_id", "version", "sha256", "created_ts", "status", "command_id"})
    command = RetrainCommand(
        command_id=str(uuid.uuid4()), idempotency_key=f"{model_id}:copy", model_id=model_id, model_version=version,
        ts=0, reasons=["0123456789abcdef"], window=TrainingWindow(start_ts=0, end_ts=1),
    )  # fmt: skip
    manifest = registry.save(model_id, registry.load(model_id, version), status="shadow",
                             command_id=command.command_id, **fields)  # fmt: skip
    return verdict(manifest, command, registry).model_copy(update={"status": "promoted"})


def test_stream_mode_dead_letters_an_undecodable_batch_by_coordinates_and_answers_the_next_request(kafka, serving):
    from test_undecodable import produce_corrupt_batch

    from driftwarden.core.events import DeadLetter

    produce_corrupt_batch(kafka, kafka.topics.inference_requests, 0, serving.model_id, 2)
    after = {"request_id": f"after-corrupt-{uuid.uuid4().hex}", "model_id": serving.model_id,
             "instances": instances(2)}  # fmt: skip
    send_requests(kafka, serving.model_id, [orjson.dumps(after)])
    assert wait_for_responses(kafka, [after["request_id"]])[after["request_id"]].error is None

    def undecodable() -> list[DeadLetter]:
        letters = [DeadLetter.model_validate_json(record.value)
                   for record in asyncio.run(all_records(kafka, kafka.topics.dead_letters))]  # fmt: skip
        return [letter for letter in letters if letter.reason.startswith("undecodable record batch")]

    letters = sorted(undecodable(), key=lambda letter: letter.source_offset)  # unkeyed: on any partition
    assert len(letters) == 2 and {letter.source_topic for letter in letters} == {kafka.topics.inference_requests}
    assert letters[1].source_offset == letters[0].source_offset + 1
    assert asyncio.run(committed_offset(kafka, 0)) > letters[1].source_offset


async def committed_offset(kafka: Settings, partition: int) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from driftwarden.kafka.clients import client_options

    consumer = AIOKafkaConsumer(**client_options(kafka), group_id=f"{kafka.topic_prefix}serving")
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(kafka.topics.inference_requests, partition)) or 0
    finally:
        await consumer.stop()


async def all_records(kafka: Settings, topic: str) -> list:
    return [record async for record in read_topic(kafka, topic)]
