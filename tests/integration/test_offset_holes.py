"""An input offset that holds no record (a hole in the log) on the real broker.

Tansu with durable storage leaves such a hole when it is killed while it writes a batch: the offset is
taken, the batch is not stored, and the producer's retry lands on the next offset (seen in the durable
broker kill -9 trial: a fetch from the hole returns the record after it, on every read, also after
restarts). Here the hole is made on purpose: one record batch whose two records have the offset deltas
0 and 2, which the broker stores at its base offset and two past it.
"""

from __future__ import annotations

import asyncio
import time

import helpers_integration
import pytest
from aiokafka import TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from test_undecodable import model_inputs, produce_events, wait_committed_to_the_end

from driftwarden.core.events import PREDICTION_BATCH_SCHEMA
from driftwarden.kafka.clients import client_options, ensure_topics
from driftwarden.kafka.reader import next_record_offset
from driftwarden.monitor.status import wait_for_status
from driftwarden.settings import Settings, TopicSpec
from driftwarden_load.producer import envelope
from driftwarden_load.scenarios import Scenario, generate

pytestmark = pytest.mark.integration


async def produce_around_a_hole(kafka: Settings, tp: TopicPartition, key: bytes, values: tuple[bytes, bytes]) -> int:
    """The two values as one record batch with a hole between them; returns the offset of the first."""
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 4 * 1024 * 1024)  # v2, uncompressed, no producer id
    now_ms = int(time.time() * 1000)
    for delta, value in zip((0, 2), values, strict=True):
        builder.append(delta, now_ms, key, value, [])
    request = ProduceRequest(required_acks=-1, timeout=10_000, transactional_id=None,
                             topics=[(tp.topic, [(tp.partition, bytes(builder.build()))])])  # fmt: skip
    client = AIOKafkaClient(**client_options(kafka))
    await client.bootstrap()
    try:
        response = await client.send(client.cluster.leader_for_partition(tp), request)
    finally:
        await client.close()
    [(_, [(_, error_code, base, *_)])] = response.topics
    assert error_code == 0, response
    return int(base)


def test_a_fetch_from_a_hole_finds_the_record_after_it(kafka):
    tp = TopicPartition(f"{kafka.topic_prefix}holes", 0)  # not an input: the session's monitor worker reads those
    asyncio.run(ensure_topics(kafka, [TopicSpec(tp.topic, 1)]))
    base = asyncio.run(produce_around_a_hole(kafka, tp, b"hole", (b"before", b"after")))
    found = [asyncio.run(next_record_offset(kafka, tp.topic, tp.partition, offset)) for offset in range(base, base + 4)]
    assert found == [base, base + 2, base + 2, None]


def test_the_monitor_goes_on_past_a_hole_in_an_input_and_loses_nothing(kafka, monitor_worker):
    """Events before, around and after a hole in the predictions partition of one model are all processed,
    the offsets are committed past the hole, and the worker stays up (it used to exit with code 76, and
    after every restart again: the replay reaches the same hole)."""
    model_id = helpers_integration.unique_model("hole")
    inputs = model_inputs(kafka, model_id)
    produce_events(kafka, model_id, seed=1)
    around = next(generate(Scenario(n_events=100, seed=3, model_id=model_id))).prediction_events()  # no labels
    halves = (envelope(PREDICTION_BATCH_SCHEMA, model_id, around[:50]), envelope(PREDICTION_BATCH_SCHEMA, model_id,
                                                                                  around[50:]))  # fmt: skip
    asyncio.run(produce_around_a_hole(kafka, inputs[0], model_id.encode(), halves))
    produce_events(kafka, model_id, seed=2)

    status = asyncio.run(
        wait_for_status(kafka, model_id, lambda s: (s.events_processed, s.labels_received) == (900, 800), timeout_s=120)
    )
    assert status.events_dead_lettered == 0
    wait_committed_to_the_end(kafka, inputs)
    assert monitor_worker.process.poll() is None, monitor_worker.log_tail()
    assert "hold no record (a hole in the log); continuing" in monitor_worker.log_path.read_text()
