"""The trainer on the real broker: monitor -> retrain command -> trainer -> registry and verdict."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer
from helpers_integration import produce, unique_model

from driftwarden.core.events import ModelPublished, RetrainCommand, TrainingWindow
from driftwarden.kafka.broker import free_port
from driftwarden.kafka.clients import client_options
from driftwarden.monitor.status import records_for
from driftwarden.processes import spawn, terminate
from driftwarden.registry.store import ModelRegistry
from driftwarden.settings import Settings
from driftwarden.trainer.model import NOT_SERVABLE, TrainerConfig
from driftwarden.trainer.service import read_examples
from driftwarden.trainer.workflow import bootstrap
from driftwarden_load.producer import example_envelopes
from driftwarden_load.scenarios import Scenario, generate

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trainer(kafka: Settings, tmp_path_factory):
    directory = tmp_path_factory.mktemp("trainer")
    settings = kafka.model_copy(update={"registry_dir": directory / "registry", "state_dir": directory})
    process = spawn(["trainer", "--metrics-port", str(free_port())], settings, directory / "trainer.log")
    yield ModelRegistry(settings.registry_dir)
    terminate(process)


def bootstrap_champion(registry: ModelRegistry, model_id: str) -> None:
    """v1, trained on the original concept: what was serving before the drift."""
    data = [e | {"model_id": model_id} for chunk in generate(Scenario(n_events=4_000, seed=7))
            for e in chunk.training_examples()]  # fmt: skip
    assert bootstrap(registry, model_id, data, TrainerConfig()).status == "promoted"


def verdicts(kafka: Settings, model_id: str) -> list[ModelPublished]:
    return [
        ModelPublished.model_validate_json(v) for v in asyncio.run(records_for(kafka, kafka.topics.models, model_id))
    ]


def wait_for_verdicts(kafka: Settings, model_id: str, n: int, timeout_s: float = 120) -> list[ModelPublished]:
    async def poll() -> list[ModelPublished]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            found = [
                ModelPublished.model_validate_json(v) for v in await records_for(kafka, kafka.topics.models, model_id)
            ]
            if len(found) >= n or asyncio.get_running_loop().time() > deadline:
                return found
            await asyncio.sleep(1)

    return asyncio.run(poll())


async def send(kafka: Settings, topic: str, key: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(**client_options(kafka))
    await producer.start()
    try:
        for value in values:
            await producer.send(topic, value, key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()


def test_concept_drift_leads_to_a_promoted_challenger_and_a_duplicate_command_trains_nothing(
    kafka, monitor_worker, trainer
):
    model_id = unique_model("loop")
    bootstrap_champion(trainer, model_id)
    scenario = Scenario(name="concept-drift", n_events=40_000, onset=20_000, model_id=model_id, seed=8)
    produce(kafka, scenario, batch_size=250, label_delay=300)

    (published,) = wait_for_verdicts(kafka, model_id, 1)
    (raw_command,) = asyncio.run(records_for(kafka, kafka.topics.retrain_commands, model_id))
    command = RetrainCommand.model_validate_json(raw_command)
    assert published.command_id == command.command_id
    assert published.status == "promoted", published.reason
    assert (published.model_version, published.parent_version) == ("2", "1")
    assert published.metrics["accuracy"] > published.metrics["champion_accuracy"] + 0.2
    assert published.metrics["parity_error"] < 1e-4
    assert trainer.champion(model_id).version == "2"

    asyncio.run(send(kafka, kafka.topics.retrain_commands, model_id, [raw_command]))  # the same command again
    again = wait_for_verdicts(kafka, model_id, 2)
    assert len(again) == 2 and again[1].model_version == "2" and again[1].sha256 == published.sha256
    assert trainer.versions(model_id) == ["1", "2"]


def send_examples(kafka: Settings, model_id: str, examples: list[dict], *, poison: bytes | None = None) -> None:
    """The examples as the trainer finds them: predictions, and their labels."""
    predictions, labels = example_envelopes(examples, 300)
    asyncio.run(send(kafka, kafka.topics.predictions, model_id, [*([poison] if poison else []), *predictions]))
    asyncio.run(send(kafka, kafka.topics.labels, model_id, labels))


def test_a_worse_challenger_is_rejected_and_the_champion_stays(kafka, trainer):
    model_id = unique_model("worse")
    bootstrap_champion(trainer, model_id)
    rng = np.random.default_rng(1)
    noisy = [e | {"model_id": model_id, "label": int(rng.integers(0, 2))}
             for chunk in generate(Scenario(n_events=3_000, seed=9)) for e in chunk.training_examples()]  # fmt: skip
    send_examples(kafka, model_id, noisy)
    command = RetrainCommand(command_id=str(uuid.uuid4()), idempotency_key=f"{model_id}:noise", model_id=model_id,
                             model_version="1", ts=1, reasons=["0123456789abcdef"],
                             window=TrainingWindow(start_ts=0, end_ts=2e9))  # fmt: skip
    asyncio.run(send(kafka, kafka.topics.retrain_commands, model_id, [command.to_json()]))
    (published,) = wait_for_verdicts(kafka, model_id, 1)
    assert published.status == "rejected" and "below the required" in published.reason
    assert trainer.champion(model_id).version == "1"


def test_the_training_window_is_read_completely(kafka):
    model_id = unique_model("window")
    examples = [e | {"model_id": model_id} for chunk in generate(Scenario(n_events=5_000, seed=10))
                for e in chunk.training_examples()]  # fmt: skip
    send_examples(kafka, model_id, examples)
    start, end = examples[1_000]["ts"], examples[3_344]["ts"]
    window = asyncio.run(read_examples(kafka, model_id, start, end))
    assert len(window.examples) == 2_345 and window.invalid_records == 0
    assert {e["event_id"] for e in window.examples} == {e["event_id"] for e in examples[1_000:3_345]}


def test_poison_inputs_get_a_verdict_or_a_dead_letter_and_the_trainer_lives_on(kafka, trainer):
    from driftwarden.core.events import DeadLetter

    model_id = unique_model("poison")
    bootstrap_champion(trainer, model_id)
    (trainer.root / model_id / "1" / "manifest.json").write_text("{ corrupt")  # a corrupt champion manifest
    extra = {"odd.name-1 x": 1.0, "vec": [0.25, -1.5, 3.0]}  # an embedding: monitored, not a model input
    data = [e | {"model_id": model_id, "features": e["features"] | extra}
            for chunk in generate(Scenario(n_events=2_000, seed=12)) for e in chunk.training_examples()]  # fmt: skip
    for example in data[:7]:
        example["features"]["num_00"] = 1e39  # beyond float32
    send_examples(kafka, model_id, data, poison=b"{not a prediction")
    command = RetrainCommand(command_id=str(uuid.uuid4()), idempotency_key=f"{model_id}:poison", model_id=model_id,
                             model_version="1", ts=1, reasons=["0123456789abcdef"],
                             window=TrainingWindow(start_ts=0, end_ts=2e9))  # fmt: skip
    asyncio.run(send(kafka, kafka.topics.retrain_commands, model_id, [b'{"command_id": 42}', command.to_json()]))

    (published,) = wait_for_verdicts(kafka, model_id, 1)
    assert published.status == "promoted" and published.reason == "no champion yet"
    assert published.metrics["dropped_examples"] == 7 and published.metrics["invalid_records"] == 1
    manifest = trainer.manifest(model_id, published.model_version)
    assert "odd.name-1 x" in manifest.numeric_features and manifest.excluded_features == {"vec": NOT_SERVABLE}
    letters = [DeadLetter.model_validate_json(v)
               for v in asyncio.run(records_for(kafka, kafka.topics.dead_letters, model_id))]  # fmt: skip
    trainer_letters = [letter for letter in letters if letter.source_topic == kafka.topics.retrain_commands]
    assert [letter.reason.split(":")[0] for letter in trainer_letters] == ["invalid retrain command"]
