"""One hot model over shards on the real broker: predictions keyed model_id/shard, summaries over the
window-summaries topic, alerts from the owner on the merged buckets."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from conftest import unique_model

from driftwarden.core.events import Alert, DeadLetter, PredictionEvent, WindowSummary
from driftwarden.core.profile import build_profile
from driftwarden.core.shards import shard_key
from driftwarden.kafka.clients import client_options
from driftwarden.monitor.status import records_for
from driftwarden.processes import spawn, terminate
from driftwarden.settings import Settings
from driftwarden_load.producer import envelope
from driftwarden_load.scenarios import Scenario, generate

pytestmark = pytest.mark.integration

SHARDS = 2
REFERENCE = 5_000


def send_sharded(kafka: Settings, model_id: str, rows: list[dict], batch_size: int, columns: bytes) -> None:
    """``rows`` in envelopes spread round robin over the shards, then ``columns`` (a columnar batch) to shard 0."""

    async def send() -> None:
        producer = AIOKafkaProducer(**client_options(kafka))
        await producer.start()
        try:
            for n, start in enumerate(range(0, len(rows), batch_size)):
                value = envelope("prediction-batch.v1", model_id, rows[start : start + batch_size])
                await producer.send(kafka.topics.predictions, value, key=shard_key(model_id, n % SHARDS))
            await producer.send(kafka.topics.predictions, columns, key=shard_key(model_id, 0))
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())


def test_a_sharded_model_alerts_from_merged_summaries_on_its_drifted_features_only(kafka: Settings, tmp_path: Path):
    scenario = Scenario(name="abrupt-shift", n_events=REFERENCE + 30_000, onset=REFERENCE + 15_000, magnitude=0.5,
                        seed=4, model_id=unique_model("sharded"))  # fmt: skip
    chunks = list(generate(scenario, chunk_size=5_000))
    rows = [e for chunk in chunks for e in chunk.prediction_events()]
    profile = build_profile(scenario.model_id, "1", [PredictionEvent.model_validate(e) for e in rows[:REFERENCE]])
    (tmp_path / "profiles" / scenario.model_id).mkdir(parents=True)
    (tmp_path / "profiles" / scenario.model_id / "1.json").write_bytes(profile.to_json())
    config = tmp_path / "monitoring.toml"
    config.write_text(f'[models."{scenario.model_id}"]\nshards = {SHARDS}\nbucket_seconds = 1.0\n')
    columns = orjson.dumps(chunks[-1].prediction_columns(0, 10))
    send_sharded(kafka, scenario.model_id, rows[REFERENCE:], batch_size=250, columns=columns)

    settings = kafka.model_copy(update={"state_dir": tmp_path / "state", "monitor_config": config,
                                        "profiles_dir": tmp_path / "profiles",
                                        "monitor_group": f"{kafka.monitor_group}-sharded"})  # fmt: skip
    worker = spawn(["monitor"], settings, tmp_path / "monitor.log")
    try:
        deadline, alerts = time.monotonic() + 180, []
        while time.monotonic() < deadline:
            values = asyncio.run(records_for(kafka, kafka.topics.alerts, scenario.model_id))
            alerts = [a for a in map(Alert.model_validate_json, values) if a.detector.startswith("sharded_")]
            if {a.subject for a in alerts} >= set(scenario.drift_features):
                break
            time.sleep(2)
        time.sleep(5)  # anything else the owner would say
        values = asyncio.run(records_for(kafka, kafka.topics.alerts, scenario.model_id))
        alerts = [a for a in map(Alert.model_validate_json, values) if a.detector.startswith("sharded_")]
        published = asyncio.run(records_for(kafka, kafka.topics.window_summaries, scenario.model_id))
        dead = asyncio.run(records_for(kafka, kafka.topics.dead_letters, f"{scenario.model_id}/0"))
        summaries = [WindowSummary.model_validate_json(v) for v in published]
    finally:
        terminate(worker)
    log = (tmp_path / "monitor.log").read_text(errors="replace")
    assert sorted(a.subject for a in alerts) == sorted(scenario.drift_features), log[-3000:]
    assert all(a.state == "firing" and a.kind == "data_drift" for a in alerts)
    onset_bucket = int(rows[scenario.onset]["ts"])
    assert all(int(a.trigger_event_id.rsplit("/", 1)[1]) >= onset_bucket for a in alerts)
    assert {s.shard for s in summaries} == set(range(SHARDS))
    counted = sum(s.events for s in summaries)
    assert 0 < counted <= 30_000 and not any(s.late_events for s in summaries)
    (letter,) = [DeadLetter.model_validate_json(v) for v in dead]  # the columnar batch: kept whole, with the reason
    assert letter.reason.startswith("a columnar batch of a sharded model") and letter.payload_b64
