"""``driftwarden bench throughput``: the monitor against the transport and framework ceilings.

In one run, on one embedded broker and the same pre-produced events (the stable 20-feature stream)
for each message size (1 event per message, batch envelopes, or columnar batches):

* (a) raw aiokafka consume + orjson decode: the transport ceiling;
* (b) an empty Faust agent reading in batches like the monitor: the framework ceiling;
* (c) the monitor worker with the default detector set.

Rates are events/s. The monitor's rate comes from its status topic (cumulative processed count and
time), measured from its first to its last report, so start-up and group joins are excluded. For single
events it also gives the CPU seconds per message of the empty agent and of the monitor (:class:`CpuClock`,
over the same spans: the empty agent's first to last batch), which load moves less than wall rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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
    cpu_per_event_s: float | None = None  # the workers' CPU seconds per event over the same span

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
    empty_faust_cpu_per_message_s: float | None = None

    def as_row(self) -> str:
        size = f"{self.batch_size} columnar" if self.columnar else f"{self.batch_size}"
        cells = [size, f"{self.events:,}", f"{self.raw:,.0f}", f"{self.empty_faust:,.0f}", str(self.monitor)]
        monitor = self.monitor.events_per_s
        cells += [f"{monitor / self.raw:.2f}", f"{monitor / self.empty_faust:.2f}"]
        return "| " + " | ".join(cells) + " |"

    def cpu_line(self) -> str | None:
        """Single events: the CPU per message of the empty agent and of the monitor, and their ratio
        (None for envelopes, or when the monitor was too fast to time).

        >>> ThroughputResult(1, 9, 1.0, 1.0, Rate(1.0, cpu_per_event_s=2e-4), empty_faust_cpu_per_message_s=1.5e-4
        ...                  ).cpu_line()
        'single events, CPU per message: empty Faust agent 150 µs, monitor 200 µs, Faust/monitor 0.75'
        """
        empty, monitor = self.empty_faust_cpu_per_message_s, self.monitor.cpu_per_event_s
        if self.batch_size != 1 or self.columnar or empty is None or monitor is None:
            return None
        return (f"single events, CPU per message: empty Faust agent {empty * 1e6:,.0f} µs, monitor "
                f"{monitor * 1e6:,.0f} µs, Faust/monitor {empty / monitor:.2f}")  # fmt: skip


#: How often :class:`CpuClock` samples.
CPU_SAMPLE_INTERVAL_S = 0.05


class CpuClock:
    """The CPU seconds processes used (``utime + stime`` of ``/proc/<pid>/stat``: all their threads) as
    a function of wall-clock time, sampled every :data:`CPU_SAMPLE_INTERVAL_S` in a thread while the
    ``with`` block runs."""

    def __init__(self, pids: Sequence[int]) -> None:
        self._stats = [Path(f"/proc/{pid}/stat") for pid in pids]
        self._cpu = [0.0] * len(pids)
        self.samples: list[tuple[float, float]] = []  # (wall-clock time, CPU seconds of them all)
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name="cpu-clock", daemon=True)

    def __enter__(self) -> CpuClock:
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._sampler.join()

    def _sample(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while True:
            for k, stat in enumerate(self._stats):
                with contextlib.suppress(OSError):  # exited: its last sample stands
                    fields = stat.read_text().rsplit(")", 1)[1].split()  # from the state on: fields 3, 4, ...
                    self._cpu[k] = (int(fields[11]) + int(fields[12])) / tick
            self.samples.append((time.time(), sum(self._cpu)))
            if self._done.wait(CPU_SAMPLE_INTERVAL_S):
                return

    def between(self, start: float, end: float) -> float:
        """The CPU seconds used from wall-clock time ``start`` to ``end`` (interpolated between samples)."""
        times, cpu = zip(*self.samples, strict=True)
        return float(np.interp(end, times, cpu) - np.interp(start, times, cpu))


async def _raw_rate(settings: Settings, messages: int) -> float:
    """Read every message of the predictions topic from the start and decode it; events/s."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=8 * 1024 * 1024)  # fmt: skip
    try:
        await consumer.start()
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


def _empty_faust_rate(settings: Settings, messages: int, events: int, log: Path) -> tuple[float, float]:
    """The empty agent's events/s, and its CPU seconds per message after its first batch."""
    env_settings = settings.model_copy(update={"state_dir": log.parent / "empty-agent"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")} | env_settings.to_env()
    agent = subprocess.Popen(
        [sys.executable, "-m", "driftwarden.bench.empty_agent", settings.topics.predictions, str(messages)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with CpuClock([agent.pid]) as clock:
        try:
            stdout, stderr = agent.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.communicate()
            raise
    log.write_text(stdout + stderr)
    # Faust's worker redirects stdout into its log, so the line may come on either stream.
    found = re.search(r"first=([\d.]+) last=([\d.]+) messages=(\d+) first_batch=(\d+)", stdout + stderr)
    if found is None:
        raise DriftwardenError(f"the empty Faust agent did not finish: {stderr[-300:]}")
    first, last = float(found.group(1)), float(found.group(2))
    timed = max(int(found.group(3)) - int(found.group(4)), 1)
    return events / max(last - first, 1e-9), clock.between(first, last) / timed


#: The monitor's status reports time its rate: ten a second, so a short run is still timed.
STATUS_INTERVAL_S = 0.1


def monitor_rate(settings: Settings, events: dict[str, int], work: Path, workers: int = 1) -> Rate:
    """Events/s of ``workers`` monitor processes (one consumer group) over models and their event counts.

    From this run's status reports: the events processed between the first report (of any model) and
    the report of each model's last event, over that time, so start-up and group joins are excluded;
    the workers' CPU seconds over the same span, per event.
    """
    spawned = time.time()  # reports of earlier runs on the same topics do not count
    processes = [
        spawn(["monitor", "--metrics-port", str(free_port())],
              settings.model_copy(update={"state_dir": work / f"{settings.monitor_group}-{k}"}),
              work / f"{settings.monitor_group}-{k}.log")
        for k in range(workers)
    ]  # fmt: skip
    with CpuClock([process.pid for process in processes]) as clock:
        try:
            for model_id, n in events.items():
                done = lambda status, n=n: status.ts >= spawned and status.events_processed >= n  # noqa: E731
                try:
                    asyncio.run(wait_for_status(settings, model_id, done, timeout_s=900))
                except TimeoutError as exc:
                    raise DriftwardenError(f"the monitor did not process the events ({exc}); logs in {work}"
                                           ) from None  # fmt: skip
        finally:
            terminate_all(processes)
    history = {m: [r for r in asyncio.run(status_history(settings, m)) if r.ts >= spawned] for m in events}
    start = min(h[0].ts for h in history.values())
    end = max(next(r.ts for r in history[m] if r.events_processed >= n) for m, n in events.items())
    before = sum(h[0].events_processed for h in history.values() if h[0].ts == start)
    if end <= start:  # everything between two reports: faster than they can time
        return Rate(sum(events.values()) / settings.status_interval_s, lower_bound=True)
    timed = sum(events.values()) - before
    return Rate(timed / (end - start), cpu_per_event_s=clock.between(start, end) / timed)


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
        empty, empty_cpu = _empty_faust_rate(settings, report.prediction_messages, n, work / f"empty-{name}.log")
        monitor = monitor_rate(settings, {scenario.model_id: n}, work)
        yield ThroughputResult(batch_size, n, raw, empty, monitor, columnar, empty_cpu)
