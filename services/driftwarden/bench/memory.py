"""``driftwarden bench core --rss-every N``: the monitor core's memory over a long stream, labels joined.

The load scenario's stable stream goes through the worker's path without Kafka: columnar batches
decoded and screened (event times), then :meth:`~driftwarden.core.monitor.Monitor.observe` (dedupe
horizon, default detectors, label joiner) with the garbage collector tuned as the worker tunes it.
Every other prediction gets its label, as label-batch envelopes ``label_delay`` events after it; the
other half never does, so the joiner fills to ``max_pending`` and evicts from then on. Every
``every`` events: a full collection, then the process's RSS and what the bounded structures hold.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from driftwarden.bench.joiner import rss_mb
from driftwarden.core.decoding import LABELS, PREDICTIONS
from driftwarden.core.monitor import Monitor
from driftwarden.monitor.service import tune_garbage_collector
from driftwarden_load.producer import envelope
from driftwarden_load.scenarios import Scenario, generate

CHUNK = 10_000


@dataclass
class MemorySample:
    events: int
    rss_mb: float
    pending_predictions: int
    pending_labels: int
    joined: int
    evicted: int
    recent_ids: int


@dataclass
class MemoryBenchmark:
    events: int
    batch_size: int
    label_delay: int
    cpu_s: float
    samples: list[MemorySample] = field(default_factory=list)

    def as_text(self) -> str:
        """The result as docs/benchmarks.md shows it.

        >>> samples = [MemorySample(1_000, 300.0, 500, 0, 400, 100, 1_000),
        ...            MemorySample(2_000, 306.0, 500, 0, 900, 600, 1_000)]
        >>> print(MemoryBenchmark(2_000, 500, 100, 0.1, samples).as_text())
        2,000 events in columnar batches of 500, every other one labelled 100 events later: 20,000 events/CPU-s
        | events | RSS (MB) | pending predictions | pending labels | joined | evicted | dedupe ids |
        |---:|---:|---:|---:|---:|---:|---:|
        | 1,000 | 300 | 500 | 0 | 400 | 100 | 1,000 |
        | 2,000 | 306 | 500 | 0 | 900 | 600 | 1,000 |
        RSS at 2,000 / at 1,000: 1.020 (+2.0 %)
        """
        lines = [
            f"{self.events:,} events in columnar batches of {self.batch_size}, every other one labelled "
            f"{self.label_delay:,} events later: {self.events / self.cpu_s:,.0f} events/CPU-s",
            "| events | RSS (MB) | pending predictions | pending labels | joined | evicted | dedupe ids |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            *(
                f"| {s.events:,} | {s.rss_mb:.0f} | {s.pending_predictions:,} | {s.pending_labels:,} | {s.joined:,} "
                f"| {s.evicted:,} | {s.recent_ids:,} |"
                for s in self.samples
            ),
        ]
        if len(self.samples) > 1:
            first, last = self.samples[0], self.samples[-1]
            ratio = last.rss_mb / first.rss_mb
            lines.append(f"RSS at {last.events:,} / at {first.events:,}: {ratio:.3f} ({100 * (ratio - 1):+.1f} %)")
        return "\n".join(lines)


def run_memory_benchmark(
    events: int, batch_size: int, every: int, label_delay: int, on_sample: Callable[[MemorySample], None]
) -> MemoryBenchmark:
    scenario = Scenario(name="stable", n_events=events, seed=1)
    monitor = Monitor()
    tune_garbage_collector()  # as the worker does
    result = MemoryBenchmark(events, batch_size, label_delay, 0.0)
    labels: deque[tuple[int, bytes]] = deque()  # (due after this many predictions, label-batch envelope)
    done, next_sample = 0, every
    started = time.process_time()
    for chunk in generate(scenario, chunk_size=CHUNK):
        for start in range(0, len(chunk), batch_size):
            stop = min(start + batch_size, len(chunk))
            now = float(chunk.ts[stop - 1])
            while labels and labels[0][0] <= done:
                monitor.observe_labels(LABELS.decode(labels.popleft()[1]).events, now)
            decoded = PREDICTIONS.decode(orjson.dumps(chunk.prediction_columns(start, stop)))
            accepted, rejected = monitor.screen(decoded.columns, now)
            assert not rejected and not decoded.rejections, "the stable stream is valid"
            monitor.observe(accepted, now)
            done += stop - start
            if done >= next_sample or done == events:
                next_sample += every
                result.cpu_s += time.process_time() - started
                result.samples.append(_sample(monitor, scenario.model_id, done))
                on_sample(result.samples[-1])
                started = time.process_time()
        labelled = chunk.label_events()[::2]
        for start in range(0, len(labelled), batch_size // 2 or 1):
            batch = labelled[start : start + (batch_size // 2 or 1)]
            labels.append((chunk.start + CHUNK + label_delay, envelope("label-batch.v1", scenario.model_id, batch)))
    return result


def _sample(monitor: Monitor, model_id: str, done: int) -> MemorySample:
    gc.collect()
    state = monitor.models[model_id]
    counts = state.joiner.counts()
    return MemorySample(
        done, rss_mb(), counts["pending_predictions"], counts["pending_labels"], counts["joined"], counts["evicted"],
        len(state.ids),
    )  # fmt: skip
