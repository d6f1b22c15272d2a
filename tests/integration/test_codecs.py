"""Every Kafka codec from a librdkafka producer (confluent-kafka): the monitor, the trainer and serving's
stream mode all consume gzip, lz4, zstd and snappy messages."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from helpers_integration import unique_model

from driftwarden.core.events import InferenceResponse, ModelPublished, RetrainCommand, TrainingWindow
from driftwarden.kafka.broker import free_port
from driftwarden.monitor.status import records_for, wait_for_status
from driftwarden.processes import spawn, terminate
from driftwarden.registry.store import ModelRegistry
from driftwarden.serving.readiness import wait_until_ready
from driftwarden.settings import Settings
from driftwarden.trainer.model import TrainerConfig
from driftwarden.trainer.workflow import bootstrap
from driftwarden_load.producer import example_envelopes
from driftwarden_load.scenarios import Scenario, generate

pytestmark = pytest.mark.integration
CODECS = ("gzip", "lz4", "zstd", "snappy")


def produce(kafka: Settings, topic: str, key: str, values: list[bytes], codec: str) -> None:
    """One librdkafka producer per codec; every value in one compressed batch."""
    producer = Producer({"bootstrap.servers": kafka.kafka_bootstrap, "compression.type": codec, "linger.ms": 50})
    errors: list[str] = []
    for value in values:
        producer.produce(topic, value, key=key.encode(),
                         on_delivery=lambda error, _: errors.append(str(error)) if error else None)  # fmt: skip
    assert producer.flush(30) == 0 and not errors, errors


def examples(model_id: str, n: int, seed: int) -> list[dict]:
    return [e | {"model_id": model_id} for chunk in generate(Scenario(n_events=n, seed=seed))
            for e in chunk.training_examples()]  # fmt: skip


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRegistry, Path]:
    directory = tmp_path_factory.mktemp("codecs")
    return ModelRegistry(directory / "registry"), directory


def test_the_monitor_consumes_every_codec(kafka, monitor_worker):
    model_id = unique_model("codec-monitor")
    events = next(generate(Scenario(n_events=400, seed=5, model_id=model_id), chunk_size=400)).prediction_events()
    for i, codec in enumerate(CODECS):
        envelope = {"schema": "prediction-batch.v1", "model_id": model_id, "events": events[i * 100 : (i + 1) * 100]}
        produce(kafka, kafka.topics.predictions, model_id, [orjson.dumps(envelope)], codec)
    status = asyncio.run(wait_for_status(kafka, model_id, lambda s: s.events_processed == 400, 60))
    assert status.events_processed == 400


def test_the_trainer_consumes_every_codec(kafka, registry):
    models, directory = registry
    settings = kafka.model_copy(update={"registry_dir": models.root, "state_dir": directory / "trainer"})
    process = spawn(["trainer", "--metrics-port", str(free_port())], settings, directory / "trainer.log")
    try:
        model_id = unique_model("codec-trainer")
        data = examples(model_id, 2_400, seed=6)
        for i, codec in enumerate(CODECS):  # predictions and labels, each codec on both topics
            predictions, labels = example_envelopes(data[i * 600 : (i + 1) * 600], 600)
            produce(kafka, kafka.topics.predictions, model_id, predictions, codec)
            produce(kafka, kafka.topics.labels, model_id, labels, codec)
        command = RetrainCommand(command_id=str(uuid.uuid4()), idempotency_key=f"{model_id}:codecs",
                                 model_id=model_id, model_version="0", ts=1, reasons=["0123456789abcdef"],
                                 window=TrainingWindow(start_ts=0, end_ts=2e9))  # fmt: skip
        produce(kafka, kafka.topics.retrain_commands, model_id, [command.to_json()], "zstd")
        verdict = asyncio.run(first_record(kafka, kafka.topics.models, model_id))
        published = ModelPublished.model_validate_json(verdict)
        assert published.status == "promoted", published.reason
        assert published.metrics["train_examples"] + published.metrics["holdout_examples"] == 2_400
    finally:
        terminate(process)


def test_serving_stream_mode_consumes_every_codec(kafka, registry):
    models, directory = registry
    model_id = unique_model("codec-serving")
    assert bootstrap(models, model_id, examples(model_id, 1_500, seed=7), TrainerConfig()).status == "promoted"
    settings = kafka.model_copy(update={"registry_dir": models.root, "state_dir": directory / "serving"})
    port = free_port()
    process = spawn(["serve", "--port", str(port)], settings, directory / "serving.log")
    try:
        asyncio.run(wait_until_ready(f"http://127.0.0.1:{port}", timeout_s=60, process=process))
        features = [{"features": e["features"]} for e in examples(model_id, 10, seed=8)]
        for codec in CODECS:
            request = {"request_id": f"{codec}-{model_id}", "model_id": model_id, "instances": features}
            produce(kafka, kafka.topics.inference_requests, model_id, [orjson.dumps(request)], codec)
        for codec in CODECS:
            response = InferenceResponse.model_validate_json(
                asyncio.run(first_record(kafka, kafka.topics.inference_responses, f"{codec}-{model_id}"))
            )
            assert response.error is None and len(response.predictions or []) == len(features)
    finally:
        terminate(process)


async def first_record(kafka: Settings, topic: str, key: str, timeout_s: float = 120) -> bytes:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        found = await records_for(kafka, topic, key)
        if found:
            return found[0]
        assert asyncio.get_running_loop().time() < deadline, f"nothing keyed {key} on {topic}"
        await asyncio.sleep(0.5)
