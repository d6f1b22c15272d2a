"""``driftwarden bench shards``: one hot model over several workers (:mod:`driftwarden.core.shards`).

Two measurements:

* **What deciding per bucket costs** (:func:`run_bucket_costs`): per shape family (its reference and
  change of the shape corpus), false alarms per million values under no change and the mean delay of
  a change of KL 0.05 (location), for the per-value rank CUSUM bank of the single-worker path
  (:class:`~driftwarden.core.detectors.streaming.RankCusumDetector`) and the sharded path's binned
  CUSUMs stepped once per bucket of ``b`` values, all at the same ``arl``.
* **The window tests' false alarms** (:func:`run_window_false_alarms`): the share of windows with no
  change whose test rejects, per shape family, against the level.
* **Throughput of one model at 1, 2, 4 workers** (:func:`run_scaling`): the load scenario's stable
  stream (16 numeric, 4 categorical features) as ``prediction-batch.v1`` envelopes spread round robin
  over the workers, one process each: decode + validate, columns, counting into buckets, and the
  summaries serialized, as a shard's worker does (no Kafka); then the owner merges every summary and
  decides. Events/s is all events over the slowest worker's wall time; on a machine whose cores are
  shared, all events over the busiest worker's CPU time is the rate the workers reach with a core each.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass

import numpy as np

from driftwarden.bench.detection_shapes import FAMILIES, change, theta_for
from driftwarden.core.config import ModelMonitorConfig
from driftwarden.core.decoding import PREDICTIONS
from driftwarden.core.detectors.streaming import RankCusumDetector
from driftwarden.core.events import PredictionEvent, WindowSummary
from driftwarden.core.profile import build_profile, schema_of, to_columns
from driftwarden.core.shards import ShardBatch, ShardedReference, ShardSummarizer, SummaryMerger
from driftwarden_load.producer import envelope
from driftwarden_load.scenarios import Scenario, generate

REFERENCE_N = 5_000
DELAY_KL = 0.05
CHANGE_AT = 2_000


@dataclass
class BucketCost:
    family: str
    bucket: int  # values per bucket; 1: the per-value detector of the single-worker path
    false_alarms_per_million: float
    mean_delay: float  # values after the change (a run that never alarms counts its horizon)

    def as_row(self) -> str:
        """The result as docs/benchmarks.md shows it.

        >>> BucketCost("normal", 100, 15.0, 219.4).as_row()
        '| normal | per bucket of 100 | 15 | 219 |'
        """
        how = "per value (RankCusumDetector)" if self.bucket == 1 else f"per bucket of {self.bucket}"
        return f"| {self.family} | {how} | {self.false_alarms_per_million:.0f} | {self.mean_delay:,.0f} |"


def _alarms(values: np.ndarray, quantiles: np.ndarray, arl: float, bucket: int) -> list[int]:
    """Where the CUSUMs of ``values`` alarm: value indexes (per value) or the last value of the alarming bucket."""
    if bucket == 1:
        found: list[int] = []
        RankCusumDetector(quantiles.tolist(), REFERENCE_N, arl=arl).update_many(values, found.append)
        return found
    reference = ShardedReference.of_quantiles({"x": quantiles.tolist()}, REFERENCE_N, {})
    summarizer = ShardSummarizer("m", "1", reference, 0, 1, bucket_seconds=1.0)
    merger = SummaryMerger(reference, 1, arl=arl, window_size=len(values) + 1, window_level=1e-3)
    ids = [str(i) for i in range(len(values))]
    ts = (np.arange(len(values)) // bucket).astype(float)
    summaries = summarizer.add(ShardBatch(ids, ts, {"x": values}, {})) + summarizer.close(float(ts[-1]) + 1)
    return [(d.bucket + 1) * bucket - 1 for s in summaries for d in merger.add(s) if d.kind == "cusum"]


def run_bucket_costs(null_values: int, delay_runs: int, horizon: int, buckets: tuple[int, ...], arl: float,
                     seed: int = 0) -> list[BucketCost]:  # fmt: skip
    """False alarms under no change and delays after a location change, per family and bucket size."""
    rng = np.random.default_rng(seed)
    results = []
    for family in FAMILIES:
        pre, post = change(family, "location", theta_for(family, "location", DELAY_KL))
        quantiles = np.quantile(pre.sample(rng, REFERENCE_N), np.linspace(0, 1, 1_000))
        null = pre.sample(rng, null_values)
        streams = [np.concatenate([pre.sample(rng, CHANGE_AT), post.sample(rng, horizon)]) for _ in range(delay_runs)]
        for bucket in (1, *buckets):
            false_alarms = len(_alarms(null, quantiles, arl, bucket))
            delays = []
            for stream in streams:
                after = [i - CHANGE_AT for i in _alarms(stream, quantiles, arl, bucket) if i >= CHANGE_AT]
                delays.append(after[0] if after else horizon)
            results.append(BucketCost(family, bucket, false_alarms / null_values * 1e6, float(np.mean(delays))))
    return results


def run_window_false_alarms(references: int, windows: int, level: float, seed: int = 0) -> dict[str, float]:
    """Per shape family, the share of windows of 2,000 values with no change whose chi-square test of the
    binned ranks rejects at ``level`` (``references`` references of 5,000, ``windows`` windows each)."""
    rng = np.random.default_rng(seed)
    shares = {}
    for family in FAMILIES:
        pre = change(family, "location", 0.0)[0]
        rejected = 0
        for _ in range(references):
            quantiles = np.quantile(pre.sample(rng, REFERENCE_N), np.linspace(0, 1, 1_000))
            reference = ShardedReference.of_quantiles({"x": quantiles.tolist()}, REFERENCE_N, {})
            summarizer = ShardSummarizer("m", "1", reference, 0, 1, bucket_seconds=1.0)
            merger = SummaryMerger(reference, 1, arl=1e12, window_size=2_000, window_level=level)
            values = pre.sample(rng, 2_000 * windows)
            ts = (np.arange(len(values)) // 1_000).astype(float)
            batch = ShardBatch([str(i) for i in range(len(values))], ts, {"x": values}, {})
            summaries = summarizer.add(batch) + summarizer.close(float(ts[-1]) + 1)
            rejected += sum(d.kind == "window" and d.drifted for summary in summaries for d in merger.add(summary))
        shares[family] = rejected / (references * windows)
    return shares


@dataclass
class Scaling:
    workers: int
    events: int
    wall_s: float  # the slowest worker
    cpu_s: float  # the busiest worker's CPU time: its rate with a core of its own is events / workers / cpu_s
    summaries: int
    summary_bytes: int
    buckets: int
    merge_s: float  # the owner: decode and add every summary
    decide_s: float  # the owner: the decisions on every merged bucket

    def as_row(self) -> str:
        return (
            f"| {self.workers} | {self.events / self.wall_s:,.0f} | {self.events / self.cpu_s:,.0f} | "
            f"{self.summaries:,} | {self.summary_bytes / self.summaries:,.0f} | "
            f"{self.merge_s / self.summaries * 1e6:,.0f} | {self.decide_s / self.buckets * 1e3:.1f} |"
        )


HEADER = (
    "| workers | events/s (wall) | events / busiest worker's CPU-s | summaries | bytes each | "
    "owner: µs to decode + merge one | owner: ms to decide a bucket |\n"
    "|---:|---:|---:|---:|---:|---:|---:|"
)


_WORK: dict[str, object] = {}  # what the forked workers read (inherited, not pickled)


def _worker(shard: int) -> tuple[float, float, list[bytes]]:
    messages, reference, schema, workers = (_WORK[k] for k in ("messages", "reference", "schema", "workers"))
    assert isinstance(messages, list) and isinstance(reference, ShardedReference) and isinstance(workers, int)
    summarizer = ShardSummarizer("m", "1", reference, shard, workers, bucket_seconds=1.0)
    out: list[bytes] = []
    started, cpu = time.perf_counter(), time.process_time()
    for message in messages[shard::workers]:
        events = PREDICTIONS.decode(message).events
        batch = ShardBatch.of_columns(to_columns(events, schema), schema)  # type: ignore[arg-type]
        out += [summary.to_json() for summary in summarizer.add(batch)]
    end = _WORK["end"]
    assert isinstance(end, float)
    out += [summary.to_json() for summary in summarizer.close(end)]  # every worker closes at the stream's end
    return time.perf_counter() - started, time.process_time() - cpu, out


def run_scaling(events: int, batch_size: int, workers: tuple[int, ...], rate: float = 10_000.0) -> list[Scaling]:
    """One model's stream (``rate`` events per second of event time) through 1, 2, 4... workers and the owner."""
    scenario = Scenario(name="stable", n_events=events + REFERENCE_N, seed=1)
    rows = [e for chunk in generate(scenario, chunk_size=10_000) for e in chunk.prediction_events()]
    for i, row in enumerate(rows):
        row["ts"] = 1_700_000_000 + i / rate
    profile = build_profile("m", "1", [PredictionEvent.model_validate(e) for e in rows[:REFERENCE_N]])
    stream = rows[REFERENCE_N:]
    messages = [envelope("prediction-batch.v1", scenario.model_id, stream[i : i + batch_size])
                for i in range(0, len(stream), batch_size)]  # fmt: skip
    config = ModelMonitorConfig()
    reference = ShardedReference.of(profile)
    _WORK.update(messages=messages, reference=reference, schema=schema_of(profile), end=float(stream[-1]["ts"]) + 1)
    results = []
    for n in workers:
        _WORK["workers"] = n
        with multiprocessing.get_context("fork").Pool(n) as pool:
            done = pool.map(_worker, range(n))
        owner = SummaryMerger(reference, n, config.streaming_arl(len(profile.numeric)), config.window_size,
                              config.window_level)  # fmt: skip
        summaries = [raw for _, _, out in done for raw in out]
        started = time.perf_counter()
        decoded = sorted((WindowSummary.model_validate_json(raw) for raw in summaries), key=lambda s: s.bucket)
        for summary in decoded:  # (as they would arrive: the shards' summaries of a bucket at about the same time)
            owner.add(summary)
        owner_s = time.perf_counter() - started
        buckets = len({summary.bucket for summary in decoded})
        results.append(Scaling(n, len(stream), max(wall for wall, _, _ in done), max(cpu for _, cpu, _ in done),
                               len(summaries), sum(map(len, summaries)), buckets, owner_s - owner.decide_s,
                               owner.decide_s))  # fmt: skip
    return results
