"""The monitor's state/offset protocol (driftwarden.monitor.state) and the one Faust internal it uses.

The simulation test runs the protocol's own pieces (ledger, envelope, checkpoint line) against an
in-memory log with two inputs per partition, crashes the worker at random points (in-flight writes and
commits are lost or land, as with kill -9) and restarts it from the committed offsets: committed
offsets never run ahead of the newest durable checkpoint, and the final state is exactly that of a run
without crashes.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import random
import zlib

import cramjam
import faust
import orjson
import pytest

from driftwarden.monitor.state import (
    Admission,
    Checkpoint,
    CheckpointLine,
    CheckpointRefused,
    OffsetLedger,
    check_within_log,
)

GROUP = "g"


def encoded(offsets=None, state=b"state", partition=1) -> bytes:
    return Checkpoint(GROUP, partition, offsets or {"p": 10, "l": 3}, state).encode()


def refusal(raw: bytes, partition: int = 1) -> str:
    with pytest.raises(CheckpointRefused) as refused:
        Checkpoint.decode(raw, GROUP, partition)
    return refused.value.reason


def reheader(raw: bytes, **changes: object) -> bytes:
    head, _, payload = raw.partition(b"\n")
    return orjson.dumps({**orjson.loads(head), **changes}) + b"\n" + payload


# -- the envelope ------------------------------------------------------------------------------------


def test_checkpoint_round_trips_with_offsets_and_opaque_state():
    state = bytes(range(256)) * 100
    decoded = Checkpoint.decode(encoded({"p": 7, "l": 0}, state), GROUP, 1)
    assert (decoded.offsets, decoded.state, decoded.key) == ({"p": 7, "l": 0}, state, b"g/1")


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x80\x04garbage pickle", b"no newline at all", b"[1, 2]\npayload", b'{"format": "other"}\nx'],
)
def test_anything_but_an_envelope_is_refused_as_malformed(raw):
    assert refusal(raw) == "malformed"


def test_a_flipped_or_missing_payload_byte_fails_the_checksum():
    raw = encoded()
    flipped = raw[:-1] + bytes([raw[-1] ^ 1])
    assert refusal(flipped) == "checksum"
    assert refusal(raw[:-1]) == "checksum"


def test_another_version_group_or_partition_is_refused():
    assert refusal(reheader(encoded(), version=2)) == "version"
    assert refusal(reheader(encoded(), group="other")) == "identity"
    assert refusal(encoded(partition=2), partition=1) == "identity"


@pytest.mark.parametrize("offsets", [{"p": -1}, {"p": "10"}, {"p": True}, [10], None])
def test_offsets_that_are_not_offsets_are_refused(offsets):
    assert refusal(reheader(encoded(), offsets=offsets)) == "malformed"


def test_a_forged_payload_with_a_matching_checksum_that_does_not_decompress_is_refused():
    payload = b"\x80\x04\x95 not zlib, e.g. a pickle"
    forged = reheader(encoded(), payload_bytes=len(payload), payload_sha256=hashlib.sha256(payload).hexdigest())
    forged = forged.partition(b"\n")[0] + b"\n" + payload
    assert refusal(forged) == "payload"


def test_offsets_outside_the_log_belong_to_another_incarnation_of_it():
    check_within_log({"p": 10, "l": 3}, {"p": (0, 10), "l": (3, 8)})  # at the ends: fine
    for marks in ({"p": (0, 9), "l": (0, 8)}, {"p": (0, 10), "l": (4, 8)}):
        with pytest.raises(CheckpointRefused) as refused:
            check_within_log({"p": 10, "l": 3}, marks)
        assert refused.value.reason == "foreign_log"


# -- the ledger --------------------------------------------------------------------------------------


def test_ledger_admits_each_offset_once_and_in_order():
    ledger = OffsetLedger()
    ledger.start(0, {"p": 5})
    assert [ledger.admit("p", 0, o) for o in (0, 4, 5, 6, 9, 9, 7)] == [
        Admission.COVERED, Admission.COVERED, Admission.PROCESS, Admission.PROCESS, Admission.GAP, Admission.GAP,
        Admission.PROCESS,
    ]  # fmt: skip
    ledger.resume_at("p", 0, 9)  # 8 deleted by retention
    assert ledger.admit("p", 0, 9) is Admission.PROCESS
    assert ledger.admit("l", 0, 40) is Admission.PROCESS  # an input the checkpoint does not cover: as it comes
    assert ledger.covered(0) == {"l": 41, "p": 10}
    ledger.start(1, {"p": 2})
    ledger.forget({0})
    assert (ledger.covered(0), ledger.covered(1)) == ({}, {"p": 2})


# -- the checkpoint line: nothing committed before its checkpoint is durable ---------------------------


def test_offsets_are_committed_after_their_checkpoint_is_acknowledged_in_order():
    events: list[str] = []

    async def write(batch):
        await asyncio.sleep(0.01 if batch[0][0] == b"g/0" else 0)  # the first write is the slowest
        events.append(f"write {batch[0][0].decode()}")

    async def commit(offsets):
        events.append(f"commit {sorted(offsets.items())}")

    async def run():
        line = CheckpointLine(write, commit)
        first = line.submit([Checkpoint(GROUP, 0, {"p": 3}, b"a")])
        second = line.submit([Checkpoint(GROUP, 1, {"p": 5}, b"b")])
        assert line.busy
        await line.drain()
        return first.result(), second.result()

    assert asyncio.run(run()) == (True, True)
    assert events == ["write g/0", "commit [(('p', 0), 3)]", "write g/1", "commit [(('p', 1), 5)]"]


def test_a_failed_write_commits_nothing_and_a_failed_commit_is_survived():
    committed: list[dict] = []

    async def failing_write(batch):
        raise ConnectionError("broker gone")

    async def failing_commit(offsets):
        committed.append(offsets)
        raise RuntimeError("rebalanced")

    async def run(write, commit):
        return await CheckpointLine(write, commit).submit([Checkpoint(GROUP, 0, {"p": 3}, b"a")])

    async def ok_write(batch):
        return None

    assert asyncio.run(run(failing_write, failing_commit)) is False and committed == []
    assert asyncio.run(run(ok_write, failing_commit)) is True and committed == [{("p", 0): 3}]


class ToyLog:
    """Two inputs ("p", "l") of one partition, a compacted checkpoint store and committed offsets."""

    def __init__(self, rng: random.Random) -> None:
        self.records = {topic: [rng.randint(1, 1_000) for _ in range(n)] for topic, n in (("p", 400), ("l", 250))}
        self.durable: dict[bytes, bytes] = {}
        self.committed: dict[tuple[str, int], int] = {}
        self.violations: list[str] = []

    async def write(self, batch: list[tuple[bytes, bytes]]) -> None:
        await asyncio.sleep(0)  # in flight: a crash now loses it
        self.durable.update(batch)

    async def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        await asyncio.sleep(0)
        self.committed.update(offsets)
        self.check()

    def check(self) -> None:
        raw = self.durable.get(b"g/0")
        covered = Checkpoint.decode(raw, GROUP, 0).offsets if raw else {}
        for (topic, _), offset in self.committed.items():
            if offset > covered.get(topic, 0):
                self.violations.append(f"{topic}: committed {offset} ahead of checkpoint {covered.get(topic)}")


async def toy_worker(log: ToyLog, rng: random.Random, crash_after: int | None) -> dict[str, int]:
    """Process until ``crash_after`` steps (then drop everything in flight) or the end of the log."""
    raw = log.durable.get(b"g/0")
    checkpoint = Checkpoint.decode(raw, GROUP, 0) if raw else None
    state = orjson.loads(checkpoint.state) if checkpoint else {"count": 0, "sum": 0}
    ledger = OffsetLedger()
    ledger.start(0, checkpoint.offsets if checkpoint else {})
    position = {t: log.committed.get((t, 0), 0) for t in log.records}  # where the group's consumer starts
    line = CheckpointLine(log.write, log.commit)
    steps = 0
    while any(position[t] < len(log.records[t]) for t in log.records):
        topic = rng.choice([t for t in log.records if position[t] < len(log.records[t])])  # any interleaving
        offset = position[topic]
        position[topic] += 1
        if ledger.admit(topic, 0, offset) is Admission.PROCESS:
            state = {"count": state["count"] + 1, "sum": state["sum"] + log.records[topic][offset]}
        if rng.random() < 0.05:
            line.submit([Checkpoint(GROUP, 0, ledger.covered(0), orjson.dumps(state))])
        steps += 1
        if crash_after is not None and steps >= crash_after:
            for _ in range(rng.randint(0, 6)):  # some of what is in flight lands, the rest is lost
                await asyncio.sleep(0)
            return state
        if rng.random() < 0.3:
            await asyncio.sleep(0)
    await line.drain()
    return state


@pytest.mark.parametrize("seed", range(12))
def test_kill_9_at_random_points_never_commits_ahead_of_a_checkpoint_and_loses_or_doubles_nothing(seed):
    rng = random.Random(seed)
    log = ToyLog(rng)
    expected = {"count": 650, "sum": sum(map(sum, log.records.values()))}

    async def run() -> dict[str, int]:
        for _ in range(rng.randint(3, 8)):
            await toy_worker(log, rng, crash_after=rng.randint(1, 300))
            log.check()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()  # kill -9: nothing of the old worker runs on
            await asyncio.sleep(0)
        return await toy_worker(log, rng, crash_after=None)

    assert asyncio.run(run()) == expected
    assert log.violations == []
    assert log.durable  # the runs did write checkpoints, and commits followed them
    assert set(log.committed) <= {("p", 0), ("l", 0)}


# -- the Faust internal the monitor depends on (fails loudly when the pinned version changes) -----------


def test_faust_is_the_pinned_version_whose_commit_internals_the_monitor_uses():
    from faust.transport.consumer import ThreadDelegateConsumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    assert faust.__version__ == "0.15.3", "re-check driftwarden.kafka.faust_app.commit_offsets against this Faust"
    assert list(inspect.signature(ThreadDelegateConsumer._commit).parameters) == ["self", "offsets"]
    assert "self._thread.commit(offsets)" in inspect.getsource(ThreadDelegateConsumer._commit)
    source = inspect.getsource(AIOKafkaConsumerThread._commit)
    assert "self.assignment()" in source and '"already rebalanced"' in source


def test_faust_fetch_is_the_pinned_one_the_guarded_fetch_replaces():
    """``faust_app._ConsumerThread._fetch_records`` replaces Faust's with a guarded fetch: re-check it when
    Faust changes how it fetches, or how a record becomes a message (placeholders travel in its headers)."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer

    from driftwarden.kafka.faust_app import _ConsumerThread

    assert faust.__version__ == "0.15.3", "re-check driftwarden.kafka.faust_app._ConsumerThread._fetch_records"
    ours, theirs = (inspect.signature(c._fetch_records) for c in (_ConsumerThread, AIOKafkaConsumerThread))
    assert list(ours.parameters) == list(theirs.parameters) == ["self", "consumer", "active_partitions", "timeout",
                                                                "max_records"]  # fmt: skip
    fetch = inspect.getsource(AIOKafkaConsumerThread._fetch_records)
    assert "if not self.consumer.flow_active:" in fetch and "fetcher.fetched_records(" in fetch
    assert "self._fetch_records," in inspect.getsource(AIOKafkaConsumerThread.getmany)
    assert "record.headers," in inspect.getsource(Consumer._to_message)


