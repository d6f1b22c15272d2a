"""kill -9 of the monitor mid-drift: the restarted worker resumes at its checkpoint without losing
or double-counting events, and the drift is alerted once (a replayed alert is the same alert)."""

from __future__ import annotations

import asyncio
import signal
import threading
import uuid
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from helpers_integration import produce

from driftwarden.bench.kill_trials import wait_counts
from driftwarden.core.events import Alert
from driftwarden.kafka.broker import free_port
from driftwarden.kafka.clients import client_options, ensure_topics
from driftwarden.kafka.reader import watermarks
from driftwarden.monitor.status import latest_status, probe_monitor, records_for, wait_for_status
from driftwarden.processes import spawn, terminate
from driftwarden.settings import Settings
from driftwarden_load.scenarios import Scenario

pytestmark = pytest.mark.integration


def processed(settings: Settings, model_id: str) -> int:
    status = asyncio.run(latest_status(settings, model_id))
    return status.events_processed if status else 0


def test_kill_9_mid_drift_loses_nothing_and_alerts_once(kafka: Settings, tmp_path):
    run = uuid.uuid4().hex[:8]
    settings = kafka.model_copy(update={
        "topic_prefix": f"dwrestart-{run}.", "monitor_group": f"dwrestart-{run}", "state_dir": tmp_path,
        # State is saved once (after a partition's first batch) while Faust would commit every 0.2 s: the
        # committed offsets must still stay at that checkpoint (Faust commits nothing of the inputs), so the
        # restart replays the whole drift onset, in large catch-up batches, without any seek.
        "checkpoint_interval_s": 3600.0, "commit_interval_s": 0.2,
    })  # fmt: skip
    asyncio.run(ensure_topics(settings, settings.topics.specs(settings.partitions)))

    def start_worker(name: str):
        return spawn(["monitor", "--metrics-port", str(free_port())], settings, tmp_path / f"{name}.log")

    first = start_worker("first")
    asyncio.run(probe_monitor(settings, timeout_s=180))  # a worker starts in 5-60 s on a loaded machine
    scenario = Scenario(name="abrupt-shift", n_events=60_000, onset=30_000, model_id=f"restart-{run}")
    producer = threading.Thread(target=produce, args=(settings, scenario), kwargs={"rate": 2_000, "batch_size": 100})
    producer.start()
    try:
        # Kill once the drift is under way (past the onset and its first alert), between checkpoints.
        asyncio.run(wait_for_status(settings, scenario.model_id, lambda s: s.alerts_fired >= 1, timeout_s=180))
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = asyncio.run(latest_status(settings, scenario.model_id))
        assert killed_at is not None and killed_at.events_processed < 60_000

        second = start_worker("second")
        try:
            producer.join(60)
            # Bounded by progress, not by the clock: on a loaded machine the replay is slow, not stuck.
            wait_counts(lambda: {"processed": processed(settings, scenario.model_id)}, {"processed": 60_000}, 180)
            status = asyncio.run(latest_status(settings, scenario.model_id))
            assert status is not None
            assert status.events_processed == 60_000  # exactly: no event lost, none counted twice
            status = asyncio.run(
                wait_for_status(settings, scenario.model_id, lambda s: s.labels_received >= 60_000, 60)
            )
            assert status.labels_received == 60_000 and status.label_joins["joined"] == 60_000
            assert second.poll() is None
            log = (tmp_path / "second.log").read_text()
            assert "restored" in log and "REFUSED" not in log and "[CRITICAL]" not in log
        finally:
            terminate(second)
    finally:
        producer.join(60)
        terminate(first)

    alerts = [Alert.model_validate_json(v) for v in asyncio.run(records_for(settings, settings.topics.alerts,
                                                                            scenario.model_id))]  # fmt: skip
    ids_by_fingerprint = defaultdict(set)
    for alert in alerts:
        ids_by_fingerprint[(alert.fingerprint, alert.state)].add(alert.alert_id)
    assert all(len(ids) == 1 for ids in ids_by_fingerprint.values()), ids_by_fingerprint
    open_subjects = {(a.kind, a.subject) for a in alerts if a.state == "firing"}
    assert open_subjects == scenario.ground_truth().expected_alerts
    assert not any(a.state == "resolved" for a in alerts)  # the drift persists: nothing closes


async def committed(settings: Settings, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
    """The monitor group's committed offsets (read without joining the group)."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=settings.monitor_group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {(topic, p): await consumer.committed(TopicPartition(topic, p)) for topic, p in partitions}
    finally:
        await consumer.stop()


def test_sigterm_under_load_saves_what_it_processed(kafka: Settings, tmp_path):
    """A graceful stop (SIGTERM) mid-stream checkpoints and commits everything the worker processed, so
    the next worker replays nothing (no timed checkpoint runs: only the stop can save it)."""
    run = uuid.uuid4().hex[:8]
    settings = kafka.model_copy(update={
        "topic_prefix": f"dwstop-{run}.", "monitor_group": f"dwstop-{run}", "state_dir": tmp_path,
        "checkpoint_interval_s": 3600.0,
    })  # fmt: skip
    asyncio.run(ensure_topics(settings, settings.topics.specs(settings.partitions)))
    predictions = [(settings.topics.predictions, p) for p in range(settings.partitions)]
    worker = spawn(["monitor", "--metrics-port", str(free_port())], settings, tmp_path / "worker.log")
    try:
        asyncio.run(probe_monitor(settings, timeout_s=180))
        before = {tp: high for tp, (_, high) in asyncio.run(watermarks(settings, predictions)).items()}
        scenario = Scenario(name="stable", n_events=40_000, model_id=f"stop-{run}")
        producer = threading.Thread(
            target=produce, args=(settings, scenario), kwargs={"rate": 4_000, "batch_size": 100}
        )
        producer.start()
        wait_counts(lambda: {"processed": processed(settings, scenario.model_id)}, {"processed": 10_000}, 180)
    finally:
        code = terminate(worker, timeout_s=60)
    producer.join(60)
    last_seen = processed(settings, scenario.model_id)  # the worker's last status: at most what it processed
    assert code == 0 and last_seen < 40_000
    log = (tmp_path / "worker.log").read_text()
    failures = [line for line in log.splitlines() if "failed" in line and "retrying" not in line]
    assert "stopping: saving" in log and not failures, log[-3000:]  # (a request retried on a busy broker is no failure)
    saved = sum(
        100 * ((offset or 0) - before[tp]) for tp, offset in asyncio.run(committed(settings, predictions)).items()
    )  # (each message carries 100 events; only the scenario wrote after ``before``)
    assert saved >= last_seen
