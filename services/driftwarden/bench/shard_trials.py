"""Sharded models on real monitor workers: their setup, and ``kill -9`` of the workers under live load.

A sharded model (``shards > 1``, :mod:`driftwarden.core.sharded_models`) needs a reference profile and
a config before its first event (:func:`sharded_settings`). Each shard's last ``shard_lateness_s`` of
event time stays open in its worker until later events of that shard close it: :func:`close_shards`
sends one event per shard far enough ahead, so that every event before it reaches the owner.

:func:`run_shard_kills`: one stable sharded model produced at a steady rate while monitor workers are
killed with SIGKILL and restarted; afterwards the owner's merged count (its status) must equal the
events produced, every replayed summary must equal its original, and every distinct summary must be
merged once. Used by ``tests/faults/test_shard_kills.py``.

:func:`run_broker_scaling`: the throughput of one sharded model on the broker at 1, 2, 4 workers
(``driftwarden bench shards --on-broker``).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.partitioner import murmur2

from driftwarden.bench.kill_trials import PROGRESS_TIMEOUT_S, Workers, run_settings
from driftwarden.bench.throughput import Rate, bench_settings, monitor_rate
from driftwarden.core.events import PREDICTION_BATCH_SCHEMA, PredictionEvent, WindowSummary
from driftwarden.core.profile import build_profile
from driftwarden.core.shards import shard_key, stream_of
from driftwarden.monitor.status import latest_status, records_for, wait_for_status
from driftwarden.settings import Settings
from driftwarden_load.producer import ProduceReport, ScenarioProducer, envelope, shared_producer
from driftwarden_load.scenarios import Scenario, generate

#: Events of each scenario its profile is built from (they are produced too, and counted).
REFERENCE_N = 5_000


def sharded_settings(settings: Settings, work: Path, models: dict[Scenario, dict[str, Any]]) -> Settings:
    """``settings`` with a profile (the first :data:`REFERENCE_N` events) and a config (the given keys, e.g.
    ``shards``) per scenario's model, under ``work``."""
    lines = []
    for scenario, config in models.items():
        rows = [e for chunk in generate(scenario, chunk_size=REFERENCE_N) for e in chunk.prediction_events()]
        profile = build_profile(scenario.model_id, "1", [PredictionEvent.model_validate(e) for e in rows[:REFERENCE_N]])
        (work / "profiles" / scenario.model_id).mkdir(parents=True, exist_ok=True)
        (work / "profiles" / scenario.model_id / "1.json").write_bytes(profile.to_json())
        lines += [f'[models."{scenario.model_id}"]', *(f"{key} = {value!r}" for key, value in config.items())]
    (work / "monitoring.toml").write_text("\n".join(lines) + "\n")
    return settings.model_copy(update={"monitor_config": work / "monitoring.toml", "profiles_dir": work / "profiles"})


async def close_shards(settings: Settings, scenario: Scenario, shards: int, ahead_s: float) -> None:
    """One event per shard ``ahead_s`` seconds of event time after the scenario's last: every bucket of the
    scenario's events closes (these events stay open)."""
    last = scenario.start_ts + (scenario.n_events - 1) / scenario.events_per_second
    (event,) = next(generate(Scenario(n_events=1, seed=scenario.seed, model_id=scenario.model_id))).prediction_events()
    async with shared_producer(settings) as producer:
        for shard in range(shards):
            closer = {**event, "event_id": f"closer-{shard}-{uuid.uuid4().hex[:8]}", "ts": last + ahead_s}
            value = envelope(PREDICTION_BATCH_SCHEMA, scenario.model_id, [closer])
            await producer.send(settings.topics.predictions, value, key=shard_key(scenario.model_id, shard))


def summaries_of(settings: Settings, model_id: str) -> list[WindowSummary]:
    """Every window summary of ``model_id`` on the topic, replays included."""
    values = asyncio.run(records_for(settings, settings.topics.window_summaries, model_id))
    return [WindowSummary.model_validate_json(v) for v in values]


@dataclass
class ShardKillResult:
    kills: int = 0
    produced: int = 0
    merged: int = 0  # the owner's count (its last status)
    distinct_events: int = 0  # events of the distinct summaries on the topic
    replayed: int = 0  # summaries on the topic more than once
    problems: list[str] = field(default_factory=list)


