"""The monitor worker: predictions and labels -> :class:`driftwarden.core.monitor.Monitor` -> topics.

Thin by design. One Faust agent reads the predictions and labels topics (co-partitioned by
``model_id``, so a model's labels reach the worker that holds its predictions). Per batch of Kafka
messages it decodes (bad input goes to the dead-letter topic with the reason and the original
bytes), feeds the core (a batch's predictions, then its labels: each topic in its order), publishes
alerts and retrain commands, and waits until the broker acknowledged all of it before the batch
counts as done: at-least-once, nothing lost.

Restart safety (the protocol is :mod:`driftwarden.monitor.state`): every ``checkpoint_interval_s``
the core's state of each changed partition is written to a compacted topic with the offsets of both
inputs it covers, and only once the broker acknowledged it are those offsets committed; Faust commits
nothing of the inputs. A worker that takes over a partition is positioned by the committed offsets (at
or behind the checkpoint), restores the checkpoint and skips what it covers: no seek. Alert ids are
deterministic, so an alert re-raised by that replay is the same alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import socket
import time
from collections import Counter as TallyCounter
from collections.abc import AsyncIterator, Awaitable, Sequence
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.types import TP, EventT

from driftwarden.core.columnar import PredictionColumns
from driftwarden.core.config import MonitoringConfig
from driftwarden.core.decoding import LABELS, PREDICTIONS, Rejection
from driftwarden.core.events import (
    Alert,
    KeyedEvent,
    LabelEvent,
    PredictionEvent,
    WindowSummary,
    is_model_id,
    status_key,
)
from driftwarden.core.monitor import Monitor, Outputs, ProfileLoader
from driftwarden.core.profile import ReferenceProfile, read_profile
from driftwarden.core.sharded_models import ShardedModels
from driftwarden.core.shards import shard_of_key
from driftwarden.core.state import StateError, decode, encode
from driftwarden.errors import DriftwardenError
from driftwarden.kafka.dead_letters import dead_letter
from driftwarden.kafka.faust_app import commit_offsets, create_faust_app, on_rebalance, on_stop, take_events
from driftwarden.kafka.outages import watch_broker
from driftwarden.kafka.reader import next_record_offset, read_topic, start_new_group_at_end, watermarks
from driftwarden.kafka.undecodable import undecodable_reason
from driftwarden.monitor import metrics
from driftwarden.monitor.exit_codes import EXIT_CANNOT_PUBLISH, EXIT_OUT_OF_ORDER
from driftwarden.monitor.state import (
    Admission,
    Checkpoint,
    CheckpointLine,
    CheckpointRefused,
    OffsetLedger,
    check_within_log,
    partition_of_key,
)
from driftwarden.settings import CHECKPOINT_MAX_BYTES, Settings

log = logging.getLogger(__name__)
#: Longest a SIGTERM waits for a clean stop (revoke checkpoint included) before the worker exits anyway:
#: nothing uncheckpointed was committed, so a restart replays it (what a broker outage makes likely).
SHUTDOWN_TIMEOUT_S = 20.0

#: The state of a partition that holds sharded models (:meth:`MonitorService._export`); others hold the core's.
PARTITION_STATE = "driftwarden-partition-state"
PARTITION_STATE_VERSION = 1
PARTITION_STATE_MARK = f'"format":"{PARTITION_STATE}"'.encode()

#: Checkpoints are spaced at least this many times their own duration apart.
CHECKPOINT_TIME_SHARE_INVERSE = 10


def profile_loader(profiles_dir: Path | None) -> ProfileLoader | None:
    """Reference profiles from ``PROFILES_DIR/<model_id>/<model_version>.json`` when present."""
    if profiles_dir is None:
        return None

    def load(model_id: str, model_version: str) -> ReferenceProfile | None:
        path = profiles_dir / model_id / f"{model_version}.json"
        return read_profile(path) if path.is_file() else None

    return load


class MonitorService:
    """Wires one Faust app to the monitor core."""

    def __init__(self, settings: Settings, config: MonitoringConfig | None = None) -> None:
        self.settings = settings
        self.core = Monitor(config, load_profile=profile_loader(settings.profiles_dir))
        self.sharded = ShardedModels(config or MonitoringConfig(), profile_loader(settings.profiles_dir) or _no_profile,
                                     settings.monitor_group)  # fmt: skip
        self.topics = topics = settings.topics
        self.app = create_faust_app(
            settings.monitor_group, settings, settings.auto_offset_reset, producer_max_request_size=CHECKPOINT_MAX_BYTES
        )
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        # acks=False: Faust never commits these topics; the checkpoint line commits them (monitor/state.py).
        # The window summaries are an input as well, co-partitioned with the others (same partition count,
        # same subscribers): a partition's checkpoint holds its shard counts and its models' owners.
        self.input_topics = (topics.predictions, topics.labels, topics.window_summaries)
        self.inputs = self.app.topic(*self.input_topics, partitions=settings.partitions, acks=False, **raw)
        self.alerts = self.app.topic(topics.alerts, **raw)
        self.commands = self.app.topic(topics.retrain_commands, **raw)
        self.dead_letters = self.app.topic(topics.dead_letters, **raw)
        self.status = self.app.topic(topics.monitor_status, **raw)
        self.state = self.app.topic(topics.monitor_state, **raw)
        self.summaries = self.app.topic(topics.window_summaries, **raw)
        self.partition_models: dict[int, set[str]] = {}
        self.ledger = OffsetLedger()
        self.line = CheckpointLine(self._write_checkpoints, self._commit)
        self.owned: set[int] = set()  # partitions assigned to this worker (none during a rebalance)
        self.summary_partitions: set[int] = set()  # of them, those of the window-summaries topic
        self.initialized: set[int] = set()
        self.dirty: set[int] = set()
        self.changed_models: set[str] = set()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"  # named in every status it publishes
        self.last_checkpoint = time.monotonic()
        self.checkpoint_due_s = settings.checkpoint_interval_s
        self._checkpoints: dict[int, bytes] | None = None
        self._input_watermarks: dict[tuple[str, int], tuple[int, int]] = {}
        self.series = metrics.ModelSeries()
        self.inputs_seen: TallyCounter[tuple[str, ...]] = TallyCounter()  # (model_id[, model_version]) -> events
        self._lock = asyncio.Lock()
        self.app.agent(self.inputs, name="monitor")(self.consume)
        self.app.timer(settings.status_interval_s, name="monitor-status")(self.publish_status)
        self.app.timer(1.0, name="monitor-checkpoint")(self.checkpoint_when_quiet)
        self.app.timer(1.0, name="shard-owners")(self.decide_idle)
        on_rebalance(self.app.on_partitions_revoked, self.on_partitions_revoked)
        on_rebalance(self.app.on_partitions_assigned, self.on_partitions_assigned)
        on_stop(self.app, self.on_stop)

    # -- the agent ---------------------------------------------------------------------------------

    async def consume(self, stream: faust.StreamT) -> AsyncIterator[None]:
        async for batch in take_events(stream):
            async with self._lock:
                with metrics.BATCH_SECONDS.time():
                    try:
                        await self.process(batch)
                    except DriftwardenError as exc:  # something an operator fixes (a profile file): replay after
                        log.error("a batch of %d messages dead-lettered: %s", len(batch), exc)
                        await self._dead_letter_batch(batch, str(exc))
                    except Exception as exc:  # a bug in our code must not lose the batch: keep it whole
                        log.exception("processing a batch of %d messages failed; dead-lettering it", len(batch))
                        await self._dead_letter_batch(batch, f"internal error: {exc!r}")
                await self._checkpoint_if_due()
            yield None

    async def checkpoint_when_quiet(self) -> None:
        """When the input pauses, its last batches are still checkpointed (and so committed) once due."""
        async with self._lock:
            await self._checkpoint_if_due()

    async def _checkpoint_if_due(self) -> None:
        if self.dirty and not self.line.busy and time.monotonic() - self.last_checkpoint >= self.checkpoint_due_s:
            await self.checkpoint(wait=False)

    async def process(self, batch: Sequence[EventT]) -> None:
        """Decode, detect, publish; status counters move only once everything is acknowledged."""
        pending: list[Awaitable[Any]] = []
        outputs = Outputs()
        now = time.time()
        self.inputs_seen.clear()  # what a failed batch saw is not counted
        labels_topic, summaries_topic = self.topics.labels, self.topics.window_summaries
        predictions: list[PredictionEvent | PredictionColumns] = []
        singles: list[Any] = []  # single-event prediction messages: decoded together (a model's as one batch)
        labels: list[LabelEvent] = []
        for event in batch:
            message = event.message
            if not await self._accept(message):
                continue
            if message.topic == summaries_topic:
                pending += await self._own(message, now)
                continue
            if (reason := undecodable_reason(message)) is not None:  # its batch cannot be decoded: by coordinates
                pending.append(await self._send_dead_letter(message, Rejection(reason, b"")))
                self._track(message.partition, [], message.key)
                continue
            if message.topic == labels_topic:
                decoded_labels = LABELS.decode(message.value)
                for rejection in decoded_labels.rejections:
                    pending.append(await self._send_dead_letter(message, rejection))
                self._track(message.partition, decoded_labels.events, message.key)
                self.inputs_seen.update((e.model_id,) for e in decoded_labels.events)
                labels += decoded_labels.events
                continue
            shard = shard_of_key(message.key, self.sharded.shards_of)  # (a shard summarizes events: rows stay rows)
            if shard is None and PREDICTIONS.single(message.value):
                singles.append(message)
                continue
            predictions += await self._singles(singles, now, pending)  # (before this message: in stream order)
            singles = []
            predictions += await self._prediction(message, shard, now, pending)
        predictions += await self._singles(singles, now, pending)
        if predictions or labels:
            outputs += await self.observe(predictions, labels, now)
        self.inputs_seen.update(outputs.processed)  # fed to the detectors: no duplicates, no refused event times
        for alert in outputs.alerts:
            pending.append(await self._send_alert(alert))
        for command in outputs.commands:
            pending.append(await self.commands.send(key=command.model_id.encode(), value=command.to_json()))
            self.series.count(metrics.RETRAIN_COMMANDS, (command.model_id, command.model_version))
            log.warning("RETRAIN %s v%s: %s", command.model_id, command.model_version, command.idempotency_key)
        await asyncio.gather(*pending)
        self._observe_metrics(batch)

    async def _prediction(
        self, message: Any, shard: tuple[str, int] | None, now: float, pending: list[Awaitable[Any]]
    ) -> list[PredictionEvent | PredictionColumns]:
        """A prediction message's events or columnar batches for the core; its refusals dead-lettered (``pending``)."""
        decoded = PREDICTIONS.decode(message.value, rows_as_columns=shard is None)
        for rejection in decoded.rejections:
            pending.append(await self._send_dead_letter(message, rejection))
        items: list[PredictionEvent | PredictionColumns] = [*decoded.events, *decoded.columns]
        self._track(message.partition, items, message.key)
        if shard is not None:
            pending += await self._summarize(message, shard, decoded.events)
            if decoded.columns:  # not counted on the sharded path yet: kept whole, with the reason
                reason = "a columnar batch of a sharded model (not supported yet: send prediction-batch.v1)"
                pending.append(await self._send_dead_letter(message, Rejection(reason, message.value or b"")))
            return []
        accepted, rejected = self.core.screen(items, now)
        for refused in rejected:  # an implausible event time: dead-lettered with the reason
            pending.append(await self._send_dead_letter(message, Rejection(refused.reason, refused.event.to_json())))
        return accepted

    async def _singles(
        self, messages: list[Any], now: float, pending: list[Awaitable[Any]]
    ) -> list[PredictionEvent | PredictionColumns]:
        """Single-event prediction messages (of unsharded models), each partition's and key's as one columnar batch
        when all are valid and alike (``Decoder.singles_as_columns``: about half the CPU of each message decoded
        alone, docs/benchmarks.md), else message by message (:meth:`_prediction`): the same rows, refusals and
        dead letters either way."""
        runs: dict[tuple[int, bytes | None], list[Any]] = {}
        for message in messages:
            runs.setdefault((message.partition, message.key), []).append(message)
        predictions: list[PredictionEvent | PredictionColumns] = []
        for (partition, key), run in runs.items():
            columns = PREDICTIONS.singles_as_columns([message.value for message in run])
            if columns is None:
                for message in run:
                    predictions += await self._prediction(message, None, now, pending)
                continue
            self._track(partition, [columns], key)
            accepted, rejected = self.core.screen([columns], now)
            for refused in rejected:  # an implausible event time: its message dead-lettered with the reason
                assert refused.row is not None  # (a columnar batch's refusals name their rows)
                letter = Rejection(refused.reason, refused.event.to_json())  # (as one by one)
                pending.append(await self._send_dead_letter(run[refused.row], letter))
            predictions += accepted
        return predictions

    async def observe(
        self, predictions: list[PredictionEvent | PredictionColumns], labels: list[LabelEvent], now: float
    ) -> Outputs:
        """A batch's predictions, then its labels, into the core: in a thread unless it takes only a moment
        (:meth:`~driftwarden.core.monitor.Monitor.quick`). A window can take seconds (an MMD test's first window
        computes its reference's kernel spectrum, 3-8 s), and a catch-up batch's labels a second, which must not
        stall the event loop (the consumer's heartbeats, the timers). A quick batch (single events of a model past
        its reference: a few ms) runs on the loop: in a thread, Faust's fetch loop ran beside it at a higher cost
        per message, and single events went at 0.6-0.7 of the rate (docs/benchmarks.md, "Single events: the core
        on the event loop").

        Each topic in its own order: Kafka orders no two topics, so this is one of the interleavings a
        consumer may see, and it keeps a model's predictions in one detector update however its labels
        interleave (docs/detectors.md, "Order within a batch"). Called under ``_lock``, as everything that
        touches the core: the core stays synchronous and single-threaded."""

        def both() -> Outputs:
            outputs = self.core.observe(predictions, now)
            outputs += self.core.observe_labels(labels, now)
            return outputs

        if self.core.quick(predictions, len(labels)):
            return both()  # a moment's work (a batch of single events): on the loop, where it costs less
        return await asyncio.to_thread(both)

    def _track(self, partition: int, events: Sequence[KeyedEvent | PredictionColumns], key: bytes | None) -> None:
        if events:
            models = {e.model_id for e in events}
        else:
            model_id = self._model_of_key(key)
            models = {model_id} if model_id else set()
        self.partition_models.setdefault(partition, set()).update(models)
        self.changed_models |= models
        self.dirty.add(partition)

    def _observe_metrics(self, batch: Sequence[EventT]) -> None:
        last_offsets = {(m.topic, m.partition): m.offset for m in (e.message for e in batch)}
        for tp, offset in ((TP(*key), offset) for key, offset in last_offsets.items()):  # once per partition
            highwater = self.app.consumer.highwater(tp) if self.app.consumer else None
            if highwater is not None:
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, highwater - offset - 1))
        metrics.FETCH_BUFFER.set(self.app.fetch_budget.held)
        seen, self.inputs_seen = self.inputs_seen, TallyCounter()
        for labels, n in seen.items():
            self.series.count(metrics.LABELS_RECEIVED if len(labels) == 1 else metrics.EVENTS_PROCESSED, labels, n)
        for model_id in self.changed_models:
            state = self.core.models.get(model_id)
            if state is not None:
                metrics.export_model(self.series, model_id, state)

    # -- offsets and checkpoints (the protocol itself is driftwarden.monitor.state) ------------------

    async def _accept(self, message: Any) -> bool:
        """Whether to process a message: its partition is ours and its state does not include it yet."""
        partition = message.partition
        if partition not in self.owned:
            return False  # fetched before a rebalance took the partition away: its owner reads it from a checkpoint
        if partition not in self.initialized:
            await self._initialize(partition)
        admission = self.ledger.admit(message.topic, partition, message.offset)
        if admission is Admission.COVERED:
            expected = self.ledger.expected(message.topic, partition) or 0
            highwater = self.app.consumer.highwater(TP(message.topic, partition))
            if highwater is not None and expected > highwater:
                self._drop_foreign_state(partition, f"{message.topic}: state covers up to {expected}, log ends at "
                                                    f"{highwater}")  # fmt: skip
                return await self._accept(message)
            return False
        if admission is Admission.GAP:
            await self._skip_missing_offsets(message)
        return True

    async def _skip_missing_offsets(self, message: Any) -> None:
        """A message beyond the next expected offset: go on only if the offsets in between hold no record,
        because retention deleted them or the log has a hole there (the first record a fetch from the
        expected offset finds is this message). Otherwise they are on the topic but were not delivered in
        order; processing on would lose them, and seeking back does not work under Faust: exit without
        committing anything more, and the restarted worker replays from the last checkpoint."""
        tp = TP(message.topic, message.partition)
        expected = self.ledger.expected(tp.topic, tp.partition) or 0
        low = (await self.app.consumer.earliest_offsets(tp)).get(tp)
        if low is not None and low > expected:
            self._resume_after_gap(message, f"offsets {expected}..{low - 1} were deleted (retention) before this "
                                            "worker read them")  # fmt: skip
            return
        try:
            next_record = await next_record_offset(self.settings, tp.topic, tp.partition, expected)
        except Exception:  # the broker did not answer: no hole proven, so exit and replay as for any gap
            log.exception("%s/%d: cannot read offset %d to tell a hole in the log", tp.topic, tp.partition, expected)
            next_record = None
        if next_record == message.offset:
            self._resume_after_gap(message, f"offsets {expected}..{message.offset - 1} hold no record (a hole in "
                                            "the log)")  # fmt: skip
            return
        log.critical("%s/%d: offset %d delivered while %d..%d are still on the topic (out of order); exiting "
                     "without committing: a restart replays from the last checkpoint",
                     tp.topic, tp.partition, message.offset, expected, message.offset - 1)  # fmt: skip
        logging.shutdown()
        os._exit(EXIT_OUT_OF_ORDER)

    def _resume_after_gap(self, message: Any, reason: str) -> None:
        """Admit ``message`` after offsets no worker can read: nothing there is lost by going on."""
        metrics.OFFSET_GAPS.labels(message.topic).inc()
        log.warning("%s/%d: %s; continuing", message.topic, message.partition, reason)
        self.ledger.resume_at(message.topic, message.partition, message.offset)
        self.ledger.admit(message.topic, message.partition, message.offset)

    async def _initialize(self, partition: int) -> None:
        """Restore the partition's latest checkpoint, if any and valid, before its first message."""
        self.initialized.add(partition)
        if self._checkpoints is None:
            self._checkpoints = await self._read_checkpoints()
        raw = self._checkpoints.get(partition)
        # First sight of this partition: checkpoint after this batch (not 0.0: the monotonic clock starts
        # near 0 at boot, and 0.0 postponed a first checkpoint by up to an interval, an hour in test_restart).
        self.last_checkpoint = -math.inf
        if raw is None:
            log.info("partition %d: no checkpoint; starting where the group's consumer starts", partition)
            return
        try:
            checkpoint = Checkpoint.decode(raw, self.settings.monitor_group, partition)
            check_within_log(checkpoint.offsets, self._marks_of(partition, self._input_watermarks))
            models = self._restore(partition, checkpoint.state)
        except CheckpointRefused as refused:
            self._refuse(partition, refused)
            return
        except Exception as exc:  # the payload passed its checksum but is not a state this core reads
            self._refuse(partition, CheckpointRefused("payload", repr(exc)))
            return
        self.ledger.start(partition, checkpoint.offsets)
        self.partition_models[partition] = set(models)
        self.changed_models |= set(models)
        log.info("partition %d: restored %d models, offsets %s", partition, len(models), dict(checkpoint.offsets))

    async def _read_checkpoints(self) -> dict[int, bytes]:
        """The newest checkpoint of each partition, then the watermarks of the inputs (read after the
        checkpoints, so that every checkpoint read lies within them when it belongs to this log)."""
        checkpoints: dict[int, bytes] = {}
        async for record in read_topic(self.settings, self.topics.monitor_state, max_record_bytes=CHECKPOINT_MAX_BYTES):
            partition = partition_of_key(record.key, self.settings.monitor_group)
            if partition is not None and record.value is not None:
                checkpoints[partition] = record.value
        # (the window summaries only where assigned: a deployment without sharded models may lack the topic)
        inputs = [(t, p) for t in (self.topics.predictions, self.topics.labels) for p in sorted(checkpoints)]
        inputs += [(self.topics.window_summaries, p) for p in sorted(checkpoints.keys() & self.summary_partitions)]
        self._input_watermarks = await watermarks(self.settings, inputs) if inputs else {}
        return checkpoints

    @staticmethod
    def _marks_of(partition: int, marks: dict[tuple[str, int], tuple[int, int]]) -> dict[str, tuple[int, int]]:
        return {topic: pair for (topic, p), pair in marks.items() if p == partition}

    def _refuse(self, partition: int, refused: CheckpointRefused) -> None:
        metrics.CHECKPOINTS_REFUSED.labels(refused.reason).inc()
        log.error("partition %d: checkpoint REFUSED (%s); this state is neither restored nor saved: the partition "
                  "starts from scratch where the group's consumer starts it (committed offsets, or earliest)",
                  partition, refused)  # fmt: skip

    def _drop_foreign_state(self, partition: int, detail: str) -> None:
        """State of another incarnation of the log (e.g. the broker restarted empty): never save it."""
        self._refuse(partition, CheckpointRefused("foreign_log", detail))
        models = self.partition_models.pop(partition, set())
        self.core.forget(models)
        self.series.forget(models)
        self.sharded.forget({partition})
        self.ledger.forget({partition})
        self.dirty.discard(partition)

    async def checkpoint(self, partitions: set[int] | None = None, wait: bool = True) -> None:
        """Snapshot the (changed) partitions' state with the offsets it covers and hand it to the
        checkpoint line, which compresses, writes and then commits it; ``wait=False`` goes on meanwhile.
        Called under ``_lock``: the export runs in a thread (tenths of a second for many busy models), the
        event loop meanwhile serving heartbeats and timers, and no batch touches the core."""
        started = time.monotonic()
        chosen = sorted(self.dirty if partitions is None else self.dirty & partitions)
        group = self.settings.monitor_group
        states = await asyncio.to_thread(lambda: [self._export(p) for p in chosen])
        snapshots = [Checkpoint(group, p, self.ledger.covered(p), s) for p, s in zip(chosen, states, strict=True)]
        self.dirty -= set(chosen)
        self.last_checkpoint = started
        done = self.line.submit(snapshots)
        done.add_done_callback(lambda future: self._after_checkpoint(future, set(chosen), started))
        if wait:
            await done

    def _after_checkpoint(self, done: asyncio.Future[bool], partitions: set[int], started: float) -> None:
        if done.cancelled() or not done.result():  # still ours: save again next time
            self.dirty |= {p for p in partitions if p in self.partition_models}
            return
        # A large state (e.g. many predictions waiting for labels) is saved less often, so that
        # checkpoints take at most about a tenth of the worker's time.
        self.checkpoint_due_s = max(
            self.settings.checkpoint_interval_s, CHECKPOINT_TIME_SHARE_INVERSE * (time.monotonic() - started)
        )

    async def _write_checkpoints(self, encoded: list[tuple[bytes, bytes]]) -> None:
        pending = [await self.state.send(key=key, value=value) for key, value in encoded]
        await asyncio.gather(*pending)
        if encoded:
            metrics.CHECKPOINT_BYTES.set(len(encoded[-1][1]))

    async def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        if not await commit_offsets(self.app, offsets):
            log.info("offsets %s not committed (rebalanced meanwhile); the checkpoint covers them", offsets)

    async def on_partitions_assigned(self, assigned: set[TP]) -> None:
        self.owned = {tp.partition for tp in assigned if tp.topic in self.input_topics}
        self.summary_partitions = {tp.partition for tp in assigned if tp.topic == self.topics.window_summaries}
        log.info("partitions assigned: %s", sorted(self.owned))

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        await self._release({tp.partition for tp in revoked if tp.topic in self.input_topics})

    async def on_stop(self) -> None:
        """A stop (SIGTERM) releases every partition as a revoke would, so the next owner replays nothing."""
        log.info("stopping: saving and releasing partitions %s", sorted(self.owned))
        await self._release(set(self.owned))

    async def _release(self, partitions: set[int]) -> None:
        """Save what we have of these partitions (unless it belongs to another incarnation of the
        log), then forget it: the next owner restores it."""
        self.owned -= partitions  # from now on, batches fetched before the rebalance are dropped
        async with self._lock:
            try:
                # Every revoked state, saved or not: one of another log is refused loudly, not forgotten quietly.
                await self._drop_states_of_other_logs(partitions & self.initialized)
                await self.checkpoint(partitions)
                await self.line.drain()
            except Exception:
                log.exception("saving partitions %s failed: their next owner replays from the previous checkpoint",
                              sorted(partitions))  # fmt: skip
            for partition in partitions:
                models = self.partition_models.pop(partition, set())
                self.core.forget(models)
                self.series.forget(models)
                self.initialized.discard(partition)
                for topic in self.input_topics:
                    metrics.CONSUMER_LAG.remove(topic, str(partition))
            self.sharded.forget(partitions)
            self.ledger.forget(partitions)
            self._checkpoints = None

    async def _drop_states_of_other_logs(self, partitions: set[int]) -> None:
        """Compare the revoked states with fresh watermarks of the inputs (a revoke follows
        e.g. a broker restart; the fetch positions seen before it may be from the previous log)."""
        inputs = [(topic, p) for p in sorted(partitions) for topic in self.ledger.covered(p)]
        # Only the high-water mark: a live state behind the low-water mark lost events to retention
        # (logged as a gap when it reads on), it does not belong to another log.
        marks = await watermarks(self.settings, inputs) if inputs else {}
        current = {tp: (0, high) for tp, (_, high) in marks.items()}
        for partition in sorted(partitions):
            try:
                check_within_log(self.ledger.covered(partition), self._marks_of(partition, current))
            except CheckpointRefused as refused:
                self._drop_foreign_state(partition, refused.detail)

    # -- dead letters and status ---------------------------------------------------------------------

    async def _send_alert(self, alert: Alert) -> Awaitable[Any]:
        self.series.count(metrics.ALERTS, (alert.model_id, alert.model_version, alert.kind, alert.severity,
                                           alert.state))  # fmt: skip
        log.warning("ALERT %s %s %s: %s", alert.state, alert.severity, alert.kind, alert.summary)
        return await self.alerts.send(key=alert.model_id.encode(), value=alert.to_json())

    # -- sharded models (driftwarden.core.sharded_models) ---------------------------------------------

    async def _summarize(self, message: Any, shard: tuple[str, int], events: list[PredictionEvent]
                         ) -> list[Awaitable[Any]]:  # fmt: skip
        """One message of a shard of a sharded model counted; the summaries of the buckets it closes, sent
        (keyed by the model: its owner reads them)."""
        model_id, index = shard
        mine = [e for e in events if e.model_id == model_id]
        self.inputs_seen.update((e.model_id, e.model_version) for e in mine)
        summaries = self.sharded.summarize(message.topic, message.partition, message.offset, model_id, index, mine)
        return [await self.summaries.send(key=model_id.encode(), value=summary.to_json()) for summary in summaries]

    async def _own(self, message: Any, now: float) -> list[Awaitable[Any]]:
        """A window summary into its model's owner; the alerts its decisions fire, sent (acknowledged before
        the summary counts as done, as for every input)."""
        self.dirty.add(message.partition)
        value = message.value or b""
        try:  # (a summary another build cannot read)
            summary = WindowSummary.model_validate_json(value)
        except ValueError as exc:  # its stream unknown: the gap it leaves is given up (SummaryMerger)
            return [await self._send_dead_letter(message, Rejection(f"not a window summary: {exc}", value))]
        try:  # (e.g. of another shard count after a config change)
            alerts = self.sharded.merge(message.partition, summary, now)
        except ValueError as exc:  # its owner moves past it: what follows in its stream is not held
            self.sharded.skip(message.partition, summary, now)
            return [await self._send_dead_letter(message, Rejection(f"a window summary refused: {exc}", value))]
        return [await self._send_alert(alert) for alert in alerts]

    async def decide_idle(self) -> None:
        """Decisions no silent shard holds back any more (``shard_idle_s``), and their alerts."""
        async with self._lock:
            alerts, changed = self.sharded.decide_idle(time.time())
            self.dirty |= changed
            await asyncio.gather(*[await self._send_alert(alert) for alert in alerts])

    def _export(self, partition: int) -> bytes:
        """The state of a partition: the monitor core's, and (only when it has any) its sharded models'."""
        monitor = self.core.export(self.partition_models.get(partition, set()))
        sharded = self.sharded.export(partition)
        if sharded is None:  # the unsharded path: the core's state as ever
            return monitor
        return encode(PARTITION_STATE, PARTITION_STATE_VERSION, {"monitor": orjson.loads(monitor), "sharded": sharded})

    def _restore(self, partition: int, raw: bytes) -> list[str]:
        """Restore a state of :meth:`_export`; the monitor core's models in it."""
        if PARTITION_STATE_MARK not in raw[: len(PARTITION_STATE_MARK) + 16]:
            return self.core.restore(raw)
        state = decode(raw, PARTITION_STATE, PARTITION_STATE_VERSION)
        self.sharded.restore(partition, state.child("sharded"))
        try:
            return self.core.restore(orjson.dumps(state.raw("monitor")))
        except StateError:
            self.sharded.forget({partition})
            raise

    def _model_of_key(self, key: bytes | None) -> str:
        """The model a message belongs to, by its Kafka key: a model id, or a sharded model's
        ``model_id/shard`` ("" when the key is neither)."""
        if (shard := shard_of_key(key, self.sharded.shards_of)) is not None:
            return shard[0]
        text = key.decode("utf-8", "replace") if key else ""
        return text if is_model_id(text) else ""

    async def _send_dead_letter(self, message: Any, rejection: Rejection) -> Awaitable[Any]:
        letter = dead_letter(message, rejection.reason, rejection.payload, rejection.batch_index)
        model_id = self._model_of_key(message.key)
        self.series.count(metrics.DEAD_LETTERS, (model_id, message.topic))
        if model_id and message.key == model_id.encode() and message.topic != self.topics.window_summaries:
            self.core.count_dead_letters(model_id, 1)  # (the core holds no sharded model: its letters are metrics)
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
        # The owners move past the window summaries of the batch (a no-op for those merged before the error).
        now = time.time()
        for message in (e.message for e in batch if e.message.topic == self.topics.window_summaries):
            if message.partition in self.initialized:
                self.dirty.add(message.partition)
                with contextlib.suppress(ValueError):  # unreadable: its gap is given up (SummaryMerger)
                    self.sharded.skip(message.partition, WindowSummary.model_validate_json(message.value or b""), now)

    async def publish_status(self) -> None:
        """Publish the counters and rolling metrics of every model that changed since the last call."""
        async with self._lock:  # never in the middle of a batch: counts are whole batches, acknowledged
            changed, self.changed_models = self.changed_models, set()
            now = time.time()
            counters = [self.core.status(model_id, now) for model_id in sorted(changed) if model_id in self.core.models]
            for status in (c.published(self.settings.monitor_group, self.worker_id)
                           for c in counters + self.sharded.statuses(now)):  # fmt: skip
                await self.status.send(key=status_key(status.model_id, status.group).encode(), value=status.to_json())
            for (model_id, version), merger in self.sharded.mergers():
                outcomes = {"duplicate": merger.duplicates, "late": merger.late_summaries,
                            "skipped": merger.skipped, "missing": merger.missing}  # fmt: skip
                for outcome, total in outcomes.items():
                    self.series.advance(metrics.SHARD_SUMMARIES, (model_id, version, outcome), total)


def _no_profile(model_id: str, model_version: str) -> None:
    """Without --profiles-dir a sharded model has no reference: its events are counted, not monitored."""
    return None


def tune_garbage_collector() -> None:
    """Collect less often. The worker allocates many short-lived objects per event while holding many
    long-lived ones (detector state); default thresholds make full collections a third of its time."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def run_worker(settings: Settings) -> None:
    """Run the monitor worker in the foreground until SIGINT/SIGTERM."""
    config = MonitoringConfig.from_file(settings.monitor_config) if settings.monitor_config else None
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    if settings.auto_offset_reset == "latest":
        inputs = [settings.topics.predictions, settings.topics.labels, settings.topics.window_summaries]
        started = asyncio.run(start_new_group_at_end(settings, settings.monitor_group, inputs))
        if started:
            log.info("new group %s starts at the end of its inputs: %s", settings.monitor_group, started)
    service = MonitorService(settings, config)
    watch_broker(service.app, settings, "monitor", SHUTDOWN_TIMEOUT_S)
    tune_garbage_collector()
    worker = faust.Worker(service.app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
