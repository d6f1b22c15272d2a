"""A record batch that cannot be decompressed (corrupt lz4 under a valid CRC) on the real broker: plain
aiokafka is stuck on it for good and drops the record before it; :class:`GuardedFetch` hands out every
good record and dead-letters each offset of the broken batch by coordinates."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import helpers_integration
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2

from driftwarden.core.events import DeadLetter
from driftwarden.kafka.clients import client_options
from driftwarden.kafka.reader import read_topic, watermarks
from driftwarden.kafka.undecodable import UNDECODABLE, GuardedFetch
from driftwarden.monitor.status import wait_for_status
from driftwarden.settings import Settings
from driftwarden_load.scenarios import Scenario

pytestmark = pytest.mark.integration
CORRUPT_BATCH = Path(__file__).with_name("corrupt_batch.py")


def produce_corrupt_batch(kafka: Settings, topic: str, partition: int, key: str, n: int) -> None:
    command = [sys.executable, str(CORRUPT_BATCH), str(kafka.kafka_bootstrap), topic, str(partition), key, str(n)]
    subprocess.run(command, check=True, timeout=60)


async def produce(kafka: Settings, topic: str, partition: int, value: bytes) -> None:
    producer = AIOKafkaProducer(**client_options(kafka))
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()


async def consume(kafka: Settings, topic: str, guarded: bool, wanted: int) -> tuple[list, list]:
    consumer = AIOKafkaConsumer(topic, **client_options(kafka), group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    fetch = GuardedFetch(consumer, grouped=False)
    records, letters = [], []
    try:
        for _ in range(200):
            if guarded:
                got, skipped = await fetch.getmany(timeout_ms=200, max_records=100)
                letters += skipped
            else:
                try:
                    got = [r for batch in (await consumer.getmany(timeout_ms=200)).values() for r in batch]
                except UNDECODABLE as exc:
                    letters.append(exc)
                    continue
            records += got
            if len(records) >= wanted:
                break
        return records, letters
    finally:
        await consumer.stop()


def test_an_undecodable_batch_is_dead_lettered_by_coordinates_and_nothing_else_is_lost(kafka):
    topic = f"{kafka.topic_prefix}undecodable-{uuid.uuid4().hex[:6]}"
    asyncio.run(produce(kafka, topic, 0, b"before"))
    produce_corrupt_batch(kafka, topic, 0, "k", 3)  # offsets 1..3
    asyncio.run(produce(kafka, topic, 0, b"after"))
    asyncio.run(produce(kafka, topic, 1, b"elsewhere"))

    plain, errors = asyncio.run(consume(kafka, topic, guarded=False, wanted=3))
    assert b"after" not in {r.value for r in plain} and len(errors) > 10  # stuck for good without the guard

    records, letters = asyncio.run(consume(kafka, topic, guarded=True, wanted=3))
    assert sorted((r.partition, r.offset, r.value) for r in records) == [
        (0, 0, b"before"), (0, 4, b"after"), (1, 0, b"elsewhere"),
    ]  # fmt: skip
    assert [(letter.source_topic, letter.source_partition, letter.source_offset) for letter in letters] == [
        (topic, 0, 1), (topic, 0, 2), (topic, 0, 3),
    ]  # fmt: skip
    assert all("DecompressionError" in letter.reason and letter.payload_b64 == "" for letter in letters)


def test_topic_reads_skip_an_undecodable_batch_and_finish(kafka, caplog):
    """What the trainer (training window), the CLI and the demo read through: the bad offsets are skipped
    with an error line, the read still ends at the topic's end."""
    topic = f"{kafka.topic_prefix}undecodable-read-{uuid.uuid4().hex[:6]}"
    asyncio.run(produce(kafka, topic, 0, b"before"))
    produce_corrupt_batch(kafka, topic, 0, "k", 2)  # offsets 1..2
    asyncio.run(produce(kafka, topic, 0, b"after"))

    async def read_all() -> list[bytes | None]:
        return [record.value async for record in read_topic(kafka, topic)]

    with caplog.at_level("ERROR", logger="driftwarden.kafka.reader"):
        values = asyncio.run(asyncio.wait_for(read_all(), timeout=60))
    assert values == [b"before", b"after"]
    skipped = [m for m in caplog.messages if " skipped: " in m]
    assert [m.split(" skipped: ")[0] for m in skipped] == [f"{topic}[0] offset 1", f"{topic}[0] offset 2"]
    assert all("DecompressionError" in m for m in skipped)


