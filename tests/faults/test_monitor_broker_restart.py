"""The monitor worker through a broker kill -9 and restart on the same port (issue 14).

Durable broker (``--data``): tansu and its SeaweedFS store are killed with SIGKILL while a monitor worker
consumes live load with labels; after the restart the worker carries on, also past an input offset the
killed broker left without a record (a hole in the log: the worker used to take it for an out-of-order
delivery and exit with code 76, seen once in ten fault-suite runs beside a CPU hog; nothing is there to
lose). A worker that exits asking for a restart (code 75/76) is restarted as its supervisor would; either
way every event and label sent is processed or dead-lettered exactly once, each expected alert fired
with one id.

Memory broker: the restarted broker is empty. The worker's state (and checkpoint) belongs to the old log:
it is refused loudly, never written into the new broker, and the events produced after the restart are
all processed from scratch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from fault_brokers import STEP_TIMEOUT_S, embedded_broker, kill_hard

from driftwarden.bench.kill_trials import (
    KillRun,
    RunResult,
    Workers,
    model_ids,
    model_problems,
    produce_all,
    run_settings,
    wait_counts,
)
from driftwarden.bench.throughput import bench_settings
from driftwarden.core.decoding import LABELS, PREDICTIONS
from driftwarden.core.events import MonitorStatus
from driftwarden.kafka.broker import EmbeddedBroker
from driftwarden.kafka.reader import read_topic, watermarks
from driftwarden.monitor.state import Checkpoint, check_within_log, partition_of_key
from driftwarden.monitor.status import latest_status, records_for
from driftwarden.settings import CHECKPOINT_MAX_BYTES, Settings
from driftwarden_load.producer import ProduceReport, ScenarioProducer
from driftwarden_load.scenarios import Scenario

pytestmark = pytest.mark.integration

SEED = 1414


def repeats(status: MonitorStatus) -> int:
    """Predictions the monitor dropped as a repeat of an event id it had already seen."""
    return (status.label_joins or {}).get("duplicate_predictions", 0)


def counts(settings: Settings, scenarios: list[Scenario]) -> dict[str, int]:
    """Per model: events processed + dropped as repeats + dead-lettered, and labels counted, by its latest status."""
    found: dict[str, int] = {}
    for scenario in scenarios:
        status = asyncio.run(latest_status(settings, scenario.model_id))
        if status is not None:
            found[scenario.model_id] = status.events_processed + repeats(status) + status.events_dead_lettered
            found[f"{scenario.model_id} labels"] = status.labels_received or 0
    return found


def on_the_log(settings: Settings, model_id: str) -> tuple[ProduceReport, set[str]]:
    """What the input topics hold for ``model_id`` (a producer's retry after a lost acknowledgement puts
    a message there twice; the monitor drops the second copy's events as repeats of their ids): counts,
    and the distinct prediction ids."""
    log = ProduceReport()
    ids: set[str] = set()
    for value in asyncio.run(records_for(settings, settings.topics.predictions, model_id)):
        decoded = PREDICTIONS.decode(value)
        log.predictions += len(decoded.events)
        log.malformed += len(decoded.rejections)
        ids |= {event.event_id for event in decoded.events}
    for value in asyncio.run(records_for(settings, settings.topics.labels, model_id)):
        log.labels += len(LABELS.decode(value).events)
    return log, ids


async def _checkpoints(settings: Settings) -> list[Checkpoint]:
    found = []
    async for record in read_topic(settings, settings.topics.monitor_state, max_record_bytes=CHECKPOINT_MAX_BYTES):
        partition = partition_of_key(record.key, settings.monitor_group)
        if partition is not None and record.value is not None:
            found.append(Checkpoint.decode(record.value, settings.monitor_group, partition))
    return found


def checkpoints(settings: Settings) -> list[Checkpoint]:
    """Every checkpoint of the run's group on the state topic, oldest first."""
    return asyncio.run(_checkpoints(settings))


def covered(settings: Settings, partition: int) -> dict[str, int]:
    """The input offsets the newest checkpoint of ``partition`` covers ({} before the first one)."""
    return next((dict(c.offsets) for c in reversed(checkpoints(settings)) if c.partition == partition), {})


def highwater(settings: Settings, topic: str) -> int:
    """The end of ``topic``'s partition 0."""
    return asyncio.run(watermarks(settings, [(topic, 0)]))[(topic, 0)][1]


def processed(settings: Settings, model_id: str) -> int:
    status = asyncio.run(latest_status(settings, model_id))
    return status.events_processed if status else 0


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = STEP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f} s"
        time.sleep(0.2)


