"""Serving answers and writes back exactly what it did when ``serving_transcript.json`` was recorded: a
fixed workload (v1 and v2, one row to 300, the caller's event ids and made ones, integer datatypes,
nested data, refusals of every kind: 400, 404, 413, 422; requests of both protocols in one micro-batch)
sent to a real ``driftwarden serve`` and a real broker, and each request's status and body, the serving
metrics' counts and every written message compared byte for byte with the recording.

Only what differs from run to run is replaced before comparing: made event ids (``<id N>`` in order of
first appearance), the model's id (unique per run), and the times in the written messages (``ts``,
``latency_ms``, ``cost``). The recording was made with main's code at 34b7bc5 (serving as at 0a6b8ff); to record again,
copy the ``transcript.json`` this test leaves in its ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers_integration import unique_model

from driftwarden.kafka.broker import free_port
from driftwarden.kafka.outages import BrokerState
from driftwarden.monitor.status import records_for
from driftwarden.processes import spawn, terminate
from driftwarden.registry.store import ModelRegistry
from driftwarden.serving.models import ActiveModels
from driftwarden.serving.open_inference import infer_body
from driftwarden.serving.readiness import wait_until_ready
from driftwarden.serving.server import MicroBatcher, ServingConfig, columns_request, rows_request
from driftwarden.serving.writer import PredictionWriter
from driftwarden.settings import Settings
from driftwarden.trainer.model import TrainerConfig
from driftwarden.trainer.workflow import bootstrap
from driftwarden_load.scenarios import Scenario, generate

pytestmark = pytest.mark.integration
RECORDED = Path(__file__).with_name("serving_transcript.json")
MADE_ID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
TIMES = re.compile(rb'"(ts|latency_ms|cost)":\[[^\]]*\]')


@dataclass
class Served:
    url: str
    model_id: str
    settings: Settings
    models: ActiveModels


@pytest.fixture(scope="module")
def served(kafka: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("transcript")
    registry = ModelRegistry(directory / "registry")
    model_id = unique_model("transcript")
    bootstrap(registry, model_id, [e | {"model_id": model_id} for chunk in generate(Scenario(n_events=2_000, seed=1))
                                   for e in chunk.training_examples()], TrainerConfig())  # fmt: skip
    models = ActiveModels(registry)
    models.load_champions()
    settings = kafka.model_copy(update={"registry_dir": registry.root, "state_dir": directory})
    port = free_port()
    process = spawn(["serve", "--port", str(port)], settings, directory / "serving.log")
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(wait_until_ready(url, timeout_s=60, process=process))
        yield Served(url, model_id, settings, models)
    finally:
        terminate(process)


def rows(n: int, seed: int, **extra: Any) -> list[dict[str, Any]]:
    events = next(generate(Scenario(n_events=n, seed=seed), chunk_size=n)).prediction_events()
    return [{"features": e["features"]} | {key: f"{value}-{i}" for key, value in extra.items()}
            for i, e in enumerate(events)]  # fmt: skip


def v2(instances: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return infer_body(instances, **fields)


def changed(body: dict[str, Any], name: str, **changes: Any) -> dict[str, Any]:
    return body | {"inputs": [t | changes if t["name"] == name else t for t in body["inputs"]]}


def ids_input(ids: list[str]) -> dict[str, Any]:
    return {"name": "event_id", "shape": [len(ids)], "datatype": "BYTES", "data": ids}


def workload() -> list[tuple[str, str, Any]]:
    """(protocol, model, body) of each request, sent one after the other."""
    three = v2(rows(3, seed=7))
    integers = changed(three, "num_00", datatype="INT64", data=[3, -2, 7])
    nested = changed(integers, "num_01", data=[[v] for v in three["inputs"][1]["data"]])
    mixed = changed(changed(three, "num_02", datatype="FP32"), "num_03", datatype="FP16", data=[1, 2.5, -3])
    with_ids = v2(rows(40, seed=8))
    with_ids["inputs"].append(ids_input([f"given-{i}" if i % 3 else "" for i in range(40)]))
    too_long = v2(rows(2, seed=9))
    too_long["inputs"].append(ids_input(["fine", "x" * 129]))
    duplicate = v2(rows(2, seed=9))
    duplicate["inputs"].append(duplicate["inputs"][0])
    retyped = v2(rows(2, seed=9))  # an input given twice, as numbers and as text
    retyped["inputs"].append(retyped["inputs"][0] | {"datatype": "BYTES", "data": ["a", "b"]})
    return [
        ("v1", "", {"instances": rows(1, seed=1)}),
        ("v2", "", v2(rows(1, seed=2))),
        ("v1", "", {"instances": rows(3, seed=3, event_id="caller")}),
        ("v2", "", with_ids),
        ("v2", "", v2(rows(300, seed=4), id="three-hundred")),
        ("v1", "", {"instances": rows(300, seed=5)}),
        ("v2", "", integers),
        ("v2", "", nested),
        ("v2", "", mixed),
        ("v2", "", changed(three, "num_04", parameters={}) | {"outputs": [{"name": "label"}], "id": "labels"}),
        ("v2", "", changed(three, "num_05", data=[1.0, "2", 3.0])),
        ("v2", "", changed(three, "num_05", data=[1.0, 1e39, 3.0])),
        ("v2", "", changed(three, "num_05", datatype="UINT8", data=[1, 256, 3])),
        ("v2", "", changed(three, "cat_00", data=["a", 1, "b"])),
        ("v2", "", three | {"inputs": three["inputs"][1:]}),
        ("v2", "", duplicate),
        ("v2", "", retyped),
        ("v2", "", changed(three, "num_06", shape=[2])),
        ("v2", "", changed(three, "num_06", shape=[10**9, 1])),
        ("v2", "", too_long),
        ("v1", "", {"instances": [*rows(2, seed=10), {"features": {"num_00": "high"}}]}),
        ("v1", "", {"instances": rows(2, seed=11, event_id="y" * 129)}),
        ("v1", "", {"instances": []}),
        ("v2", "nobody", v2(rows(1, seed=12))),
        ("v2", "", b"{not json"),
    ]


def micro_batch() -> list[tuple[str, Any]]:
    """(protocol, body) of requests submitted together: one micro-batch."""
    refused_id = v2(rows(2, seed=14))
    refused_id["inputs"].append(ids_input(["kept", "z" * 129]))
    return [
        ("v1", {"instances": rows(2, seed=13)}),
        ("v2", v2(rows(3, seed=14))),
        ("v1", {"instances": [{"features": {"num_00": None}}]}),
        ("v2", refused_id),
        ("v2", changed(v2(rows(1, seed=15)), "num_01", data=[[0.5]], shape=[1, 1])),
        ("v1", {"instances": rows(4, seed=16, event_id="batched")}),
    ]


class Normalized:
    """Replaces what differs from run to run: made event ids, the model's id, the written times."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id.encode()
        self.made: dict[bytes, bytes] = {}

    def __call__(self, raw: bytes) -> str:
        raw = MADE_ID.sub(lambda m: self.made.setdefault(m.group(), f"<id {len(self.made)}>".encode()), raw)
        raw = TIMES.sub(lambda m: b'"' + m.group(1) + b'":"<times>"', raw.replace(self.model_id, b"<model>"))
        return raw.decode()