async def committed(kafka: Settings, group: str, partitions: list[TopicPartition]) -> dict[TopicPartition, int | None]:
    """What ``group`` committed (read without joining the group)."""
    reader = AIOKafkaConsumer(**client_options(kafka), group_id=group, enable_auto_commit=False)
    await reader.start()
    try:
        return {tp: await reader.committed(tp) for tp in partitions}
    finally:
        await reader.stop()


def model_inputs(kafka: Settings, model_id: str) -> list[TopicPartition]:
    """The predictions and labels partitions of ``model_id`` (where the producer puts the model)."""
    partition = (murmur2(model_id.encode()) & 0x7FFFFFFF) % kafka.partitions
    return [TopicPartition(topic, partition) for topic in (kafka.topics.predictions, kafka.topics.labels)]


def produce_events(kafka: Settings, model_id: str, seed: int) -> None:
    """400 predictions of ``model_id`` in envelopes of 50, each labelled at once."""
    scenario = Scenario(n_events=400, seed=seed, model_id=model_id)
    helpers_integration.produce(kafka, scenario, batch_size=50, label_delay=0)


def wait_committed_to_the_end(kafka: Settings, inputs: list[TopicPartition], timeout_s: float = 60) -> None:
    """Until the monitor group's committed offsets of ``inputs`` are their high-water marks."""
    ends = asyncio.run(watermarks(kafka, [(tp.topic, tp.partition) for tp in inputs]))
    ends_by_tp = {tp: ends[(tp.topic, tp.partition)][1] for tp in inputs}
    deadline = time.monotonic() + timeout_s
    while (got := asyncio.run(committed(kafka, kafka.monitor_group, inputs))) != ends_by_tp:
        assert time.monotonic() < deadline, f"committed {got}, the partitions end at {ends_by_tp}"
        time.sleep(0.5)


async def dead_letters_since(kafka: Settings, first: dict[TopicPartition, int]) -> list[DeadLetter]:
    """The dead letters of inputs at or after the ``first`` offset of their partition."""
    letters = [
        DeadLetter.model_validate_json(r.value or b"") async for r in read_topic(kafka, kafka.topics.dead_letters)
    ]
    return [
        d for d in letters if d.source_offset >= first.get(TopicPartition(d.source_topic, d.source_partition), -1) >= 0
    ]


def test_the_monitor_dead_letters_an_undecodable_batch_by_coordinates_and_carries_on(kafka, monitor_worker):
    """A corrupt batch on the predictions and on the labels topic, between good events of one model: the
    monitor worker stays up, dead-letters each offset of the batches by its coordinates, processes every
    good event and label, and commits its offsets past the batches (every offset accounted for)."""
    model_id = helpers_integration.unique_model("corrupt")
    inputs = model_inputs(kafka, model_id)
    produce_events(kafka, model_id, seed=1)
    before = asyncio.run(watermarks(kafka, [(tp.topic, tp.partition) for tp in inputs]))
    bad = {tp: (before[(tp.topic, tp.partition)][1], n) for tp, n in zip(inputs, (3, 2), strict=True)}
    for tp, (_, n) in bad.items():
        produce_corrupt_batch(kafka, tp.topic, tp.partition, model_id, n)
    produce_events(kafka, model_id, seed=2)

    status = asyncio.run(wait_for_status(kafka, model_id, lambda s: s.labels_received == 800, timeout_s=120))
    assert (status.events_processed, status.labels_received, status.events_dead_lettered) == (800, 800, 0)
    letters = asyncio.run(dead_letters_since(kafka, {tp: first for tp, (first, _) in bad.items()}))
    expected = sorted((tp.topic, tp.partition, first + i) for tp, (first, n) in bad.items() for i in range(n))
    assert sorted((d.source_topic, d.source_partition, d.source_offset) for d in letters) == expected
    assert all(d.reason.startswith("undecodable record batch") and d.payload_b64 == "" for d in letters)

    wait_committed_to_the_end(kafka, inputs)
    assert monitor_worker.process.poll() is None, monitor_worker.log_tail()
