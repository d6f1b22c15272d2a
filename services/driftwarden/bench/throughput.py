"""``driftwarden bench throughput``: the monitor against the transport and framework ceilings.

In one run, on one embedded broker and the same pre-produced events (the stable 20-feature stream)
for each message size (1 event per message, batch envelopes, or columnar batches):

* (a) raw aiokafka consume + orjson decode: the transport ceiling;
* (b) an empty Faust agent reading in batches like the monitor: the framework ceiling;
* (c) the monitor worker with the default detector set.

Rates are events/s. The monitor's rate comes from its status topic (cumulative processed count and
time), measured from its first to its last report, so start-up and group joins are excluded.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from driftwarden.errors import DriftwardenError
from driftwarden.kafka.broker import EmbeddedBroker, free_port
from driftwarden.kafka.clients import client_options, ensure_topics
from driftwarden.monitor.status import status_history, wait_for_status
from driftwarden.processes import spawn, terminate_all
from driftwarden.settings import Settings
from driftwarden_load.producer import ScenarioProducer
from driftwarden_load.scenarios import Scenario


@dataclass(frozen=True)
class Rate:
    """The monitor's events/s; a lower bound (printed ``≥``) when it processed every event between two
    of its status reports, i.e. faster than the reports can time."""

    events_per_s: float
    lower_bound: bool = False

    def __str__(self) -> str:
        return f"{'≥' if self.lower_bound else ''}{self.events_per_s:,.0f}"


@dataclass
class ThroughputResult:
    batch_size: int
    events: int
    raw: float
    empty_faust: float
    monitor: Rate
    columnar: bool = False

    def as_row(self) -> str:
        size = f"{self.batch_size} columnar" if self.columnar else f"{self.batch_size}"
        cells = [size, f"{self.events:,}", f"{self.raw:,.0f}", f"{self.empty_faust:,.0f}", str(self.monitor)]
        monitor = self.monitor.events_per_s
        cells += [f"{monitor / self.raw:.2f}", f"{monitor / self.empty_faust:.2f}"]
        return "| " + " | ".join(cells) + " |"


async def _raw_rate(settings: Settings, messages: int) -> float:
    """Read every message of the predictions topic from the start and decode it; events/s."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=8 * 1024 * 1024)  # fmt: skip
    await consumer.start()
    try:
        topic = settings.topics.predictions
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen = events = 0
        started = time.perf_counter()
        while seen < messages:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                for record in records:
                    document = orjson.loads(record.value or b"")
                    ids = document.get("event_id")  # a columnar batch: one event id per row
                    events += len(document["events"]) if "events" in document else len(ids) if type(ids) is list else 1
                seen += len(records)
        return events / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def _empty_faust_rate(settings: Settings, messages: int, events: int, log: Path) -> float:
    env_settings = settings.model_copy(update={"state_dir": log.parent / "empty-agent"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")} | env_settings.to_env()
    result = subprocess.run(
        [sys.executable, "-m", "driftwarden.bench.empty_agent", settings.topics.predictions, str(messages)],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    log.write_text(result.stdout + result.stderr)
    # Faust's worker redirects stdout into its log, so the line may come on either stream.
    found = re.search(r"first=([\d.]+) last=([\d.]+)", result.stdout + result.stderr)
    if found is None:
        raise DriftwardenError(f"the empty Faust agent did not finish: {result.stderr[-300:]}")
    return events / max(float(found.group(2)) - float(found.group(1)), 1e-9)


#: The monitor's status reports time its rate: ten a second, so a short run is still timed.
STATUS_INTERVAL_S = 0.1


def monitor_rate(settings: Settings, events: dict[str, int], work: Path, workers: int = 1) -> Rate:
    """Events/s of ``workers`` monitor processes (one consumer group) over models and their event counts.

    From this run's status reports: the events processed between the first report (of any model) and
    the report of each model's last event, over that time, so start-up and group joins are excluded.
    """
    spawned = time.time()  # reports of earlier runs on the same topics do not count
    processes = [
        spawn(["monitor", "--metrics-port", str(free_port())],
              settings.model_copy(update={"state_dir": work / f"{settings.monitor_group}-{k}"}),
              work / f"{settings.monitor_group}-{k}.log")
        for k in range(workers)
    ]  # fmt: skip
    try:
        for model_id, n in events.items():
            done = lambda status, n=n: status.ts >= spawned and status.events_processed >= n  # noqa: E731
            try:
                asyncio.run(wait_for_status(settings, model_id, done, timeout_s=900))
            except TimeoutError as exc:
                raise DriftwardenError(f"the monitor did not process the events ({exc}); logs in {work}") from None
    finally:
        terminate_all(processes)
    history = {m: [r for r in asyncio.run(status_history(settings, m)) if r.ts >= spawned] for m in events}
    start = min(h[0].ts for h in history.values())
    end = max(next(r.ts for r in history[m] if r.events_processed >= n) for m, n in events.items())
    before = sum(h[0].events_processed for h in history.values() if h[0].ts == start)
    if end <= start:  # everything between two reports: faster than they can time
        return Rate(sum(events.values()) / settings.status_interval_s, lower_bound=True)
    return Rate((sum(events.values()) - before) / (end - start))


def bench_settings(base: Settings, work: Path, name: str, partitions: int = 1) -> Settings:
    """Settings for one benchmark run: topics and consumer group of its own, on the same broker."""
    settings = base.model_copy(update={
        "topic_prefix": f"{name}.", "monitor_group": f"{name}-monitor", "state_dir": work / name,
        "partitions": partitions, "status_interval_s": STATUS_INTERVAL_S,
    })  # fmt: skip
    asyncio.run(ensure_topics(settings, settings.topics.specs(settings.partitions)))
    return settings


@contextmanager
def bench_broker() -> Iterator[tuple[Settings, Path]]:
    """An embedded broker and a scratch directory for one benchmark session."""
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        with EmbeddedBroker(work / "broker.log") as broker:
            yield broker.settings, work


def run_throughput_benchmark(
    base: Settings, work: Path, batch_sizes: list[int], events: int, single_events: int, columnar_sizes: list[int]
) -> Iterator[ThroughputResult]:
    """Rates (a), (b), (c) per message size (row messages, then columnar), on the same pre-produced events each."""
    for batch_size, columnar in [(size, False) for size in batch_sizes] + [(size, True) for size in columnar_sizes]:
        n = single_events if batch_size == 1 and not columnar else events
        name = f"{batch_size}{'c' if columnar else ''}"
        settings = bench_settings(base, work, f"bench{name}")
        scenario = Scenario(name="stable", n_events=n, model_id=f"bench-{name}")
        producer = ScenarioProducer(settings, scenario, batch_size=batch_size, label_fraction=0.0, columnar=columnar)
        report = asyncio.run(producer.run())
        raw = asyncio.run(_raw_rate(settings, report.prediction_messages))
        empty = _empty_faust_rate(settings, report.prediction_messages, n, work / f"empty-{name}.log")
        monitor = monitor_rate(settings, {scenario.model_id: n}, work)
        yield ThroughputResult(batch_size, n, raw, empty, monitor, columnar)