def digest(text: str) -> str:
    return f"{len(text)} {hashlib.sha256(text.encode()).hexdigest()[:16]}"


def post(served: Served, protocol: str, model_id: str, body: Any) -> tuple[int, bytes]:
    path = {"v1": "/v1/models/{}/predict", "v2": "/v2/models/{}/infer"}[protocol].format(model_id or served.model_id)
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    request = urllib.request.Request(served.url + path, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def metrics(served: Served, normalized: Normalized) -> list[str]:
    """The counts of the serving metrics of the model (not the latencies' buckets: those are times)."""
    with urllib.request.urlopen(served.url + "/metrics", timeout=10) as answer:
        lines = answer.read().splitlines()
    wanted = (b"driftwarden_serving_requests_total", b"driftwarden_serving_predictions_total",
              b"driftwarden_serving_batch_rows_bucket", b"driftwarden_serving_latency_seconds_count")  # fmt: skip
    return sorted(normalized(line) for line in lines if line.startswith(wanted))


async def submit_together(settings: Settings, models: ActiveModels, model_id: str) -> list[str]:
    """Each request's answer (or why it was refused), the requests submitted in one micro-batch."""
    writer = PredictionWriter(settings, BrokerState("transcript"))
    await writer.start()
    try:
        batcher = MicroBatcher(models, ServingConfig(max_wait_s=0.5, idle_s=0.5), writer)
        decoded = [(rows_request if protocol == "v1" else columns_request)(body) for protocol, body in micro_batch()]
        requests = [asyncio.create_task(batcher.submit(model_id, *request)) for request in decoded]
        outcomes = await asyncio.wait_for(asyncio.gather(*requests, return_exceptions=True), 60)
    finally:
        await writer.stop(10)
    return [o.decode() if isinstance(o, bytes) else f"{type(o).__name__}: {o}" for o in outcomes]


def test_answers_and_written_messages_are_the_recorded_ones_byte_for_byte(served: Served, tmp_path: Path) -> None:
    normalized = Normalized(served.model_id)
    transcript: dict[str, Any] = {"requests": [], "micro_batch": [], "messages": []}
    for protocol, model_id, body in workload():
        status, answer = post(served, protocol, model_id, body)
        text = normalized(answer)
        transcript["requests"].append([protocol, status, text if status != 200 else digest(text)])
    transcript["metrics"] = metrics(served, normalized)
    for outcome in asyncio.run(submit_together(served.settings, served.models, served.model_id)):
        text = normalized(outcome.encode())
        transcript["micro_batch"].append(
            text if outcome.startswith(("BadRequestError", "UnservableError")) else digest(text)
        )
    for message in asyncio.run(records_for(served.settings, served.settings.topics.predictions, served.model_id)):
        transcript["messages"].append(digest(normalized(message)))
    parts = (f" {json.dumps(part)}: [\n" + ",\n".join(f"  {json.dumps(entry, ensure_ascii=False)}" for entry in entries)
             + "\n ]" for part, entries in transcript.items())  # fmt: skip
    (tmp_path / "transcript.json").write_text("{\n" + ",\n".join(parts) + "\n}\n")
    recorded = json.loads(RECORDED.read_text())
    for part in ("requests", "metrics", "micro_batch", "messages"):
        assert transcript[part] == recorded[part], f"{part} differ: see {tmp_path / 'transcript.json'}"
