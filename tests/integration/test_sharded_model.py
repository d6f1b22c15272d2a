"""One hot model over shards on the real broker: predictions keyed model_id/shard, summaries over the
window-summaries topic, alerts from the owner on the merged buckets; a silent shard holds nothing up, nor do
summaries that cannot be merged (dead-lettered with the reason)."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from helpers_integration import unique_model

from driftwarden.bench.scrape import samples, scrape
from driftwarden.bench.shard_trials import REFERENCE_N, close_shards, sharded_settings, summaries_of
from driftwarden.core.events import Alert, DeadLetter, NumericSummary
from driftwarden.core.profile import ReferenceProfile
from driftwarden.core.shards import ShardedReference, ShardSummarizer, shard_key, stream_of
from driftwarden.kafka.broker import free_port
from driftwarden.kafka.clients import ensure_topics
from driftwarden.monitor.status import latest_status, records_for, wait_for_status
from driftwarden.processes import spawn, terminate
from driftwarden.settings import Settings
from driftwarden_load.producer import ScenarioProducer, shared_producer
from driftwarden_load.scenarios import Scenario, generate

pytestmark = pytest.mark.integration


LATENESS_S = 2.0
DRIFT = Scenario(name="abrupt-shift", n_events=REFERENCE_N + 30_000, onset=REFERENCE_N + 15_000, magnitude=0.5,
                 seed=4, model_id=unique_model("sharded-drift"))  # fmt: skip
STABLE = Scenario(name="stable", n_events=REFERENCE_N + 30_000, seed=5, model_id=unique_model("sharded-stable"))
# configured with 2 shards, produced to shard 0 only: shard 1 never says a word
IDLE = Scenario(name="abrupt-shift", n_events=REFERENCE_N + 25_000, onset=REFERENCE_N + 12_000, magnitude=0.5,
                seed=6, model_id=unique_model("sharded-idle"))  # fmt: skip
# among its traffic: window summaries that cannot be merged
FORGED = Scenario(name="abrupt-shift", n_events=REFERENCE_N + 20_000, onset=REFERENCE_N + 10_000, magnitude=0.5,
                  seed=7, model_id=unique_model("sharded-forged"))  # fmt: skip


@pytest.fixture(scope="module")
def sharded(kafka: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Path, int]]:
    """A monitor worker of its own group with the sharded models configured and profiled; its metrics port."""
    work = tmp_path_factory.mktemp("sharded")
    # Topics of its own: the session's monitor worker (another group, these models not configured there) would
    # count their events too, closers included, and publish its own status of each model to the same status
    # topic, keyed by the model id (35,002 of the stable model's 35,000 read as the owner's count, once).
    isolated = kafka.model_copy(update={"topic_prefix": f"{kafka.topic_prefix}sh-{uuid.uuid4().hex[:8]}.",
                                        "monitor_group": f"{kafka.monitor_group}-sh",
                                        "state_dir": work / "state"})  # fmt: skip
    asyncio.run(ensure_topics(isolated, isolated.topics.specs(isolated.partitions)))
    config = {"shards": 2, "bucket_seconds": 1.0, "shard_lateness_s": LATENESS_S, "shard_idle_s": 3.0}
    settings = sharded_settings(isolated, work, dict.fromkeys((DRIFT, STABLE, IDLE, FORGED), config))
    port = free_port()
    worker = spawn(["monitor", "--metrics-port", str(port)], settings, work / "monitor.log")
    try:
        yield settings, work, port
    finally:
        terminate(worker)


def sharded_alerts(settings: Settings, model_id: str) -> list[Alert]:
    values = asyncio.run(records_for(settings, settings.topics.alerts, model_id))
    return [a for a in map(Alert.model_validate_json, values) if a.detector.startswith("sharded_")]


def wait_alerted(settings: Settings, scenario: Scenario, timeout_s: float) -> list[Alert]:
    deadline, alerts = time.monotonic() + timeout_s, []
    while time.monotonic() < deadline:
        alerts = sharded_alerts(settings, scenario.model_id)
        if {a.subject for a in alerts} >= set(scenario.drift_features):
            time.sleep(3)  # anything else the owner would say
            return sharded_alerts(settings, scenario.model_id)
        time.sleep(1)
    return alerts


def test_a_sharded_model_alerts_on_its_drifted_features_only_and_a_stable_one_not_at_all(sharded):
    settings, work, port = sharded

    async def produce() -> None:
        for scenario in (DRIFT, STABLE):
            await ScenarioProducer(settings, scenario, batch_size=250, label_fraction=0.0, shards=2).run()
            await close_shards(settings, scenario, 2, LATENESS_S + 3.0)
        async with shared_producer(settings) as producer:  # a columnar batch: not counted on the sharded path
            columns = next(generate(DRIFT, chunk_size=10)).prediction_columns(0, 10)
            await producer.send(settings.topics.predictions, orjson.dumps(columns), key=shard_key(DRIFT.model_id, 0))

    asyncio.run(produce())
    alerts = wait_alerted(settings, DRIFT, timeout_s=180)
    log = (work / "monitor.log").read_text(errors="replace")
    assert sorted(a.subject for a in alerts) == sorted(DRIFT.drift_features), log[-3000:]
    assert all(a.state == "firing" and a.kind == "data_drift" for a in alerts)
    onset_bucket = int(DRIFT.start_ts + DRIFT.onset / DRIFT.events_per_second)
    assert all(int(a.trigger_event_id.rsplit("/", 1)[1]) >= onset_bucket for a in alerts)
    # every event reached the owners, once: the closers stay open in their shards (their buckets unpublished)
    for scenario in (DRIFT, STABLE):
        status = asyncio.run(wait_for_status(settings, scenario.model_id,
                                             lambda s, n=scenario.n_events: s.events_processed >= n, 60))  # fmt: skip
        assert status.events_processed == scenario.n_events
        summaries = summaries_of(settings, scenario.model_id)
        streams: dict[tuple[str, int, int, int], list[int]] = {}
        for summary in summaries:
            streams.setdefault(stream_of(summary), []).append(summary.seq)
        assert {stream[2] for stream in streams} == {0, 1}
        assert all(seqs == list(range(len(seqs))) for seqs in streams.values())  # 0, 1, 2, ...: no replays
        assert not any(s.late_events for s in summaries)
        assert sum(s.events for s in summaries) == scenario.n_events
    assert sharded_alerts(settings, STABLE.model_id) == []
    letters = asyncio.run(records_for(settings, settings.topics.dead_letters, f"{DRIFT.model_id}/0"))
    (letter,) = [DeadLetter.model_validate_json(v) for v in letters]  # the columnar batch: kept whole, with the reason
    assert letter.reason.startswith("a columnar batch of a sharded model") and letter.payload_b64
    # counted for its model (keyed model_id/shard), where an SRE looks for it
    counted = samples(scrape(port), "driftwarden_dead_letters_total", model_id=DRIFT.model_id)
    assert list(counted.values()) == [1.0] and settings.topics.predictions in str(counted), counted


def test_a_silent_shard_does_not_hold_the_owners_decisions(sharded):
    settings, work, _ = sharded
    started = time.monotonic()
    asyncio.run(ScenarioProducer(settings, IDLE, batch_size=250, label_fraction=0.0, shards=1).run())
    alerts = wait_alerted(settings, IDLE, timeout_s=120)
    log = (work / "monitor.log").read_text(errors="replace")
    assert sorted(a.subject for a in alerts) == sorted(IDLE.drift_features), log[-3000:]
    assert time.monotonic() - started < 120
    status = asyncio.run(latest_status(settings, IDLE.model_id))
    assert status is not None and 0 < status.events_processed <= IDLE.n_events


def test_summaries_that_cannot_be_merged_are_dead_lettered_with_the_reason_and_hold_nothing_up(sharded):
    # Among the model's traffic, a stream of empty summaries of shard 0 (from a bucket before the traffic):
    # seq 0 merged; seq 1 with bins of another build, refused; seq 2 merged; seq 3 never arrives (an unreadable
    # summary is dead-lettered, its stream unknown); seq 4 held behind that gap, given up after shard_idle_s;
    # and one of another shard count. None of them changes a count or holds a decision.
    settings, work, port = sharded
    profile = ReferenceProfile.from_json((settings.profiles_dir / FORGED.model_id / "1.json").read_bytes())
    forger = ShardSummarizer(FORGED.model_id, "1", ShardedReference.of(profile), 0, 2, 1.0,
                             input_topic="forged", group=settings.monitor_group)  # fmt: skip
    first = int(FORGED.start_ts) - 10
    empty = [summary for bucket in range(first, first + 5) for summary in forger.close(bucket + 1.0)]
    feature = sorted(profile.numeric)[0]
    other_build = empty[1].model_copy(update={"numeric": {**empty[1].numeric, feature: NumericSummary(
        bins=[0, 0], missing=0, sum=0.0, sum_squares=0.0)}})  # fmt: skip
    other_count = empty[0].model_copy(update={"shards": 3, "input_origin": 1})
    forged = [empty[0].to_json(), other_build.to_json(), empty[2].to_json(), b'{"schema": "window-summary.v1", ',
              empty[4].to_json(), other_count.to_json()]  # fmt: skip

    async def produce() -> None:
        traffic = asyncio.create_task(
            ScenarioProducer(settings, FORGED, batch_size=250, label_fraction=0.0, shards=2).run()
        )
        await asyncio.sleep(1.0)
        async with shared_producer(settings) as producer:
            for value in forged:
                await producer.send(settings.topics.window_summaries, value, key=FORGED.model_id.encode())
        await traffic
        await close_shards(settings, FORGED, 2, LATENESS_S + 3.0)

    asyncio.run(produce())
    alerts = wait_alerted(settings, FORGED, timeout_s=180)
    log = (work / "monitor.log").read_text(errors="replace")
    assert sorted(a.subject for a in alerts) == sorted(FORGED.drift_features), log[-3000:]
    onset_bucket = int(FORGED.start_ts + FORGED.onset / FORGED.events_per_second)
    assert all(int(a.trigger_event_id.rsplit("/", 1)[1]) >= onset_bucket for a in alerts)
    status = asyncio.run(wait_for_status(settings, FORGED.model_id, lambda s: s.events_processed >= FORGED.n_events,
                                         60))  # fmt: skip
    assert status.events_processed == FORGED.n_events  # every event merged once: nothing held, nothing lost
    letters = [DeadLetter.model_validate_json(v)
               for v in asyncio.run(records_for(settings, settings.topics.dead_letters, FORGED.model_id))]  # fmt: skip
    assert all(letter.source_topic == settings.topics.window_summaries for letter in letters)
    # Every monitor group reading window-summaries dead-letters the unreadable one (whose group it cannot know);
    # only the owner's group refuses the others. This worker's own count is its metric, below.
    reasons = [(base64.b64decode(letter.payload_b64), letter.reason) for letter in letters]
    refused = [(payload, reason) for payload, reason in reasons if payload != forged[3]]
    assert refused == [
        (forged[1], f"a window summary refused: {feature}: 2 bins, not 50"),
        (forged[5], "a window summary refused: a summary of shard 0 of 3; this owner merges 2"),
    ], reasons
    unreadable = [reason for payload, reason in reasons if payload == forged[3]]
    assert unreadable and all(reason.startswith("not a window summary: ") for reason in unreadable), reasons
    deadline, outcomes = time.monotonic() + 30, {}
    while time.monotonic() < deadline:  # the owner's counts reach the metrics with its next status
        families = scrape(port)
        found = samples(families, "driftwarden_shard_summaries_total", model_id=FORGED.model_id)
        outcomes = {dict(labels)["outcome"]: value for labels, value in found.items()}
        if outcomes.get("missing"):
            break
        time.sleep(1)
    assert outcomes.get("skipped") == 2 and outcomes.get("missing") == 1, outcomes  # seq 4 merged after its gap
    letters_counted = samples(families, "driftwarden_dead_letters_total", model_id=FORGED.model_id)
    assert list(letters_counted.values()) == [3.0] and settings.topics.window_summaries in str(letters_counted)
