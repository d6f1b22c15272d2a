"""The monitor worker: predictions topic -> :class:`driftwarden.core.monitor.Monitor` -> alerts topic.

Thin by design. Per batch of Kafka messages it decodes (bad input goes to the dead-letter topic with
the reason and the original bytes), feeds the core, publishes alerts, and waits until everything it
published is acknowledged by the broker before the batch is acknowledged: at-least-once, nothing lost.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections import Counter as Tally
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any

import faust
from faust.types import EventT

from driftwarden.config import Settings
from driftwarden.core.decoding import PREDICTIONS, Rejection
from driftwarden.core.events import DeadLetter, MonitorStatus, is_model_id
from driftwarden.core.monitor import Monitor, MonitorConfig
from driftwarden.kafka.faust_app import create_faust_app
from driftwarden.monitor import metrics

log = logging.getLogger(__name__)

#: Exit code when even the dead-letter topic cannot be written: exit without committing offsets.
EXIT_CANNOT_PUBLISH = 75


class MonitorService:
    """Wires one Faust app to the monitor core."""

    def __init__(
        self,
        settings: Settings,
        config: MonitorConfig | None = None,
        batch_max: int = 500,
        batch_within_s: float = 0.05,
        status_interval_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.core = Monitor(config)
        self.batch_max = batch_max
        self.batch_within_s = batch_within_s
        topics = settings.topics
        self.app = create_faust_app(settings.monitor_group, settings)
        raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
        self.predictions = self.app.topic(topics.predictions, partitions=settings.partitions, **raw)
        self.alerts = self.app.topic(topics.alerts, **raw)
        self.dead_letters = self.app.topic(topics.dead_letters, **raw)
        self.status = self.app.topic(topics.monitor_status, **raw)
        self.processed: Tally[str] = Tally()
        self.dead_lettered: Tally[str] = Tally()
        self.alerts_fired: Tally[str] = Tally()
        self._changed: set[str] = set()
        self.app.agent(self.predictions, name="monitor-predictions")(self.consume)
        self.app.timer(status_interval_s, name="monitor-status")(self.publish_status)

    async def consume(self, stream: faust.StreamT) -> AsyncIterator[None]:
        async for batch in stream.take_events(self.batch_max, within=self.batch_within_s):
            with metrics.BATCH_SECONDS.time():
                try:
                    await self.process(batch)
                except Exception as exc:  # a bug in our code must not lose the batch: keep it whole
                    log.exception("processing a batch of %d messages failed; dead-lettering it", len(batch))
                    await self._dead_letter_batch(batch, f"internal error: {exc!r}")
            yield None

    async def process(self, batch: Sequence[EventT]) -> None:
        """Decode, detect, publish; counters move only once everything published is acknowledged."""
        pending: list[Awaitable[Any]] = []
        events = []
        dead_by_model: Tally[str] = Tally()
        for event in batch:
            message = event.message
            decoded = PREDICTIONS.decode(message.value)
            events.extend(decoded.events)
            for rejection in decoded.rejections:
                pending.append(await self._send_dead_letter(message, rejection))
                dead_by_model[self._model_of_key(message.key)] += 1
        alerts = self.core.observe(events, now=time.time())
        for alert in alerts:
            pending.append(await self.alerts.send(key=alert.model_id.encode(), value=alert.to_json()))
            log.warning("ALERT %s %s: %s", alert.severity, alert.kind, alert.summary)
        await asyncio.gather(*pending)
        self._tally(self.processed, Tally(e.model_id for e in events))
        self._tally(self.dead_lettered, dead_by_model)
        self._tally(self.alerts_fired, Tally(a.model_id for a in alerts))
        for model_id, n in Tally(e.model_id for e in events).items():
            metrics.EVENTS_PROCESSED.labels(model_id).inc(n)
        for alert in alerts:
            metrics.ALERTS_FIRED.labels(alert.model_id, alert.kind, alert.severity).inc()

    @staticmethod
    def _model_of_key(key: bytes | None) -> str:
        """The model a message belongs to, by its Kafka key ("" when the key is not a model id)."""
        text = key.decode("utf-8", "replace") if key else ""
        return text if is_model_id(text) else ""

    def _tally(self, tally: Tally[str], counts: Tally[str]) -> None:
        for model_id, n in counts.items():
            if model_id:
                tally[model_id] += n
                self._changed.add(model_id)

    async def _send_dead_letter(self, message: Any, rejection: Rejection) -> Awaitable[Any]:
        key = message.key.decode("utf-8", "replace") if message.key else None
        letter = DeadLetter(
            ts=time.time(),
            source_topic=message.topic,
            source_partition=message.partition,
            source_offset=message.offset,
            batch_index=rejection.batch_index,
            key=key,
            reason=rejection.reason,
            payload_b64=base64.b64encode(rejection.payload).decode(),
        )
        metrics.EVENTS_DEAD_LETTERED.labels(message.topic).inc()
        return await self.dead_letters.send(key=message.key, value=letter.to_json())

    async def _dead_letter_batch(self, batch: Sequence[EventT], reason: str) -> None:
        try:
            pending = [
                await self._send_dead_letter(event.message, Rejection(reason, event.message.value or b""))
                for event in batch
            ]
            await asyncio.gather(*pending)
            self._tally(self.dead_lettered, Tally(self._model_of_key(e.message.key) for e in batch))
        except Exception:
            log.critical("cannot write to the dead-letter topic; exiting without committing offsets")
            logging.shutdown()
            os._exit(EXIT_CANNOT_PUBLISH)

    async def publish_status(self) -> None:
        """Publish cumulative counters of every model that changed since the last call."""
        changed, self._changed = self._changed, set()
        now = time.time()
        for model_id in sorted(changed):
            status = MonitorStatus(
                model_id=model_id,
                ts=now,
                events_processed=self.processed[model_id],
                events_dead_lettered=self.dead_lettered[model_id],
                alerts_fired=self.alerts_fired[model_id],
            )
            await self.status.send(key=model_id.encode(), value=status.to_json())


def run_worker(settings: Settings) -> None:
    """Run the monitor worker in the foreground until SIGINT/SIGTERM."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    service = MonitorService(settings)
    worker = faust.Worker(service.app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
