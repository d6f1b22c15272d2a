"""The monitor worker on the real broker: detection, dead letters and accounting, from the topics."""

from __future__ import annotations

import asyncio
import base64
import urllib.request

import orjson
import pytest
from conftest import Worker, produce, unique_model

from driftwarden.core.decoding import PREDICTIONS
from driftwarden.core.events import Alert, DeadLetter, RetrainCommand
from driftwarden.monitor.status import records_for, wait_for_status
from driftwarden.settings import Settings
from driftwarden_load.scenarios import Scenario, generate

pytestmark = pytest.mark.integration


def alerts_for(kafka: Settings, model_id: str) -> list[Alert]:
    values = asyncio.run(records_for(kafka, kafka.topics.alerts, model_id))
    return [Alert.model_validate_json(v) for v in values]


def dead_letters_for(kafka: Settings, model_id: str) -> list[DeadLetter]:
    values = asyncio.run(records_for(kafka, kafka.topics.dead_letters, model_id))
    return [DeadLetter.model_validate_json(v) for v in values]


def wait_processed(kafka: Settings, model_id: str, total: int, timeout_s: float = 120):
    """Wait until processed + dead-lettered reaches ``total`` for the model; return the status."""
    return asyncio.run(
        wait_for_status(kafka, model_id, lambda s: s.events_processed + s.events_dead_lettered >= total, timeout_s)
    )


def test_abrupt_shift_on_two_features_alerts_exactly_those_two_soon_after_onset(kafka, monitor_worker):
    scenario = Scenario(name="abrupt-shift", n_events=30_000, onset=10_000, model_id=unique_model("abrupt"))
    produce(kafka, scenario, batch_size=200)
    status = wait_processed(kafka, scenario.model_id, 30_000)
    assert status.events_processed == 30_000

    alerts = alerts_for(kafka, scenario.model_id)
    truth = scenario.ground_truth()
    data_drift = [a for a in alerts if a.kind == "data_drift"]
    assert sorted(a.subject for a in data_drift) == sorted(truth.drifting_features)
    index = {event_id: chunk.start + i for chunk in generate(scenario) for i, event_id in enumerate(chunk.event_ids)}
    for alert in data_drift:
        assert alert.state == "firing"
        assert 0 <= index[alert.trigger_event_id] - truth.onset <= 2_000
    assert status.alerts_fired == len(alerts)


@pytest.mark.parametrize("name", ["stable", "abrupt-shift", "gradual-shift", "categorical-shift", "concept-drift"])
def test_each_scenario_raises_exactly_the_expected_alert_kinds_and_subjects(kafka, monitor_worker, name):
    scenario = Scenario(name=name, n_events=50_000, onset=20_000, seed=21, model_id=unique_model(name))
    report = produce(kafka, scenario, batch_size=250, label_delay=400)
    assert report.labels == 50_000
    status = wait_processed(kafka, scenario.model_id, 50_000)
    assert status.events_processed == 50_000
    alerts = alerts_for(kafka, scenario.model_id)
    assert {(a.kind, a.subject) for a in alerts if a.state == "firing"} == scenario.ground_truth().expected_alerts
    commands = asyncio.run(records_for(kafka, kafka.topics.retrain_commands, scenario.model_id))
    if name == "concept-drift":
        (command,) = [RetrainCommand.model_validate_json(c) for c in commands]
        assert command.reasons == [a.fingerprint for a in alerts if a.kind == "performance_drift"]
        final = wait_processed(kafka, scenario.model_id, 50_000)
        assert final.performance["accuracy"] < 0.6 and final.label_joins["joined"] >= 49_000
    else:
        assert commands == []


