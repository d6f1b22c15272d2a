"""What the person on call reads: alerts from a point in time, the latest status of every model, lag.

``--since`` seeks each partition of the alerts topic to the first record at or after that time with
Kafka's ListOffsets-by-timestamp (aiokafka ``offsets_for_times``) instead of scanning the topic from
the start; a partition with nothing that recent is skipped. The embedded broker (Tansu 0.6) answers
these requests, ``tests/integration/test_oncall.py`` proves it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from driftwarden.core.events import Alert, MonitorStatus, MonitorStatusV1, format_alert, read_status
from driftwarden.kafka.clients import client_options
from driftwarden.kafka.reader import read_topic
from driftwarden.notify.delivery import OpenAlerts
from driftwarden.settings import Settings


def since_timestamp(text: str, now: float) -> float:
    """``--since``: seconds before ``now`` (``600``) or a point in time (``2026-01-01T03:12:00Z``).

    >>> since_timestamp("600", 1767225600.0), since_timestamp("2026-01-01T00:00:00Z", 1767225600.0)
    (1767225000.0, 1767225600.0)
    >>> since_timestamp("yesterday", 0.0)
    Traceback (most recent call last):
    ...
    ValueError: --since 'yesterday': give seconds (600) or an ISO-8601 time (2026-01-01T03:12:00Z)
    >>> since_timestamp("99999999999", 1767225600.0)
    Traceback (most recent call last):
    ...
    ValueError: --since '99999999999': a time between 1970 and now
    """
    problem = f"--since {text!r}: give seconds (600) or an ISO-8601 time (2026-01-01T03:12:00Z)"
    try:
        moment = now - float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(problem) from None
        moment = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    if not 0 <= moment <= now:  # (NaN, infinity, negative seconds, a time in the future or before 1970)
        raise ValueError(f"--since {text!r}: a time between 1970 and now")
    return moment


async def records_since(
    settings: Settings, topic: str, since_ts: float, *, follow: bool = False
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Records of ``topic`` produced at or after ``since_ts`` (unix seconds), read from offsets found by time."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=settings.fetch_max_wait_ms)  # fmt: skip
    try:
        await consumer.start()
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            raise LookupError(f"topic {topic!r} does not exist")
        since_ms = int(since_ts * 1000)
        found = await consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
        start = {tp: hit.offset for tp, hit in found.items() if hit is not None}
        if not start and not follow:
            return
        consumer.assign(partitions if follow else list(start))
        for tp in partitions:
            if tp in start:
                consumer.seek(tp, start[tp])
            elif follow:
                await consumer.seek_to_end(tp)
        async for record in _drain(consumer, list(start), since_ms, follow):
            yield record
    finally:
        await consumer.stop()


async def _drain(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], since_ms: int, follow: bool
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Records from the assigned positions; without ``follow`` up to the first high-water mark seen."""
    ends: dict[TopicPartition, int] = {}
    while True:
        fetched = await consumer.getmany(timeout_ms=200, max_records=5_000)
        for records in fetched.values():
            for record in records:
                if record.timestamp >= since_ms:
                    yield record
        if follow:
            continue
        for tp in partitions:
            if tp not in ends and (highwater := consumer.highwater(tp)) is not None:
                ends[tp] = highwater
        if len(ends) == len(partitions) and all([await consumer.position(tp) >= ends[tp] for tp in partitions]):
            return


#: How long ``driftwarden status`` waits to learn a partition's high-water mark.
HIGHWATER_PATIENCE_S = 5.0


async def monitor_lag(settings: Settings, model_ids: list[str], group: str) -> dict[str, int | None]:
    """Per model: predictions on its partition monitor group ``group`` has not committed yet (``None``: unknown).

    A model's partition is where the default (murmur2) partitioner puts its key. The high-water mark
    comes from a fetch (the embedded broker reports end offsets wrongly); committed offsets from
    ``committed()`` without joining the group.
    """
    topic = settings.topics.predictions
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=group,
                                enable_auto_commit=False, max_partition_fetch_bytes=1024,
                                fetch_max_wait_ms=settings.fetch_max_wait_ms)  # fmt: skip
    try:
        await consumer.start()
        numbers = sorted(consumer.partitions_for_topic(topic) or ())
        partitions = [TopicPartition(topic, p) for p in numbers]
        consumer.assign(partitions)
        committed = {tp: await consumer.committed(tp) or 0 for tp in partitions}
        for tp in partitions:
            consumer.seek(tp, max(0, committed[tp] - 1))  # a record to fetch, so the fetch reports the mark
        deadline = asyncio.get_running_loop().time() + HIGHWATER_PATIENCE_S
        while any(consumer.highwater(tp) is None for tp in partitions) and asyncio.get_running_loop().time() < deadline:
            await consumer.getmany(timeout_ms=200, max_records=len(partitions))
        lag = {tp.partition: _behind(consumer.highwater(tp), committed[tp]) for tp in partitions}
    finally:
        await consumer.stop()
    partitioner = DefaultPartitioner()
    return {m: lag.get(partitioner(m.encode(), numbers, numbers)) if numbers else None for m in model_ids}


