"""The trainer worker: retrain commands in, model-published verdicts out (Faust).

For each command it reads the command's window of labelled examples from the training topic (to the
fetch high-water mark, not the broker's reported end offset), runs :func:`retrain` in a worker thread
(training is CPU-bound; the event loop keeps heartbeating), and publishes the verdict to the models
topic. Commands are idempotent through the registry: a command seen before republishes its verdict.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import faust
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from driftwarden.core.decoding import describe
from driftwarden.core.events import RetrainCommand, TrainingExampleBatch
from driftwarden.kafka.dead_letters import dead_letter
from driftwarden.kafka.faust_app import create_faust_app
from driftwarden.kafka.reader import read_topic
from driftwarden.registry.store import ModelRegistry
from driftwarden.settings import Settings
from driftwarden.trainer.model import TrainerConfig
from driftwarden.trainer.workflow import retrain

log = logging.getLogger(__name__)

RUNS = Counter("driftwarden_trainer_runs", "Retrain commands handled.", ["model_id", "outcome"])
RUN_SECONDS = Histogram("driftwarden_trainer_run_seconds", "Time to handle one retrain command.",
                        buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))  # fmt: skip


async def read_examples(settings: Settings, model_id: str, start_ts: float, end_ts: float) -> list[dict[str, Any]]:
    """Every training example of ``model_id`` with event time in [start_ts, end_ts], read to the high-water mark."""
    examples: list[dict[str, Any]] = []
    async for record in read_topic(settings, settings.topics.training_examples):
        if record.key != model_id.encode() or record.value is None:
            continue
        batch = TrainingExampleBatch.model_validate_json(record.value)
        examples += [e.model_dump() for e in batch.events if start_ts <= e.ts <= end_ts]
    return examples


class TrainerService:
    def __init__(self, settings: Settings, config: TrainerConfig | None = None) -> None:
        self.settings = settings
        self.config = config or TrainerConfig()
        self.registry = ModelRegistry(settings.registry_dir)
        self.app = create_faust_app(f"{settings.topic_prefix}trainer", settings)
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        self.commands = self.app.topic(settings.topics.retrain_commands, **raw)
        self.models = self.app.topic(settings.topics.models, **raw)
        self.dead_letters = self.app.topic(settings.topics.dead_letters, **raw)
        self.app.agent(self.commands, name="trainer")(self.consume)

    async def consume(self, stream: faust.StreamT) -> AsyncIterator[None]:
        async for event in stream.events():
            await self.handle(event.message)
            yield None

    async def handle(self, message: Any) -> None:
        try:
            command = RetrainCommand.model_validate_json(message.value or b"")
        except ValidationError as exc:
            reason = f"invalid retrain command: {describe(exc.errors())}"
            await (await self.dead_letters.send(key=message.key, value=dead_letter(message, reason).to_json()))
            return
        log.info("command %s for %s: window %.0f..%.0f", command.command_id, command.model_id,
                 command.window.start_ts, command.window.end_ts)  # fmt: skip
        with RUN_SECONDS.time():
            examples = await read_examples(
                self.settings, command.model_id, command.window.start_ts, command.window.end_ts
            )
            log.info("command %s: %d labelled examples in the window", command.command_id, len(examples))
            loop = asyncio.get_running_loop()
            published = await loop.run_in_executor(None, retrain, command, examples, self.registry, self.config)
        RUNS.labels(command.model_id, published.status).inc()
        await (await self.models.send(key=command.model_id.encode(), value=published.to_json()))
        log.warning("MODEL %s v%s %s: %s", published.model_id, published.model_version, published.status,
                    published.reason)  # fmt: skip


def run_trainer(settings: Settings, config: TrainerConfig) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    service = TrainerService(settings, config)
    worker = faust.Worker(service.app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
