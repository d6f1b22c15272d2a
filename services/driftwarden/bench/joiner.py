"""``driftwarden bench joiner``: the memory the monitor's label joiner holds per pending prediction.

The load scenario's predictions (UUID event ids, two classes with scores, no segment) go as columnar
batches through the worker's decoder and into a :class:`~driftwarden.core.joins.LabelJoiner`, and no
label ever comes. First ``pending`` predictions fill a joiner under tracemalloc: the bytes it holds
(event id strings, the dict, packed records, the code table) per pending prediction. Then, without
tracemalloc, ``events`` predictions stream through a joiner bounded at ``pending`` (full after
``pending``, evicting since): the process's RSS once it is full and at every tenth of the stream.

With ``label_calls``, also the CPU a joined label costs the monitor core (:meth:`Monitor.observe_labels`: the
joiner, the performance monitor's windows and error-rate CUSUMs), its labels fed a few or many a call: a worker
gets a model's labels of one batch in one call, so few a call when it keeps up with many models, many when
it is behind.
"""

from __future__ import annotations

import gc
import resource
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from driftwarden.core.decoding import LABELS, PREDICTIONS
from driftwarden.core.joins import LabelJoiner
from driftwarden.core.monitor import Monitor
from driftwarden_load.producer import envelope
from driftwarden_load.scenarios import Scenario, generate

CHUNK = 10_000


@dataclass
class JoinerBenchmark:
    pending: int
    bytes_per_pending: float
    fill_s: float
    #: (predictions streamed, RSS in MB), from the moment the joiner is full
    rss: list[tuple[int, float]] = field(default_factory=list)
    #: labels a call -> µs of CPU a joined label in the monitor core
    label_us: dict[int, float] = field(default_factory=dict)

    def as_text(self) -> str:
        """The result as docs/benchmarks.md shows it.

        >>> print(JoinerBenchmark(1_000, 170.4, 0.1, [(1_000, 200.0), (2_000, 201.0)]).as_text())
        1,000 pending predictions: 170 bytes each (tracemalloc); decode + join 10,000/CPU-s (traced)
        | predictions | RSS (MB) |
        |---:|---:|
        | 1,000 | 200 |
        | 2,000 | 201 |
        RSS from full to the end: +0.5 %
        """
        lines = [
            f"{self.pending:,} pending predictions: {self.bytes_per_pending:.0f} bytes each (tracemalloc); "
            f"decode + join {self.pending / self.fill_s:,.0f}/CPU-s (traced)",
            "| predictions | RSS (MB) |",
            "|---:|---:|",
            *(f"| {n:,} | {mb:.0f} |" for n, mb in self.rss),
        ]
        if len(self.rss) > 1:
            full, last = self.rss[0][1], self.rss[-1][1]
            lines.append(f"RSS from full to the end: {100 * (last - full) / full:+.1f} %")
        if self.label_us:
            lines += ["| labels a call | µs of CPU a joined label |", "|---:|---:|"]
            lines += [f"| {calls:,} | {us:.1f} |" for calls, us in self.label_us.items()]
        return "\n".join(lines)


def rss_mb() -> float:
    """The process's resident set size now (Linux /proc), in MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 1e6


def stream(joiner: LabelJoiner, events: int, seed: int, after_chunk: Callable[[int], None]) -> None:
    """``events`` predictions into ``joiner`` as the worker decodes them; ``after_chunk(n)`` after each chunk."""
    done = 0
    for chunk in generate(Scenario(n_events=events, seed=seed), chunk_size=CHUNK):
        for batch in PREDICTIONS.decode(orjson.dumps(chunk.prediction_columns())).columns:
            joiner.add_predictions(batch.event_ids, batch.ts, batch.model_version, batch.prediction,
                                   *batch.join_columns())  # fmt: skip
        done += len(chunk)
        after_chunk(done)


def run_joiner_benchmark(
    pending: int, events: int, label_calls: tuple[int, ...] = (), labels: int = 100_000
) -> JoinerBenchmark:
    gc.collect()
    tracemalloc.start()
    joiner = LabelJoiner(ttl_s=1e12, max_pending=pending)
    before = tracemalloc.get_traced_memory()[0]
    started = time.process_time()
    stream(joiner, pending, 1, lambda n: None)
    fill_s = time.process_time() - started
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(joiner.predictions) == pending, "every prediction is pending"
    result = JoinerBenchmark(pending, held / pending, fill_s)
    del joiner
    gc.collect()

    bounded = LabelJoiner(ttl_s=1e12, max_pending=pending)
    step = max(CHUNK, events // 10)

    def sample(n: int) -> None:
        if n >= pending and (not result.rss or n - result.rss[-1][0] >= step or n == events):
            result.rss.append((n, rss_mb()))

    stream(bounded, events, 2, sample)
    del bounded
    gc.collect()
    result.label_us = label_costs_us(labels, label_calls) if label_calls else {}
    return result


def label_costs_us(labels: int, calls: tuple[int, ...]) -> dict[int, float]:
    """µs of CPU (best of 3) a joined label costs :meth:`Monitor.observe_labels` at each of ``calls`` labels a call,
    after ``labels`` predictions of one model (its reference, then pending) went in as columnar batches.

    >>> costs = label_costs_us(2_000, (1, 100))
    >>> list(costs), all(0 < us < 1_000 for us in costs.values())
    ([1, 100], True)
    """
    scenario = Scenario(n_events=labels, seed=3)
    columns, events = [], []
    for chunk in generate(scenario, chunk_size=CHUNK):
        columns += PREDICTIONS.decode(orjson.dumps(chunk.prediction_columns())).columns
        events += LABELS.decode(envelope("label-batch.v1", scenario.model_id, chunk.label_events())).events
    now, costs = events[-1].ts, {}
    for per_call in calls:
        best = float("inf")
        for _ in range(3):
            monitor = Monitor()
            monitor.observe(columns, now)
            started = time.process_time()
            for first in range(0, len(events), per_call):
                monitor.observe_labels(events[first : first + per_call], now)
            best = min(best, time.process_time() - started)
            assert monitor.state(scenario.model_id).joiner.joined == len(events), "every label joined"
        costs[per_call] = best / len(events) * 1e6
    return costs
