"""``driftwarden bench core``: the monitor's per-event cost without Kafka.

Pre-encodes a stable 20-feature stream as batch envelopes, then times what the worker does per
message: decode + validate, then the default detector set (streaming ADWIN on 16 numeric features
and the score, window tests every 2,000 events, label joins). Kafka and Faust overheads are measured
separately by the throughput benchmark.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

from driftwarden.core import compiled
from driftwarden.core.decoding import PREDICTIONS
from driftwarden.core.monitor import Monitor
from driftwarden.monitor.service import tune_garbage_collector
from driftwarden_load.producer import envelope
from driftwarden_load.scenarios import Scenario, generate


@dataclass
class CoreBenchmark:
    events: int
    batch_size: int
    decode_s: float
    detect_s: float
    peak_rss_mb: float

    @property
    def events_per_s(self) -> float:
        return self.events / (self.decode_s + self.detect_s)

    def as_text(self) -> str:
        return (
            f"{self.events:,} events in envelopes of {self.batch_size}: {self.events_per_s:,.0f} events/s "
            f"(decode+validate {self.decode_s / self.events * 1e6:.1f} µs/event, "
            f"detectors {self.detect_s / self.events * 1e6:.1f} µs/event), peak RSS {self.peak_rss_mb:.0f} MB"
        )


def run_core_benchmark(n_events: int, batch_size: int) -> CoreBenchmark:
    scenario = Scenario(name="stable", n_events=n_events, seed=1)
    messages = []
    for chunk in generate(scenario, chunk_size=max(batch_size, 1_000)):
        events = chunk.prediction_events()
        messages += [envelope("prediction-batch.v1", scenario.model_id, events[i : i + batch_size])
                     for i in range(0, len(events), batch_size)]  # fmt: skip
    monitor = Monitor()
    tune_garbage_collector()  # as the worker does
    compiled.load()  # (numba and the compiled loops: a worker's one-time cost, not the core's rate)
    decode_s = detect_s = 0.0
    for message in messages:
        started = time.perf_counter()
        decoded = PREDICTIONS.decode(message)
        middle = time.perf_counter()
        monitor.observe(decoded.events, now=0.0)
        detect_s += time.perf_counter() - middle
        decode_s += middle - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return CoreBenchmark(n_events, batch_size, decode_s, detect_s, peak)
