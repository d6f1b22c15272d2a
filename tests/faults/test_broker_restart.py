"""Broker kill -9 and restart on the same port: the durable broker loses nothing, the memory broker everything.

Durable trials share one SeaweedFS-backed broker; each trial uses its own topic and group, kills
tansu, weed or both with SIGKILL, restarts on the same ports and checks that every acknowledged
record and every committed group offset is back, and that new records append after the old ones.
Run with ``-s`` to see the measured rates and restart times (docs/embedded-broker.md).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from fault_brokers import (
    STEP_TIMEOUT_S,
    children,
    commit_offsets,
    committed_offsets,
    create_topic,
    dead,
    embedded_broker,
    kill_hard,
    produce_acknowledged,
    read_values,
    topic_names,
    wait_for_line,
)

from driftwarden.kafka.broker import EmbeddedBroker
from driftwarden.kafka.clients import client_options
from driftwarden.kafka.object_store import free_low_port
from driftwarden.processes import spawn, terminate
from driftwarden.settings import Settings

pytestmark = pytest.mark.integration

T = TypeVar("T")

RECORDS = 50_000
PARTITIONS = 3


def _timed(label: str, count: int, step: Callable[[], T]) -> T:
    started = time.monotonic()
    result = step()
    elapsed = time.monotonic() - started
    print(f"{label}: {count} in {elapsed:.2f} s = {count / elapsed:,.0f}/s" if count else f"{label}: {elapsed:.2f} s")
    return result


def _group_offsets(topic: str) -> dict[TopicPartition, int]:
    """Offsets a worker could have committed: distinct per partition, inside what was produced."""
    return {TopicPartition(topic, p): 1_000 + 17 * p for p in range(PARTITIONS)}


@pytest.mark.parametrize("victims", [("tansu",), ("weed",), ("tansu", "weed")], ids="+".join)
def test_durable_broker_keeps_acknowledged_records_and_offsets_across_kill_9(
    durable_broker: EmbeddedBroker, victims: tuple[str, ...]
) -> None:
    settings, topic, group = durable_broker.settings, f"durable-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    create_topic(settings, topic, PARTITIONS)
    acknowledged = _timed("produce (acks=all)", RECORDS, lambda: produce_acknowledged(settings, topic, RECORDS))
    assert len(acknowledged) == RECORDS
    commit_offsets(settings, group, _group_offsets(topic))
    port_before = durable_broker.port

    kill_hard(durable_broker, victims)
    _timed(f"restart after kill -9 of {'+'.join(victims)}", 0, durable_broker.restart)

    assert durable_broker.port == port_before
    values = _timed("read back", RECORDS, lambda: read_values(settings, topic))
    assert set(values) == acknowledged, "acknowledged records lost (or foreign ones) after the restart"
    assert len(values) == RECORDS, "records duplicated by the restart"
    assert committed_offsets(settings, group, list(_group_offsets(topic))) == _group_offsets(topic)

    more = produce_acknowledged(settings, topic, 1_000, prefix="after-restart-")
    after = read_values(settings, topic)
    assert len(after) == RECORDS + 1_000, "new records must append after the old ones, not overwrite them"
    assert set(after) == acknowledged | more


async def _clients_across_a_restart(broker: EmbeddedBroker, topic: str, records: int) -> tuple[int, list[bytes], int]:
    """A producer and a consumer (caught up at ``records``) that live through a kill -9 and restart of Tansu.

    Returns the offset the producer's next record gets, what the consumer receives until its fetches
    report the new log's high-water mark, and the consumer's position then.
    """
    loop, tp = asyncio.get_running_loop(), TopicPartition(topic, 0)
    producer = AIOKafkaProducer(**client_options(broker.settings), acks="all")
    consumer = AIOKafkaConsumer(**client_options(broker.settings), enable_auto_commit=False)
    await producer.start()
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        while await consumer.position(tp) < records:
            await consumer.getmany(timeout_ms=200)
        await loop.run_in_executor(None, kill_hard, broker, ("tansu",))
        await loop.run_in_executor(None, broker.restart)
        offset = (await producer.send_and_wait(topic, b"after the restart")).offset
        received: list[bytes] = []
        while consumer.highwater(tp) != offset + 1:
            received += [r.value for rs in (await consumer.getmany(timeout_ms=200)).values() for r in rs if r.value]
        return offset, received, await consumer.position(tp)
    finally:
        await producer.stop()
        await consumer.stop()


def test_clients_living_through_a_durable_broker_restart_carry_on(durable_broker: EmbeddedBroker) -> None:
    """With ``--data`` the log continues: the producer's next record gets offset N, the consumer receives it."""
    topic = f"survivors-{uuid.uuid4().hex[:8]}"
    create_topic(durable_broker.settings, topic, 1)
    produce_acknowledged(durable_broker.settings, topic, 1_000)
    trial = _clients_across_a_restart(durable_broker, topic, 1_000)
    offset, received, position = asyncio.run(asyncio.wait_for(trial, STEP_TIMEOUT_S))
    assert (offset, received, position) == (1_000, [b"after the restart"], 1_001)


