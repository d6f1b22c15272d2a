"""`topics create [--dry-run]`, `topics list`, and where a new monitor group starts, on the real broker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from helpers_integration import produce, unique_model

from driftwarden.kafka.clients import client_options, ensure_topics
from driftwarden.kafka.reader import start_new_group_at_end, watermarks
from driftwarden.monitor.status import probe_monitor, wait_for_status
from driftwarden.notify.reading import overview
from driftwarden.processes import child_env, spawn, terminate
from driftwarden.settings import Settings
from driftwarden_load.scenarios import Scenario

pytestmark = pytest.mark.integration


def fresh(kafka: Settings, **update: object) -> Settings:
    """The session's broker with topics and a group of this test's own."""
    run = uuid.uuid4().hex[:8]
    return kafka.model_copy(update={"topic_prefix": f"dw-{run}.", "monitor_group": f"dw-{run}-monitor", **update})


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftwarden", *args], env=child_env(settings), capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_topics_dry_run_create_and_list(kafka: Settings):
    settings = fresh(kafka)
    topics = settings.topics
    dry = cli(settings, "topics", "create", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert f"would create  {topics.monitor_state}  partitions=1  replication=1  cleanup.policy=compact" in lines[7]
    assert lines[-1] == "dry run: 11 of 11 topics would be created on a cluster of 1 brokers"
    assert cli(settings, "topics", "list").stdout.splitlines()[-1] == "0 of 11 topics exist; 1 brokers"  # nothing made

    three = cli(settings.model_copy(update={"topic_replication_factor": 3}), "topics", "create", "--dry-run")
    assert three.returncode == 1
    assert three.stderr == (
        "driftwarden: error: replication factor 3 exceeds the cluster's 1 brokers: creating would fail "
        "(set DRIFTWARDEN_TOPIC_REPLICATION_FACTOR)\n"
    )

    created = cli(settings, "topics", "create")
    assert created.returncode == 0 and created.stdout.startswith(f"created: {topics.predictions}, ")
    listed = cli(settings, "topics", "list").stdout.splitlines()
    assert listed[-1] == "11 of 11 topics exist; 1 brokers"
    retention = f"retention.ms={14 * 24 * 3600 * 1000}"  # the trainer joins a retrain's examples from them
    for name in (topics.predictions, topics.labels):
        assert f"{name}  partitions=4  replication=1  min.insync.replicas=1  {retention}" in listed
    state = next(line for line in listed if line.startswith(topics.monitor_state))
    assert "cleanup.policy=compact" in state and "max.message.bytes=67108864" in state
    again = cli(settings, "topics", "create", "--dry-run").stdout.splitlines()
    assert all(line.startswith("exists  ") for line in again[:-1]) and again[-1].startswith("dry run: 0 of 11")


async def committed(settings: Settings, group: str, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp: await consumer.committed(tp) for tp in partitions}
    finally:
        await consumer.stop()


async def wait_for_start(settings: Settings, partition: TopicPartition, worker: subprocess.Popen[bytes]) -> int:
    """The offset a new worker committed as its group's start (bounded by the worker staying alive)."""
    while (offset := (await committed(settings, settings.monitor_group, [partition]))[partition]) is None:
        assert worker.poll() is None, "the monitor exited"
        await asyncio.sleep(0.2)
    return offset


def test_a_new_monitor_group_with_latest_starts_at_the_true_end_and_sees_only_new_events(kafka: Settings, tmp_path):
    settings = fresh(kafka, partitions=1, auto_offset_reset="latest", state_dir=tmp_path)
    asyncio.run(ensure_topics(settings, settings.topics.specs(1)))
    history = unique_model("history")
    # Produce batches of many records: the embedded broker's end offset is then the last batch's start + 1.
    produce(settings, Scenario(name="stable", n_events=4_000, model_id=history), batch_size=20, label_fraction=0.0)
    predictions = TopicPartition(settings.topics.predictions, 0)
    (_, high) = asyncio.run(watermarks(settings, [(predictions.topic, 0)]))[(predictions.topic, 0)]
    assert high == 200  # 4,000 events in envelopes of 20

    worker = spawn(["monitor", "--metrics-port", "0"], settings, tmp_path / "monitor.log")
    try:
        # "latest" means from the moment the worker starts: wait for that moment (its start offsets) first.
        start = asyncio.run(wait_for_start(settings, predictions, worker))
        # The true end. The embedded broker's end offset for this log was 1 when measured (all 200 messages
        # went in one record batch): a consumer's own "latest" would have replayed 199 of them.
        assert start == high
        asyncio.run(probe_monitor(settings, timeout_s=60))
        new = unique_model("new")
        produce(settings, Scenario(name="stable", n_events=1_000, model_id=new), batch_size=20, label_fraction=0.0)
        status = asyncio.run(wait_for_status(settings, new, lambda s: s.events_processed >= 1_000, timeout_s=60))
        assert status.events_processed == 1_000
        assert asyncio.run(overview(settings, history)) == []  # history never replayed: no status at all
    finally:
        terminate(worker)

    # Restarted, the group resumes where it committed; a group with offsets is never moved to the end.
    assert asyncio.run(start_new_group_at_end(settings, settings.monitor_group, [predictions.topic])) == {}
    other = f"{settings.monitor_group}-other"
    assert asyncio.run(start_new_group_at_end(settings, other, [predictions.topic])) == {
        (predictions.topic, 0): asyncio.run(watermarks(settings, [(predictions.topic, 0)]))[(predictions.topic, 0)][1]
    }
