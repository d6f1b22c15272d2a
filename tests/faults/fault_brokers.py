"""Brokers for fault trials: a real embedded broker on a fixed low port, killed with SIGKILL and restarted.

A plain module (not a conftest) so any fault test can import it: ``from fault_brokers import ...``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from driftwarden.kafka.broker import EmbeddedBroker
from driftwarden.kafka.clients import client_options, ensure_topics
from driftwarden.kafka.reader import read_topic
from driftwarden.settings import Settings, TopicSpec

#: Every client step of a trial is bounded by this (generous: the machine is shared and slow).
STEP_TIMEOUT_S = 120.0

#: A group's committed offset per partition (None: nothing committed).
Committed = dict[TopicPartition, int | None]


@contextmanager
def embedded_broker(work: Path, *, durable: bool, settings: Settings | None = None) -> Iterator[EmbeddedBroker]:
    """A started broker (durable: SeaweedFS-backed, data under ``work/data``), always stopped afterwards."""
    broker = EmbeddedBroker(work / "broker.log", settings=settings, data_dir=work / "data" if durable else None)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def dead(pid: int) -> bool:
    """True once ``pid`` (any process, not only a child) is gone or a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith(("Z", "X"))
    except (FileNotFoundError, IndexError):
        return True


def _child_exited(pid: int) -> bool:
    """True once our child ``pid`` has exited completely, without reaping it (its owner's Popen does).

    Not /proc: a killed multi-threaded process (weed is Go) shows a zombie leader while its threads
    still exit, and until they have, ``Popen.poll()`` still says it runs."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def kill_hard(broker: EmbeddedBroker, parts: tuple[str, ...], timeout_s: float = 30.0) -> None:
    """``kill -9`` the named parts (``tansu``, ``weed``) and wait until each has exited."""
    pids = broker.pids
    for part in parts:
        os.kill(pids[part], signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while not all(_child_exited(pids[part]) for part in parts):
        assert time.monotonic() < deadline, f"{parts} still alive {timeout_s} s after SIGKILL"
        time.sleep(0.05)


def create_topic(settings: Settings, topic: str, partitions: int) -> None:
    asyncio.run(asyncio.wait_for(ensure_topics(settings, [TopicSpec(topic, partitions)]), STEP_TIMEOUT_S))


async def _produce(settings: Settings, topic: str, count: int, prefix: str) -> set[bytes]:
    producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=5)
    await producer.start()
    acknowledged: set[bytes] = set()
    try:
        for start in range(0, count, 5_000):
            values = [f"{prefix}{i:08d}".encode() for i in range(start, min(start + 5_000, count))]
            futures = [await producer.send(topic, value, key=value) for value in values]
            for value, future in zip(values, futures, strict=True):
                await future  # raises unless the broker acknowledged the record
                acknowledged.add(value)
    finally:
        await producer.stop()
    return acknowledged


def produce_acknowledged(settings: Settings, topic: str, count: int, prefix: str = "m") -> set[bytes]:
    """Produce ``count`` distinct records (``PREFIX00000000``...) with acks=all; return those acknowledged."""
    return asyncio.run(asyncio.wait_for(_produce(settings, topic, count, prefix), STEP_TIMEOUT_S))


async def _send(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes]]) -> list[tuple[int, int]]:
    producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=5, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        return [(m.partition, m.offset) for m in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


def send_records(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes]]) -> list[tuple[int, int]]:
    """Produce ``(key, value)`` records in order (acks=all); return where each landed (partition, offset)."""
    return asyncio.run(asyncio.wait_for(_send(settings, topic, records), STEP_TIMEOUT_S))


async def _read_values(settings: Settings, topic: str) -> list[bytes]:
    return [record.value async for record in read_topic(settings, topic) if record.value is not None]


def read_values(settings: Settings, topic: str) -> list[bytes]:
    """Every record value of ``topic`` from the beginning to its current end (no consumer group)."""
    return asyncio.run(asyncio.wait_for(_read_values(settings, topic), STEP_TIMEOUT_S))


async def _group_consumer(settings: Settings, group: str, partitions: list[TopicPartition]) -> AIOKafkaConsumer:
    """A consumer of ``group`` with ``partitions`` assigned by hand (commits need an assignment)."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=group, enable_auto_commit=False)
    await consumer.start()
    consumer.assign(partitions)
    return consumer


async def _commit(settings: Settings, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = await _group_consumer(settings, group, list(offsets))
    try:
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


def commit_offsets(settings: Settings, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit ``offsets`` for ``group`` (as a worker that processed up to there would)."""
    asyncio.run(asyncio.wait_for(_commit(settings, group, offsets), STEP_TIMEOUT_S))


async def _committed(settings: Settings, group: str, partitions: list[TopicPartition]) -> Committed:
    consumer = await _group_consumer(settings, group, partitions)
    try:
        return {tp: await consumer.committed(tp) for tp in partitions}
    finally:
        await consumer.stop()


def committed_offsets(settings: Settings, group: str, partitions: list[TopicPartition]) -> Committed:
    """The group's committed offsets, read with ``consumer.committed()`` (Tansu's admin call breaks)."""
    return asyncio.run(asyncio.wait_for(_committed(settings, group, partitions), STEP_TIMEOUT_S))


async def _topics(settings: Settings) -> set[str]:
    consumer = AIOKafkaConsumer(**client_options(settings))
    await consumer.start()
    try:
        return set(await consumer.topics())
    finally:
        await consumer.stop()


def topic_names(settings: Settings) -> set[str]:
    return asyncio.run(asyncio.wait_for(_topics(settings), STEP_TIMEOUT_S))


def children(pid: int) -> dict[str, int]:
    """The direct child processes of ``pid`` by program name (``tansu``, ``weed``)."""
    listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {
        Path(Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0].decode()).name: int(child) for child in listed
    }


def wait_for_line(
    log: Path, text: str | re.Pattern[str], process: subprocess.Popen[bytes], timeout_s: float = STEP_TIMEOUT_S
) -> None:
    """Wait until ``text`` (or a match of the pattern) appears in ``log``; fail with the log if the
    process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        content = log.read_text(errors="replace") if log.exists() else ""
        if text.search(content) if isinstance(text, re.Pattern) else text in content:
            return
        assert process.poll() is None, f"exited with {process.returncode} before {text!r}:\n{content}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout_s} s:\n{content}"
        time.sleep(0.1)