def run_shard_kills(base: Settings, work: Path, seed: int, kills: int, workers: int = 2) -> ShardKillResult:
    """One run: topics, group and workers of its own on the broker of ``base``."""
    name = f"shardkills{seed}-{uuid.uuid4().hex[:6]}"
    shards, lateness_s = 4, 2.0
    rng = random.Random(seed)
    settings = run_settings(bench_settings(base, work, name, partitions=base.partitions), work, name)
    scenario = Scenario(name="stable", n_events=REFERENCE_N + 25_000, seed=seed, model_id=f"{name}-m")
    config = {"shards": shards, "bucket_seconds": 1.0, "shard_lateness_s": lateness_s, "shard_idle_s": 5.0}
    (work / name).mkdir(parents=True, exist_ok=True)
    settings = sharded_settings(settings, work / name, {scenario: config})
    producer = ScenarioProducer(settings, scenario, batch_size=100, rate=1_500.0, label_fraction=0.0, shards=shards)
    reports: list[ProduceReport] = []
    producing = threading.Thread(target=lambda: reports.append(asyncio.run(producer.run())))
    result = ShardKillResult()
    pool = Workers(settings, work / name, workers)
    try:
        producing.start()
        for slot in range(workers):
            pool.wait_back(slot)
        for _ in range(kills):
            slot = rng.randrange(workers)
            time.sleep(rng.uniform(1.0, 4.0))
            pool.kill(slot)
            time.sleep(rng.uniform(0.5, 2.0))
            pool.restart(slot)
            pool.wait_back(slot)
            result.kills += 1
        producer.rate = 0.0
        producing.join(PROGRESS_TIMEOUT_S * 2)
        asyncio.run(close_shards(settings, scenario, shards, lateness_s + 3.0))
        result.produced = reports[0].predictions
        try:
            asyncio.run(wait_for_status(settings, scenario.model_id, lambda s: s.events_processed >= result.produced,
                                        PROGRESS_TIMEOUT_S))  # fmt: skip
        except TimeoutError as exc:
            result.problems.append(str(exc))
        time.sleep(3 * settings.status_interval_s + 2)  # anything counted twice would show by now
        status = asyncio.run(latest_status(settings, scenario.model_id))
        result.merged = status.events_processed if status is not None else 0
        result.problems += [f"worker {pid} died" for pid in pool.dead()]
    finally:
        producing.join(PROGRESS_TIMEOUT_S * 2)
        pool.stop()
    check_summaries(summaries_of(settings, scenario.model_id), result)
    return result


def check_summaries(summaries: list[WindowSummary], result: ShardKillResult) -> None:
    """A replayed summary equals its original; the distinct ones add up to the events produced.

    >>> import numpy as np
    >>> from driftwarden.core.shards import ShardBatch, ShardedReference, ShardSummarizer
    >>> shard = ShardSummarizer("m", "1", ShardedReference.of_quantiles({"x": [0.0, 1.0]}, 100, {}), 0, 2, 1.0)
    >>> published = shard.add(ShardBatch(["a", "b"], np.array([0.5, 2.5]), {"x": np.array([0.1, 0.2])}, {}))
    >>> result = ShardKillResult()
    >>> check_summaries(published + published, result)  # buckets 0 (1 event) and 1 (none), each sent twice
    >>> result.distinct_events, result.replayed, result.problems
    (1, 2, [])
    """
    first: dict[tuple[Any, ...], WindowSummary] = {}
    copies: Counter[tuple[Any, ...]] = Counter()
    for summary in summaries:
        key = (*stream_of(summary), summary.seq)
        copies[key] += 1
        if first.setdefault(key, summary) != summary:
            result.problems.append(f"summary {key} replayed with other counts")
    result.replayed = sum(1 for n in copies.values() if n > 1)
    result.distinct_events = sum(s.events for s in first.values())


def run_broker_scaling(base: Settings, work: Path, events: int, workers: tuple[int, ...], shards: int = 8,
                       partitions: int = 4) -> Iterator[tuple[int, Rate]]:  # fmt: skip
    """Events/s of one stable model on ``shards`` shards through ``n`` monitor workers, for each ``n``:
    pre-produced (batches of 500), closed, then timed from the owner's status reports (from its first
    report to the one that has merged every event: summaries published, read, merged)."""
    for n in workers:
        name = f"shardbench{n}-{uuid.uuid4().hex[:6]}"
        settings = bench_settings(base, work, name, partitions=partitions)
        model_id = spread_model_id(name, shards, partitions)
        scenario = Scenario(name="stable", n_events=max(events, REFERENCE_N), seed=11, model_id=model_id)
        (work / name).mkdir(parents=True, exist_ok=True)
        config = {"shards": shards, "bucket_seconds": 1.0, "shard_lateness_s": 2.0}
        settings = sharded_settings(settings, work / name, {scenario: config})
        asyncio.run(ScenarioProducer(settings, scenario, batch_size=500, label_fraction=0.0, shards=shards).run())
        asyncio.run(close_shards(settings, scenario, shards, 5.0))
        yield n, monitor_rate(settings, {scenario.model_id: scenario.n_events}, work / name, workers=n)


def spread_model_id(name: str, shards: int, partitions: int) -> str:
    """A model id whose shard keys the producer's partitioner spreads evenly over the partitions.

    >>> model_id = spread_model_id("bench", 8, 4)
    >>> sorted(Counter((murmur2(shard_key(model_id, s)) & 0x7FFFFFFF) % 4 for s in range(8)).values())
    [2, 2, 2, 2]
    """
    candidate = 0
    while True:
        model_id = f"{name}-m{candidate}"
        counts = Counter((murmur2(shard_key(model_id, s)) & 0x7FFFFFFF) % partitions for s in range(shards))
        if len(counts) == min(shards, partitions) and max(counts.values()) - min(counts.values()) <= 1:
            return model_id
        candidate += 1
