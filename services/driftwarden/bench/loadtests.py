"""The monitor worker under load: event->alert latency, memory over a long stream, scaling out.

Parts of ``driftwarden bench throughput``, each on the benchmark's embedded broker with topics of its
own and real ``driftwarden monitor`` processes:

* latency: ``models`` model servers together send ``rate`` events/s, each event stamped with its
  wall-clock send time, and their labels ~5 s later; every model's features shift at a known event.
  Latency is the time from the alert's trigger event being sent to the alert being read from the
  alerts topic;
* memory: one worker reads a long stable stream; its resident set size (``/proc``) is sampled with
  the events processed so far. The state is bounded (detectors, windows, at most ``max_pending``
  predictions waiting for labels), so RSS must level off;
* scaling: the same events on two partitions (one model each) read by one worker, then by two.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from aiokafka.partitioner import DefaultPartitioner

from driftwarden.bench.throughput import Rate, monitor_rate
from driftwarden.core.events import Alert
from driftwarden.errors import DriftwardenError
from driftwarden.kafka.broker import free_port
from driftwarden.kafka.reader import read_topic
from driftwarden.monitor.status import latest_status, probe_monitor, wait_for_status
from driftwarden.processes import spawn, terminate
from driftwarden.settings import Settings
from driftwarden_load.producer import ScenarioProducer, shared_producer
from driftwarden_load.scenarios import Scenario

LATENCY_BATCH = 10  # events per envelope from each model server (a few ms of batching at the source)
LABEL_DELAY = 1_000  # each label follows its prediction by this many predictions of the same model (5 s)


@dataclass
class LatencyResult:
    offered_rate: float
    achieved_rate: float
    models: int
    latencies_ms: list[float]

    def as_text(self) -> str:
        if not self.latencies_ms:
            return f"no alert arrived at {self.achieved_rate:,.0f} events/s"
        p50, p99 = np.percentile(self.latencies_ms, [50, 99])
        return (
            f"event -> alert latency at {self.achieved_rate:,.0f} events/s ({self.models} models, "
            f"{len(self.latencies_ms)} alerts): p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {max(self.latencies_ms):.0f} ms"
        )


@dataclass
class MemoryResult:
    events: int
    samples: list[tuple[int, float]] = field(default_factory=list)  # (events processed, RSS MB)
    peak_mb: float = 0.0

    def as_text(self) -> str:
        rows = ["| events processed | RSS MB |", "|---|---|"]
        step = max(1, len(self.samples) // 10)
        rows += [f"| {n:,} | {rss:.0f} |" for n, rss in self.samples[::step] + self.samples[-1:]]
        return "\n".join(rows) + f"\npeak RSS {self.peak_mb:.0f} MB over {self.events:,} events"


def _rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, from /proc (Linux)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def _collect(settings: Settings, topic: str, out: list[tuple[float, bytes]]) -> None:
    """Follow ``topic`` from the start until cancelled, noting when each record arrived."""
    async for record in read_topic(settings, topic, follow=True):
        out.append((time.time(), record.value or b""))


async def _latency_run(settings: Settings, rate: float, models: int, events_per_model: int) -> LatencyResult:
    await probe_monitor(settings, timeout_s=60)  # the worker has joined and reads live
    stamp: dict[str, float] = {}
    received: list[tuple[float, bytes]] = []
    collector = asyncio.create_task(_collect(settings, settings.topics.alerts, received))
    onset = events_per_model * 2 // 3
    producers = [
        ScenarioProducer(settings, Scenario(name="abrupt-shift", n_events=events_per_model, onset=onset, seed=k,
                                            model_id=f"latency-{k:02d}"),
                         batch_size=LATENCY_BATCH, rate=rate / models, label_delay=LABEL_DELAY, stamp=stamp)
        for k in range(models)
    ]  # fmt: skip
    started = time.perf_counter()
    async with shared_producer(settings) as producer:
        await asyncio.gather(*(p.run(producer) for p in producers))
    achieved = models * events_per_model / (time.perf_counter() - started)
    for producer in producers:
        model_id = producer.scenario.model_id
        await wait_for_status(settings, model_id, lambda s: s.events_processed >= events_per_model, timeout_s=120)
    await asyncio.sleep(1.0)  # alerts of the last batch
    collector.cancel()
    with suppress(asyncio.CancelledError):
        await collector
    latencies = []
    for arrived, raw in received:
        alert = Alert.model_validate_json(raw)
        if alert.state == "firing" and alert.trigger_event_id in stamp:
            latencies.append((arrived - stamp[alert.trigger_event_id]) * 1000)
    return LatencyResult(rate, achieved, models, latencies)


def run_latency(settings: Settings, work: Path, rate: float, models: int, events_per_model: int) -> LatencyResult:
    worker = spawn(["monitor", "--metrics-port", str(free_port())], settings, work / "latency-monitor.log")
    try:
        return asyncio.run(_latency_run(settings, rate, models, events_per_model))
    finally:
        terminate(worker)


async def _memory_run(settings: Settings, events: int, pid: int, every_s: float) -> MemoryResult:
    scenario = Scenario(name="stable", n_events=events, model_id="memory", seed=5)
    producer = asyncio.create_task(ScenarioProducer(settings, scenario, batch_size=1_000, label_fraction=0.0).run())
    result = MemoryResult(events)
    processed = 0
    deadline = time.monotonic() + 3_600
    while processed < events:
        if time.monotonic() > deadline:
            raise DriftwardenError(f"the monitor processed only {processed:,} of {events:,} events in an hour")
        await asyncio.sleep(every_s)
        status = await latest_status(settings, scenario.model_id)
        processed = status.events_processed if status else 0
        rss, result.peak_mb = _rss_mb(pid)
        result.samples.append((processed, rss))
    await producer
    return result


def run_memory(settings: Settings, work: Path, events: int, every_s: float = 2.0) -> MemoryResult:
    worker = spawn(["monitor", "--metrics-port", str(free_port())], settings, work / "memory-monitor.log")
    try:
        return asyncio.run(_memory_run(settings, events, worker.pid, every_s))
    finally:
        terminate(worker)


def models_on_partitions(partitions: int) -> list[str]:
    """One model id per partition (by the producers' default key hashing)."""
    partitioner, chosen = DefaultPartitioner(), dict[int, str]()
    k = 0
    while len(chosen) < partitions:
        model_id = f"scale-{k}"
        chosen.setdefault(partitioner(model_id.encode(), list(range(partitions)), list(range(partitions))), model_id)
        k += 1
    return [chosen[p] for p in range(partitions)]


def run_scaling(settings: Settings, work: Path, events: int) -> dict[int, Rate]:
    """Events/s of one, then two workers over the same events on two partitions."""
    model_ids = models_on_partitions(2)
    for k, model_id in enumerate(model_ids):
        scenario = Scenario(name="stable", n_events=events // 2, model_id=model_id, seed=10 + k)
        asyncio.run(ScenarioProducer(settings, scenario, batch_size=1_000, label_fraction=0.0).run())
    rates = {}
    for workers in (1, 2):
        group = settings.model_copy(update={"monitor_group": f"{settings.monitor_group}-{workers}w"})
        rates[workers] = monitor_rate(group, {m: events // 2 for m in model_ids}, work, workers=workers)
    return rates
