"""The trainer worker: retrain commands in, model-published verdicts out (Faust).

For each command it assembles the command's window of labelled examples itself: the model's predictions
with event time in the window, from the predictions topic, joined with their labels from the labels topic
(:class:`~driftwarden.core.training_join.TrainingJoin`; both read to the fetch high-water mark, not the
broker's reported end offset). It then runs :func:`retrain` in a worker thread
(training is CPU-bound; the event loop keeps heartbeating), and publishes the verdict to the models
topic. Commands are idempotent through the registry: a command seen before republishes its verdict.
A command is committed as soon as it has its verdict (or dead letter), so a worker killed afterwards
does not answer it again; one killed before answers it again after its restart (the same verdict).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import faust
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from driftwarden.core.decoding import describe
from driftwarden.core.events import ModelPublished, RetrainCommand
from driftwarden.core.training_join import TrainingJoin
from driftwarden.kafka.dead_letters import dead_letter
from driftwarden.kafka.faust_app import commit_offsets, create_faust_app
from driftwarden.kafka.outages import watch_broker
from driftwarden.kafka.reader import read_topic
from driftwarden.kafka.undecodable import undecodable_reason
from driftwarden.registry.store import ModelRegistry
from driftwarden.settings import Settings
from driftwarden.trainer.model import TrainerConfig
from driftwarden.trainer.workflow import rejection, retrain

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 10.0  # after SIGTERM, the worker exits within this even when the broker is down

DEAD_LETTERS = Counter("driftwarden_trainer_dead_letters", "Commands dead-lettered, by reason.", ["reason"])
RUNS = Counter("driftwarden_trainer_runs", "Retrain commands handled.", ["model_id", "outcome"])
RUN_SECONDS = Histogram("driftwarden_trainer_run_seconds", "Time to handle one retrain command.",
                        buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))  # fmt: skip


#: Unreadable records logged one by one per command (the rest are counted, and the count logged).
LOGGED_INVALID = 5


@dataclass
class Window:
    """The labelled examples of one command's window, and how many records on the way could not be read."""

    examples: list[dict[str, Any]] = field(default_factory=list)
    invalid_records: int = 0


async def read_examples(settings: Settings, model_id: str, start_ts: float, end_ts: float) -> Window:
    """Every labelled example of ``model_id`` with event time in [start_ts, end_ts]: its predictions, then
    their labels, each topic read to its high-water mark.

    A prediction or label that cannot be read (a whole message or one event of a batch) is skipped,
    logged and counted (the monitor dead-lettered it; it stays on the topic for the retention: it must
    not make every command unanswerable)."""
    join = TrainingJoin(model_id, start_ts, end_ts)
    key, logged = model_id.encode(), 0
    for topic, add in ((settings.topics.predictions, join.add_predictions), (settings.topics.labels, join.add_labels)):
        async for record in read_topic(settings, topic):
            if record.key != key:
                continue
            for refused in add(record.value):
                logged += 1
                if logged <= LOGGED_INVALID:
                    log.warning("skipping %s record %d@%d%s: %s", topic, record.partition, record.offset,
                                "" if refused.batch_index is None else f"[{refused.batch_index}]",
                                refused.reason)  # fmt: skip
    log.info("window of %s %.0f..%.0f: %s", model_id, start_ts, end_ts, join.counts())
    return Window(join.examples(), join.invalid_records)


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
            message = event.message
            await self.handle(message)
            # Committed now, not when Faust acks it (on the next message) and its timer commits: a worker
            # killed after a verdict would otherwise answer the command again after its restart.
            await commit_offsets(self.app, {(message.topic, message.partition): message.offset + 1})
            yield None

    async def handle(self, message: Any) -> None:
        """Answer one command with a verdict, or dead-letter it with the reason; never raise (Faust acks the
        message whatever happens, so a message that raised would be lost)."""
        if (reason := undecodable_reason(message)) is not None:  # its record batch cannot be decoded
            await self._dead_letter(message, reason)
            return
        try:
            command = RetrainCommand.model_validate_json(message.value or b"")
        except ValidationError as exc:
            await self._dead_letter(message, f"invalid retrain command: {describe(exc.errors())}")
            return
        try:
            published = await self.run(command)
        except Exception as exc:  # an internal failure: the command still gets a verdict naming it
            log.exception("command %s failed", command.command_id)
            published = rejection(command, f"the trainer failed: {type(exc).__name__}: {exc}")
        RUNS.labels(command.model_id, published.status).inc()
        try:
            await (await self.models.send(key=command.model_id.encode(), value=published.to_json()))
        except Exception as exc:
            log.exception("cannot publish the verdict of command %s", command.command_id)
            await self._dead_letter(message, f"the verdict could not be published: {type(exc).__name__}: {exc}")
            return
        log.warning("MODEL %s v%s %s (command %s): %s", published.model_id, published.model_version, published.status,
                    published.command_id, published.reason)  # fmt: skip

    async def run(self, command: RetrainCommand) -> ModelPublished:
        log.info("command %s for %s: window %.0f..%.0f", command.command_id, command.model_id,
                 command.window.start_ts, command.window.end_ts)  # fmt: skip
        with RUN_SECONDS.time():
            window = await read_examples(
                self.settings, command.model_id, command.window.start_ts, command.window.end_ts
            )
            log.info("command %s: %d labelled examples in the window, %d unreadable records skipped",
                     command.command_id, len(window.examples), window.invalid_records)  # fmt: skip
            loop = asyncio.get_running_loop()
            published = await loop.run_in_executor(None, retrain, command, window.examples, self.registry, self.config)
        if window.invalid_records:
            published.metrics["invalid_records"] = float(window.invalid_records)
        return published

    async def _dead_letter(self, message: Any, reason: str) -> None:
        DEAD_LETTERS.labels(reason.split(":", 1)[0]).inc()
        await (await self.dead_letters.send(key=message.key, value=dead_letter(message, reason).to_json()))


def run_trainer(settings: Settings, config: TrainerConfig) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    service = TrainerService(settings, config)
    watch_broker(service.app, settings, "trainer", SHUTDOWN_TIMEOUT_S)
    worker = faust.Worker(service.app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