def test_memory_broker_restart_loses_topics_records_and_group_offsets(tmp_path: Path) -> None:
    """What a client sees after the in-memory broker restarts: its topic, records and offsets are gone."""
    with embedded_broker(tmp_path, durable=False) as broker:
        settings, topic, group = broker.settings, f"memory-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
        create_topic(settings, topic, PARTITIONS)
        assert len(produce_acknowledged(settings, topic, 5_000)) == 5_000
        commit_offsets(settings, group, _group_offsets(topic))
        assert committed_offsets(settings, group, list(_group_offsets(topic))) == _group_offsets(topic)

        kill_hard(broker, ("tansu",))
        broker.restart()

        assert topic not in topic_names(settings), "the memory broker kept a topic across a restart"
        assert {spec.name for spec in settings.topics.specs(settings.partitions)} <= topic_names(settings)
        assert committed_offsets(settings, group, list(_group_offsets(topic))) == dict.fromkeys(_group_offsets(topic))
        create_topic(settings, topic, PARTITIONS)
        assert read_values(settings, topic) == []


def test_broker_command_with_data_keeps_everything_across_runs_and_reports_a_crashed_store(tmp_path: Path) -> None:
    """``driftwarden broker --data DIR``: stop (SIGTERM), start again on the same directory, kill -9 its weed."""
    port, log, log_again = free_low_port(), tmp_path / "cli.log", tmp_path / "cli-again.log"
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{port}")
    args = ["broker", "--port", str(port), "--data", str(tmp_path / "data"), "--log-file", str(tmp_path / "broker.log")]

    first = spawn(args, settings, log)
    try:
        wait_for_line(log, "broker ready", first)
        create_topic(settings, "cli-topic", PARTITIONS)
        acknowledged = produce_acknowledged(settings, "cli-topic", 10_000)
        commit_offsets(settings, "cli-group", _group_offsets("cli-topic"))
    finally:
        code = _timed("clean stop of the broker command (SIGTERM)", 0, lambda: terminate(first, timeout_s=60))
    assert code == 0 and "broker stopped" in log.read_text(), log.read_text()

    second = spawn(args, settings, log_again)
    try:
        _timed("start on the same data", 0, lambda: wait_for_line(log_again, "broker ready (data in", second))
        assert set(read_values(settings, "cli-topic")) == acknowledged
        offsets = _group_offsets("cli-topic")
        assert committed_offsets(settings, "cli-group", list(offsets)) == offsets
        parts = children(second.pid)
        os.kill(parts["weed"], signal.SIGKILL)
        assert second.wait(STEP_TIMEOUT_S) == 1
    finally:
        terminate(second)
    assert "the broker's storage (SeaweedFS weed) exited with code -9" in log_again.read_text()
    if not dead(parts["tansu"]):
        os.kill(parts["tansu"], signal.SIGKILL)
        pytest.fail("the broker command left tansu running after its store crashed")


def test_clients_living_through_a_memory_broker_restart_reuse_offsets_and_skip_silently(tmp_path: Path) -> None:
    """The new log starts at offset 0 (the producer's topic is auto-created again); a consumer that had
    read up to N waits at N in a log that ends at 1: no error, no reset, nothing delivered."""
    with embedded_broker(tmp_path, durable=False) as broker:
        create_topic(broker.settings, "survivors", 1)
        produce_acknowledged(broker.settings, "survivors", 1_000)
        trial = _clients_across_a_restart(broker, "survivors", 1_000)
        offset, received, position = asyncio.run(asyncio.wait_for(trial, STEP_TIMEOUT_S))
    assert (offset, received, position) == (0, [], 1_000)
