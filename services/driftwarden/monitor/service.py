"""The monitor worker: predictions and labels -> :class:`driftwarden.core.monitor.Monitor` -> topics.

Thin by design. One Faust agent reads the predictions and labels topics (co-partitioned by
``model_id``, so a model's labels reach the worker that holds its predictions). Per batch of Kafka
messages it decodes (bad input goes to the dead-letter topic with the reason and the original
bytes), feeds the core in stream order, publishes alerts and retrain commands, and waits until the
broker acknowledged all of it before the batch counts as done: at-least-once, nothing lost.

Restart safety: every ``checkpoint_interval_s`` the core's state of each partition is written to a
compacted topic together with the offsets it covers (a bounded rate, not one write per event). A
worker that takes over a partition restores that checkpoint, skips messages the checkpoint already
includes and, if the group committed offsets beyond it, seeks back so that every event after the
checkpoint is processed again. Alert ids are deterministic, so an alert re-raised by that replay is
the same alert.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import pickle
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.types import TP, EventT

from driftwarden.core.config import MonitoringConfig
from driftwarden.core.decoding import LABELS, PREDICTIONS, Rejection
from driftwarden.core.events import (
    TRAINING_EXAMPLE_BATCH_SCHEMA,
    KeyedEvent,
    LabelEvent,
    PredictionEvent,
    is_model_id,
)
from driftwarden.core.monitor import Monitor, Outputs, ProfileLoader
from driftwarden.core.profile import ReferenceProfile
from driftwarden.kafka.dead_letters import dead_letter
from driftwarden.kafka.faust_app import create_faust_app
from driftwarden.kafka.reader import read_topic
from driftwarden.monitor import metrics
from driftwarden.settings import CHECKPOINT_MAX_BYTES, Settings

log = logging.getLogger(__name__)

#: Exit code when even the dead-letter topic cannot be written: exit without committing offsets.
EXIT_CANNOT_PUBLISH = 75
#: Training examples per message on the training topic.
EXAMPLES_PER_MESSAGE = 500
#: Checkpoints are spaced at least this many times their own duration apart.
CHECKPOINT_TIME_SHARE_INVERSE = 10
#: How long to wait for a seek back to a checkpoint's offset before accepting a real gap.
SEEK_PATIENCE_S = 10.0


def profile_loader(profiles_dir: Path | None) -> ProfileLoader | None:
    """Reference profiles from ``PROFILES_DIR/<model_id>/<model_version>.json`` when present."""
    if profiles_dir is None:
        return None

    def load(model_id: str, model_version: str) -> ReferenceProfile | None:
        path = profiles_dir / model_id / f"{model_version}.json"
        return ReferenceProfile.from_json(path.read_bytes()) if path.is_file() else None

    return load


class MonitorService:
    """Wires one Faust app to the monitor core."""

    def __init__(
        self,
        settings: Settings,
        config: MonitoringConfig | None = None,
        batch_max: int = 500,
        batch_within_s: float = 0.05,
        status_interval_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.core = Monitor(config, load_profile=profile_loader(settings.profiles_dir))
        self.batch_max = batch_max
        self.batch_within_s = batch_within_s
        self.topics = topics = settings.topics
        self.app = create_faust_app(settings.monitor_group, settings, producer_max_request_size=CHECKPOINT_MAX_BYTES)
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        self.inputs = self.app.topic(topics.predictions, topics.labels, partitions=settings.partitions, **raw)
        self.alerts = self.app.topic(topics.alerts, **raw)
        self.commands = self.app.topic(topics.retrain_commands, **raw)
        self.dead_letters = self.app.topic(topics.dead_letters, **raw)
        self.status = self.app.topic(topics.monitor_status, **raw)
        self.state = self.app.topic(topics.monitor_state, **raw)
        self.training = self.app.topic(topics.training_examples, **raw)
        self.partition_models: dict[int, set[str]] = {}
        self.next_offset: dict[TP, int] = {}
        self.initialized: set[int] = set()
        self.seeking: dict[TP, float] = {}
        self.dirty: set[int] = set()
        self.changed_models: set[str] = set()
        self.last_checkpoint = time.monotonic()
        self.checkpoint_due_s = settings.checkpoint_interval_s
        self._writing: asyncio.Future[None] | None = None
        self._checkpoints: dict[int, bytes] | None = None
        self._lock = asyncio.Lock()
        self.app.agent(self.inputs, name="monitor")(self.consume)
        self.app.timer(status_interval_s, name="monitor-status")(self.publish_status)
        self.app.on_partitions_revoked.connect(self.on_partitions_revoked)

    # -- the agent ---------------------------------------------------------------------------------

    async def consume(self, stream: faust.StreamT) -> AsyncIterator[None]:
        async for batch in stream.take_events(self.batch_max, within=self.batch_within_s):
            async with self._lock:
                with metrics.BATCH_SECONDS.time():
                    try:
                        await self.process(batch)
                    except Exception as exc:  # a bug in our code must not lose the batch: keep it whole
                        log.exception("processing a batch of %d messages failed; dead-lettering it", len(batch))
                        await self._dead_letter_batch(batch, f"internal error: {exc!r}")
                writing = self._writing is not None and not self._writing.done()
                if not writing and time.monotonic() - self.last_checkpoint >= self.checkpoint_due_s:
                    await self.checkpoint(wait=False)
            yield None

    async def process(self, batch: Sequence[EventT]) -> None:
        """Decode, detect, publish; status counters move only once everything is acknowledged."""
        pending: list[Awaitable[Any]] = []
        outputs = Outputs()
        now = time.time()
        predictions: list[PredictionEvent] = []
        for event in batch:
            message = event.message
            if not await self._accept(message):
                continue
            is_label = message.topic == self.topics.labels
            decoded = (LABELS if is_label else PREDICTIONS).decode(message.value)
            for rejection in decoded.rejections:
                pending.append(await self._send_dead_letter(message, rejection))
            events: list[KeyedEvent] = list(decoded.events)
            self._track(message.partition, events, message.key)
            if is_label:
                if predictions:  # keep stream order: predictions before these labels first
                    outputs += self.core.observe(predictions, now)
                    predictions = []
                outputs += self.core.observe_labels([e for e in events if isinstance(e, LabelEvent)], now)
            else:
                predictions += [e for e in events if isinstance(e, PredictionEvent)]
        if predictions:
            outputs += self.core.observe(predictions, now)
        for alert in outputs.alerts:
            pending.append(await self.alerts.send(key=alert.model_id.encode(), value=alert.to_json()))
            metrics.ALERTS_FIRED.labels(alert.model_id, alert.kind, alert.severity).inc()
            log.warning("ALERT %s %s %s: %s", alert.state, alert.severity, alert.kind, alert.summary)
        examples = await self._send_examples(outputs.examples)
        if outputs.commands:  # the trainer reads a command's examples as soon as it gets it: land them first
            await asyncio.gather(*examples)
        for command in outputs.commands:
            pending.append(await self.commands.send(key=command.model_id.encode(), value=command.to_json()))
            metrics.RETRAIN_COMMANDS.labels(command.model_id).inc()
            log.warning("RETRAIN %s v%s: %s", command.model_id, command.model_version, command.idempotency_key)
        await asyncio.gather(*pending, *examples)
        self._observe_metrics(batch)

    async def _send_examples(self, examples: list[dict[str, Any]]) -> list[Awaitable[Any]]:
        """Joined, labelled examples for the trainer, as batch envelopes per model."""
        pending = []
        for model_id, run in groupby(examples, key=lambda e: e["model_id"]):
            items = list(run)
            for i in range(0, len(items), EXAMPLES_PER_MESSAGE):
                value = orjson.dumps(
                    {
                        "schema": TRAINING_EXAMPLE_BATCH_SCHEMA,
                        "model_id": model_id,
                        "events": items[i : i + EXAMPLES_PER_MESSAGE],
                    }
                )
                pending.append(await self.training.send(key=model_id.encode(), value=value))
        return pending

    def _track(self, partition: int, events: list[KeyedEvent], key: bytes | None) -> None:
        models = {e.model_id for e in events}
        if not events:
            model_id = self._model_of_key(key)
            models = {model_id} if model_id else set()
        self.partition_models.setdefault(partition, set()).update(models)
        self.changed_models |= models
        self.dirty.add(partition)

    def _observe_metrics(self, batch: Sequence[EventT]) -> None:
        last_offsets = {TP(e.message.topic, e.message.partition): e.message.offset for e in batch}
        for tp, offset in last_offsets.items():  # once per partition, not per message
            highwater = self.app.consumer.highwater(tp) if self.app.consumer else None
            if highwater is not None:
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, highwater - offset - 1))
        for model_id in self.changed_models:
            state = self.core.models.get(model_id)
            if state is None:
                continue
            metrics.EVENTS_PROCESSED.labels(model_id).set(state.counters.processed)
            counts = state.joiner.counts()
            metrics.PENDING_JOINS.labels(model_id, "predictions").set(counts["pending_predictions"])
            metrics.PENDING_JOINS.labels(model_id, "labels").set(counts["pending_labels"])
            version = state.counters.latest_version
            monitor = state.versions.get(version) if version else None
            if monitor is not None:
                for (kind, subject, statistic), value in monitor.latest_window.items():
                    metrics.DRIFT_STATISTIC.labels(model_id, kind, subject, statistic).set(value)

    # -- offsets and checkpoints ---------------------------------------------------------------------

    async def _accept(self, message: Any) -> bool:
        """Whether to process a message, given the offsets the restored checkpoint already covers."""
        tp = TP(message.topic, message.partition)
        if message.partition not in self.initialized:
            await self._initialize(message.partition)
        expected = self.next_offset.get(tp)
        if expected is None or message.offset == expected:
            self.next_offset[tp] = message.offset + 1
            self.seeking.pop(tp, None)
            return True
        if message.offset < expected:
            return False  # already part of the restored state
        started = self.seeking.get(tp)
        if started is None:
            log.info("%s: resuming at %d, checkpoint covers up to %d: seeking back", tp, message.offset, expected)
            self.seeking[tp] = time.monotonic()
            await self.app.consumer.seek(tp, expected)
            return False
        if time.monotonic() - started < SEEK_PATIENCE_S:
            return False  # still draining messages fetched before the seek
        log.warning("%s: offsets %d..%d are gone from the topic; continuing", tp, expected, message.offset - 1)
        self.next_offset[tp] = message.offset + 1
        self.seeking.pop(tp, None)
        return True

    async def _initialize(self, partition: int) -> None:
        """Restore the partition's latest checkpoint, if any, before its first message is processed."""
        self.initialized.add(partition)
        if self._checkpoints is None:
            self._checkpoints = {}
            state_topic = self.topics.monitor_state
            # Read until quiet, not just to the end seen at start: restoring at once, before Faust's
            # own start-up seeks have settled, left seeks back unanswered (tests/integration/test_restart.py).
            async for record in read_topic(
                self.settings, state_topic, idle_timeout_s=0.2, max_record_bytes=CHECKPOINT_MAX_BYTES
            ):
                group, _, number = (record.key or b"").decode().rpartition("/")
                if group == self.settings.monitor_group and record.value is not None:
                    self._checkpoints[int(number)] = record.value
        raw = self._checkpoints.get(partition)
        offsets: dict[str, int] = {}
        if raw is None:
            self.last_checkpoint = 0.0  # first sight of this partition: checkpoint after this batch
        else:
            snapshot = pickle.loads(zlib.decompress(raw))  # written by this service only (see docs/operations.md)
            models = self.core.restore(snapshot["models"])
            self.partition_models[partition] = set(models)
            self.changed_models |= set(models)
            offsets = snapshot["offsets"]
            log.info("partition %d: restored %d models, offsets %s", partition, len(models), offsets)
        # The state holds nothing of an input the checkpoint has no offset for: that input is replayed
        # from its first retained message, whatever offset the group committed.
        uncovered = [TP(t, partition) for t in (self.topics.predictions, self.topics.labels) if t not in offsets]
        earliest = await self.app.consumer.earliest_offsets(*uncovered) if uncovered else {}
        for topic, offset in offsets.items():
            self.next_offset[TP(topic, partition)] = offset
        for tp in uncovered:
            self.next_offset[tp] = earliest.get(tp) or 0

    async def checkpoint(self, partitions: set[int] | None = None, wait: bool = True) -> None:
        """Snapshot the (changed) partitions' state with the offsets it covers, then compress and write
        it; ``wait=False`` lets the worker go on while that happens (zlib releases the GIL)."""
        started = time.monotonic()
        chosen = self.dirty if partitions is None else self.dirty & partitions
        snapshots = []
        for partition in sorted(chosen):
            snapshot = {
                "offsets": {tp.topic: offset for tp, offset in self.next_offset.items() if tp.partition == partition},
                "models": self.core.export(self.partition_models.get(partition, set())),
            }
            snapshots.append((partition, pickle.dumps(snapshot, pickle.HIGHEST_PROTOCOL)))
        self.dirty -= chosen
        self.last_checkpoint = started
        self._writing = asyncio.ensure_future(self._write_checkpoints(snapshots, self._writing, started))
        if wait:
            await self._writing

    async def _write_checkpoints(
        self, snapshots: list[tuple[int, bytes]], previous: asyncio.Future[None] | None, started: float
    ) -> None:
        if previous is not None:  # checkpoints of a partition land in the order they were taken
            await asyncio.gather(previous, return_exceptions=True)
        try:
            pending = []
            for partition, raw in snapshots:
                value = await asyncio.to_thread(zlib.compress, raw, 1)
                key = f"{self.settings.monitor_group}/{partition}".encode()
                pending.append(await self.state.send(key=key, value=value))
                metrics.CHECKPOINT_BYTES.set(len(value))
            await asyncio.gather(*pending)
        except Exception:  # the previous checkpoint stands: a restart replays a little more
            written = sorted(partition for partition, _ in snapshots)
            log.exception("writing the checkpoint of partitions %s failed; the next one retries", written)
            self.dirty |= {p for p in written if p in self.partition_models}  # still ours: save again
            return
        # A large state (e.g. many predictions waiting for labels) is saved less often, so that
        # checkpoints take at most about a tenth of the worker's time.
        self.checkpoint_due_s = max(
            self.settings.checkpoint_interval_s, CHECKPOINT_TIME_SHARE_INVERSE * (time.monotonic() - started)
        )

    async def on_partitions_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        """Save what we have of revoked partitions, then forget it: the next owner restores it."""
        partitions = {tp.partition for tp in revoked}
        async with self._lock:
            try:
                await self.checkpoint(partitions)
            except Exception:  # the next owner replays from the previous checkpoint instead
                log.exception("checkpoint of revoked partitions %s failed", sorted(partitions))
            for partition in partitions:
                self.core.forget(self.partition_models.pop(partition, set()))
                self.initialized.discard(partition)
            self.next_offset = {tp: o for tp, o in self.next_offset.items() if tp.partition not in partitions}
            self._checkpoints = None

    # -- dead letters and status ---------------------------------------------------------------------

    @staticmethod
    def _model_of_key(key: bytes | None) -> str:
        """The model a message belongs to, by its Kafka key ("" when the key is not a model id)."""
        text = key.decode("utf-8", "replace") if key else ""
        return text if is_model_id(text) else ""

    async def _send_dead_letter(self, message: Any, rejection: Rejection) -> Awaitable[Any]:
        letter = dead_letter(message, rejection.reason, rejection.payload, rejection.batch_index)
        metrics.EVENTS_DEAD_LETTERED.labels(message.topic).inc()
        model_id = self._model_of_key(message.key)
        if model_id:
            self.core.count_dead_letters(model_id, 1)
        return await self.dead_letters.send(key=message.key, value=letter.to_json())

    async def _dead_letter_batch(self, batch: Sequence[EventT], reason: str) -> None:
        try:
            pending = [
                await self._send_dead_letter(event.message, Rejection(reason, event.message.value or b""))
                for event in batch
            ]
            await asyncio.gather(*pending)
        except Exception:
            log.critical("cannot write to the dead-letter topic; exiting without committing offsets")
            logging.shutdown()
            os._exit(EXIT_CANNOT_PUBLISH)

    async def publish_status(self) -> None:
        """Publish the counters and rolling metrics of every model that changed since the last call."""
        async with self._lock:  # never in the middle of a batch: counts are whole batches, acknowledged
            changed, self.changed_models = self.changed_models, set()
            now = time.time()
            for model_id in sorted(changed):
                if model_id in self.core.models:
                    status = self.core.status(model_id, now)
                    await self.status.send(key=model_id.encode(), value=status.to_json())


def tune_garbage_collector() -> None:
    """Collect less often. The worker allocates many short-lived objects per event while holding many
    long-lived ones (detector state); default thresholds make full collections a third of its time."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def run_worker(settings: Settings) -> None:
    """Run the monitor worker in the foreground until SIGINT/SIGTERM."""
    config = MonitoringConfig.from_file(settings.monitor_config) if settings.monitor_config else None
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    service = MonitorService(settings, config)
    tune_garbage_collector()
    worker = faust.Worker(service.app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