def _behind(highwater: int | None, committed: int) -> int | None:
    return None if highwater is None else max(0, highwater - committed)


@dataclass
class ModelOverview:
    """What ``driftwarden status`` shows for one model as one monitor group sees it."""

    status: MonitorStatusV1
    open_alerts: list[Alert] = field(default_factory=list)
    lag: int | None = None

    def as_text(self) -> str:
        """A header line of counters, then one line per open alert."""
        s = self.status
        group = f"{s.group} ({s.worker})" if isinstance(s, MonitorStatus) else "? (a v1 status names none)"
        parts = [f"{s.model_id} v{s.model_version or '?'}", f"group {group}",
                 f"processed {s.events_processed:,}", f"dead-lettered {s.events_dead_lettered:,}",
                 f"alerts fired {s.alerts_fired:,} ({len(self.open_alerts)} open)"]  # fmt: skip
        if s.labels_received is not None:
            parts.append(f"labels {s.labels_received:,}")
        for name, value in sorted((s.performance or {}).items()):
            parts.append(f"{name} {'n/a' if value is None else f'{value:.4g}'}")
        if s.label_joins:
            parts.append("joins " + " ".join(f"{k}={v:,}" for k, v in sorted(s.label_joins.items())))
        parts.append(f"lag {'?' if self.lag is None else f'{self.lag:,}'}")
        parts.append(f"as of {datetime.fromtimestamp(s.ts, UTC):%Y-%m-%dT%H:%M:%SZ}")
        return "\n".join(["  ".join(parts), *(f"  open: {format_alert(a)}" for a in self.open_alerts)])

    def as_dict(self) -> dict[str, object]:
        return {
            "group": self.status.published_by,
            **self.status.model_dump(exclude_none=True, exclude={"schema_"}),
            "lag": self.lag,
            "open_alerts": [a.model_dump(exclude_none=True) for a in self.open_alerts],
        }


async def overview(settings: Settings, model_id: str | None = None, group: str | None = None) -> list[ModelOverview]:
    """The latest status of every model (or one) of every monitor group (or one) with the model's open alerts,
    ordered by model id and group."""
    statuses, book = await asyncio.gather(_latest_statuses(settings), open_alerts_on_topic(settings))
    models = {(m, g): ModelOverview(s) for (m, g), s in statuses.items()
              if model_id in (None, m) and group in (None, g)}  # fmt: skip
    for alert in book.firing.values():
        for (m, _), model in models.items():
            if m == alert.model_id:
                model.open_alerts.append(alert)
    groups = sorted({g for _, g in models if g is not None})
    lags = await asyncio.gather(*(monitor_lag(settings, [m for m, of in models if of == g], g) for g in groups))
    for g, of_group in zip(groups, lags, strict=True):
        for m, lag in of_group.items():
            models[m, g].lag = lag
    return [models[key] for key in sorted(models, key=lambda key: (key[0], key[1] or ""))]


def keep_latest(latest: dict[tuple[str, str | None], MonitorStatusV1], status: MonitorStatusV1) -> None:
    """Keep ``status`` as the latest of its model and monitor group. A model's v1 status (from before
    statuses named their group, so from before the upgrade) is dropped at its first v2 status.

    >>> from driftwarden.core.events import MonitorStatusV1
    >>> latest = {}
    >>> old = MonitorStatusV1(model_id="fraud", ts=1.0, events_processed=5, events_dead_lettered=0, alerts_fired=0)
    >>> keep_latest(latest, old)
    >>> keep_latest(latest, old.published("canary", "host:7"))
    >>> keep_latest(latest, old.published("driftwarden-monitor", "host:8"))
    >>> sorted(latest)
    [('fraud', 'canary'), ('fraud', 'driftwarden-monitor')]
    """
    if status.published_by is not None:
        latest.pop((status.model_id, None), None)
    latest[status.model_id, status.published_by] = status


async def _latest_statuses(settings: Settings) -> dict[tuple[str, str | None], MonitorStatusV1]:
    latest: dict[tuple[str, str | None], MonitorStatusV1] = {}
    async for record in read_topic(settings, settings.topics.monitor_status):
        keep_latest(latest, read_status(record.value or b""))
    return latest


async def open_alerts_on_topic(settings: Settings) -> OpenAlerts:
    """The alerts firing now, from the whole alerts topic (malformed records are skipped)."""
    book = OpenAlerts()
    async for record in read_topic(settings, settings.topics.alerts):
        try:
            book.observe(Alert.model_validate_json(record.value or b""))
        except ValidationError:
            continue
    return book