def test_monitor_inputs_are_consumed_without_faust_acknowledgements():
    from driftwarden.monitor.service import MonitorService
    from driftwarden.settings import Settings

    service = MonitorService(Settings(kafka_bootstrap="127.0.0.1:1"))
    assert service.inputs.acks is False  # so Faust's own commit machinery never commits the inputs


def test_compressed_state_is_what_the_header_describes():
    head, _, payload = encoded(state=b"x" * 1000).partition(b"\n")
    header = orjson.loads(head)
    assert header["compression"] == "zstd" and bytes(cramjam.zstd.decompress(payload)) == b"x" * 1000
    assert header["payload_bytes"] == len(payload) and header["payload_sha256"] == hashlib.sha256(payload).hexdigest()


def test_a_checkpoint_of_an_earlier_build_zlib_compressed_is_restored():
    payload = zlib.compress(b"earlier state", 1)
    head = reheader(encoded(), compression="zlib", payload_bytes=len(payload),
                    payload_sha256=hashlib.sha256(payload).hexdigest()).partition(b"\n")[0]  # fmt: skip
    earlier = head + b"\n" + payload
    assert Checkpoint.decode(earlier, GROUP, 1).state == b"earlier state"
    assert refusal(reheader(earlier, compression="lz4")) == "malformed"