def test_malformed_events_are_dead_lettered_with_reasons_and_nothing_is_lost(kafka, monitor_worker: Worker):
    scenario = Scenario(name="stable", n_events=10_000, model_id=unique_model("malformed"))
    report = produce(kafka, scenario, batch_size=100, malformed_every=100)
    assert (report.predictions, report.malformed) == (10_000, 100)
    status = wait_processed(kafka, scenario.model_id, 10_100)

    # Produced, counted from the predictions topic: every event or rejected input it holds for the model.
    produced = 0
    for value in asyncio.run(records_for(kafka, kafka.topics.predictions, scenario.model_id)):
        decoded = PREDICTIONS.decode(value)
        produced += len(decoded.events) + len(decoded.rejections)
    dead = dead_letters_for(kafka, scenario.model_id)
    assert produced == 10_100
    assert len(dead) == 100
    assert status.events_processed == 10_000
    assert produced == status.events_processed + len(dead)
    for letter in dead:
        assert letter.reason and letter.source_topic == kafka.topics.predictions
        assert PREDICTIONS.decode(base64.b64decode(letter.payload_b64)).events == []  # the bad input itself
    assert monitor_worker.process.poll() is None, monitor_worker.log_tail()


def send_one(kafka: Settings, model_id: str, value: bytes) -> None:
    from aiokafka import AIOKafkaProducer

    from driftwarden.kafka.clients import client_options

    async def send() -> None:
        producer = AIOKafkaProducer(**client_options(kafka))
        await producer.start()
        try:
            await producer.send_and_wait(kafka.topics.predictions, value, key=model_id.encode())
        finally:
            await producer.stop()

    asyncio.run(send())


def test_one_bad_event_in_an_envelope_is_dead_lettered_alone(kafka, monitor_worker):
    model_id = unique_model("envelope")
    events = next(generate(Scenario(n_events=3, model_id=model_id))).prediction_events()
    bad = {**events[1], "features": {"num_00": "12", "num_01": {"nested": True}}}
    envelope = {"schema": "prediction-batch.v1", "model_id": model_id, "events": [events[0], bad, events[2]]}
    send_one(kafka, model_id, orjson.dumps(envelope))
    status = wait_processed(kafka, model_id, 3, timeout_s=60)
    (letter,) = dead_letters_for(kafka, model_id)
    assert status.events_processed == 2
    assert letter.batch_index == 1
    assert letter.reason.startswith("features.num_01")
    assert orjson.loads(base64.b64decode(letter.payload_b64)) == bad


def test_one_bad_row_of_a_columnar_batch_is_dead_lettered_alone(kafka, monitor_worker):
    model_id = unique_model("columns")
    chunk = next(generate(Scenario(n_events=3, model_id=model_id)))
    document = chunk.prediction_columns()
    document["features"]["num_01"][1] = {"nested": True}
    send_one(kafka, model_id, orjson.dumps(document))
    status = wait_processed(kafka, model_id, 3, timeout_s=60)
    (letter,) = dead_letters_for(kafka, model_id)
    assert status.events_processed == 2
    assert (letter.batch_index, letter.reason) == (1, "features.num_01: Input should be a number, a string, "
                                                      "a boolean or null")  # fmt: skip
    row = orjson.loads(base64.b64decode(letter.payload_b64))
    assert row["event_id"] == chunk.event_ids[1] and row["features"]["num_01"] == {"nested": True}


def test_single_event_messages_are_processed_like_batches(kafka, monitor_worker):
    scenario = Scenario(name="stable", n_events=1_500, model_id=unique_model("single"))
    report = produce(kafka, scenario, batch_size=1)
    assert report.prediction_messages == 1_500
    assert wait_processed(kafka, scenario.model_id, 1_500).events_processed == 1_500


def test_metrics_endpoint_exposes_counts_statistics_lag_and_joins(kafka, monitor_worker):
    scenario = Scenario(name="stable", n_events=8_000, model_id=unique_model("metrics"))
    produce(kafka, scenario, label_delay=1_000)
    wait_processed(kafka, scenario.model_id, 8_000)
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor_worker.metrics_port}/metrics", timeout=5) as response:
        body = response.read().decode()
    model = f'model_id="{scenario.model_id}"'
    assert f"driftwarden_events_processed{{{model}}} 8000.0" in body
    # One window was tested after the 5,000-event reference: its statistics are exposed per subject.
    assert (
        f'driftwarden_drift_statistic{{kind="data_drift",{model},statistic="wasserstein_normed",subject="num_00"}}'
        in body
    )
    assert f'driftwarden_pending_label_joins{{{model},side="predictions"}}' in body
    assert 'driftwarden_consumer_lag{partition="' in body
    assert "driftwarden_batch_seconds_count" in body