@pytest.mark.serial  # beside another test the worker fell behind the load before the kill (the trial void)
def test_monitor_under_live_load_through_a_durable_broker_kill_9_loses_nothing(
    durable_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    name = f"dbr-{uuid.uuid4().hex[:6]}"
    base = bench_settings(durable_broker.settings, tmp_path, name, partitions=durable_broker.settings.partitions)
    settings = run_settings(base, tmp_path, name)
    scenarios = [
        Scenario(name="abrupt-shift", n_events=9_000, onset=6_000, seed=SEED, model_id=model_id)
        for model_id in model_ids(name, settings.partitions)
    ]
    producers = [
        ScenarioProducer(settings, s, batch_size=100, rate=600.0, label_delay=1_000, malformed_every=1_000)
        for s in scenarios
    ]
    reports: list[ProduceReport] = []
    producing = threading.Thread(target=lambda: reports.extend(asyncio.run(produce_all(producers))))
    workers = Workers(settings, tmp_path / name, 1)
    try:
        workers.wait_back(0)
        producing.start()
        # Mid-stream, labels flowing: once the first model has ``kill_at`` events processed, or, with the worker
        # behind on a loaded machine, once its producer is past ``sent_at`` of 9,000 (seconds of load still to come).
        kill_at, sent_at = rng.randrange(2_000, 4_000), 7_000
        wait_until(
            lambda: processed(settings, scenarios[0].model_id) >= kill_at or producers[0].report.predictions >= sent_at,
            f"{kill_at} events processed or {sent_at} sent",
        )
        kill_hard(durable_broker, ("tansu", "weed"))
        durable_broker.restart()
        assert producing.is_alive(), "the load ended before the broker was killed: not a trial under load"
        producing.join(STEP_TIMEOUT_S)
        assert len(reports) == len(scenarios), "the producer failed"

        logs = {}
        for scenario, sent in zip(scenarios, reports, strict=True):
            log, ids = logs[scenario.model_id] = on_the_log(settings, scenario.model_id)
            assert len(ids) == sent.predictions, "events the producer sent are missing from the restarted broker"
            assert log.malformed >= sent.malformed and log.labels >= sent.labels, (log, sent)
        expected = {}
        for model_id, (log, _) in logs.items():
            expected[model_id] = log.predictions + log.malformed
            expected[f"{model_id} labels"] = log.labels

        def counted() -> dict[str, int]:
            workers.supervise()
            return counts(settings, scenarios)

        wait_counts(counted, expected)
        tally = RunResult(KillRun(seed=SEED, kills=0))
        for scenario in scenarios:
            status = asyncio.run(latest_status(settings, scenario.model_id))
            assert status is not None
            log, ids = logs[scenario.model_id]
            assert repeats(status) == log.predictions - len(ids), "re-sent events not dropped as repeats exactly"
            distinct = dataclasses.replace(log, predictions=len(ids))
            tally.problems += model_problems(settings, scenario, distinct, status, tally)
        assert tally.problems == [], f"{tally.problems}; worker log {workers.slots[0][2]}; {workers.supervised=}"
        assert workers.dead() == [], f"the monitor died; see {workers.slots[0][2]}"
    finally:
        producing.join(STEP_TIMEOUT_S)
        workers.stop()


def test_monitor_through_a_memory_broker_restart_refuses_the_old_state_loudly(tmp_path: Path) -> None:
    """The restarted memory broker is empty: the worker's state covers offsets the new log does not have.
    It must be refused (log line and metric), never written into the new broker, and every event sent
    after the restart must be processed (none skipped as "already covered" by the old offsets)."""
    with embedded_broker(tmp_path, durable=False) as broker:
        name = f"mbr-{uuid.uuid4().hex[:6]}"
        # The broker's own topics (a restart creates them again, as `driftwarden broker` does); a group of its own.
        settings = run_settings(broker.settings, tmp_path, name).model_copy(
            update={"topic_prefix": broker.settings.topic_prefix}
        )
        model_id = model_ids(name, settings.partitions)[0]
        workers = Workers(settings, tmp_path / name, 1)
        try:
            workers.wait_back(0)
            before = Scenario(n_events=3_000, seed=SEED, model_id=model_id)
            asyncio.run(ScenarioProducer(settings, before, label_delay=0).run())
            wait_counts(lambda: {"processed": processed(settings, model_id)}, {"processed": 3_000})
            end = highwater(settings, settings.topics.predictions)
            wait_until(lambda: covered(settings, 0).get(settings.topics.predictions) == end, "a checkpoint of it all")

            kill_hard(broker, ("tansu",))
            broker.restart()
            after = Scenario(n_events=1_000, seed=SEED + 1, model_id=model_id)  # below the old offsets
            asyncio.run(ScenarioProducer(settings, after, label_delay=0).run())

            worker_log = workers.slots[0][2]
            wait_counts(lambda: {"processed": processed(settings, model_id)}, {"processed": 1_000})
            assert "checkpoint REFUSED (foreign_log" in worker_log.read_text(), f"refused quietly; see {worker_log}"
            status = asyncio.run(latest_status(settings, model_id))
            assert status is not None and (status.events_processed, status.labels_received) == (1_000, 1_000)
            metrics = Workers.metrics(workers.slots[0][1])
            refused = re.search(r'driftwarden_checkpoints_refused_total\{reason="foreign_log"\} (\S+)', metrics)
            assert refused and float(refused.group(1)) >= 1, metrics
            # Nothing of the old state reached the new broker: every checkpoint there covers only the new log.
            wait_until(lambda: covered(settings, 0).get(settings.topics.predictions, 0) > 0, "a new checkpoint")
            marks = {topic: (0, highwater(settings, topic)) for topic in (settings.topics.predictions,
                                                                           settings.topics.labels)}  # fmt: skip
            for checkpoint in checkpoints(settings):
                check_within_log(checkpoint.offsets, marks)  # raises CheckpointRefused for old-log offsets
            assert workers.dead() == [], f"the monitor died; see {worker_log}"
        finally:
            workers.stop()
