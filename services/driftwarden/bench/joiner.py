"""``driftwarden bench joiner``: the memory the monitor's label joiner holds per pending prediction.

The load scenario's predictions (UUID event ids, two classes with scores, no segment) go as columnar
batches through the worker's decoder and into a :class:`~driftwarden.core.joins.LabelJoiner`, and no
label ever comes. First ``pending`` predictions fill a joiner under tracemalloc: the bytes it holds
(event id strings, the dict, packed records, the code table) per pending prediction. Then, without
tracemalloc, ``events`` predictions stream through a joiner bounded at ``pending`` (full after
``pending``, evicting since): the process's RSS once it is full and at every tenth of the stream.
"""

from __future__ import annotations

import gc
import resource
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from driftwarden.core.decoding import PREDICTIONS
from driftwarden.core.joins import LabelJoiner
from driftwarden_load.scenarios import Scenario, generate

CHUNK = 10_000


@dataclass
class JoinerBenchmark:
    pending: int
    bytes_per_pending: float
    fill_s: float
    #: (predictions streamed, RSS in MB), from the moment the joiner is full
    rss: list[tuple[int, float]] = field(default_factory=list)

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


def run_joiner_benchmark(pending: int, events: int) -> JoinerBenchmark:
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
    return result
