"""Property-based fuzz through Kafka into the running services (issue 14).

Hypothesis-generated hostile messages (random bytes, invalid JSON, wrong types, huge values, NaN and
Infinity literals, oversize documents, invalid UTF-8, wrong schema versions, plus valid ones) are
produced onto every topic a service consumes while a real monitor, trainer, serving (stream mode and
model follower) and notify run. Afterwards, exactly:

* every consumer group committed every message of its topics (none is stuck on a message);
* the inputs each service's own contract rejects are dead-lettered, with a reason, by their
  coordinates, and nothing else is (monitor, trainer, notify); serving answers or dead-letters every
  inference request (answered + dead-lettered = produced, the undecodable ones among the latter);
* the monitor fed exactly the events its decoder accepts to the detectors; the trainer published one
  verdict per valid command; the model follower accounted for every model-published event;
* every service is alive, and serving's ``/readyz`` says ready.
"""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from fault_brokers import committed_offsets, send_records
from fuzz_inputs import LABEL, PREDICTION, PUBLISHED, RETRAIN, batch, drawn, hostile
from pydantic import BaseModel, ValidationError
from service_trials import Service, read_events, trial_settings

from driftwarden.bench.invariants import Coordinates, accounting_problems, dead_letter_coordinates, wait_counts
from driftwarden.bench.scrape import samples, scrape
from driftwarden.core.decoding import LABELS, PREDICTIONS, Decoder
from driftwarden.core.events import (
    LABEL_BATCH_SCHEMA,
    PREDICTION_BATCH_SCHEMA,
    Alert,
    DeadLetter,
    InferenceRequest,
    InferenceResponse,
    RetrainCommand,
)
from driftwarden.kafka.broker import free_port
from driftwarden.kafka.reader import read_topic, watermarks
from driftwarden.monitor.status import probe_monitor
from driftwarden.registry.store import ModelRegistry
from driftwarden.serving.readiness import wait_until_ready
from driftwarden.settings import Settings
from driftwarden.trainer.model import TrainerConfig
from driftwarden.trainer.workflow import bootstrap
from driftwarden_load.scenarios import Scenario, generate

pytestmark = pytest.mark.integration

SERVED = "fuzz-served"
ALERT = {"alert_id": "6f1c2a7e-0d9b-4a57-9a43-5f0f3c1d2b11", "fingerprint": "0123456789abcdef", "state": "firing",
         "severity": "warning", "kind": "data_drift", "model_id": "m", "model_version": "1", "subject": "x",
         "detector": "adwin", "ts": 5.0, "summary": "x moved", "evidence": {"p": 0.01}}  # fmt: skip
#: Messages per consumed topic (about 2,300 in all; the in-process fuzz in test_fuzz.py adds 10,200).
COUNTS = {"predictions": 500, "labels": 400, "retrain_commands": 120,
          "inference_requests": 500, "models": 300, "alerts": 500}  # fmt: skip


def expected_rejections(decoder: Decoder[Any], topic: str, sent: dict[tuple[int, int], bytes]) -> set[Coordinates]:
    """Where the monitor must dead-letter: what its own decoder rejects, event by event."""
    return {(topic, p, o, r.batch_index) for (p, o), raw in sent.items() for r in decoder.decode(raw).rejections}


def invalid(model: type[BaseModel], topic: str, sent: dict[tuple[int, int], bytes]) -> set[Coordinates]:
    """Where a service validating whole messages against ``model`` must dead-letter."""

    def fails(raw: bytes) -> bool:
        try:
            model.model_validate_json(raw)
        except ValidationError:
            return True
        return False

    return {(topic, p, o, None) for (p, o), raw in sent.items() if fails(raw)}


def by_model(port: int, name: str, models: Counter[str]) -> Counter[str]:
    """A per-model counter of the monitor (summed over model versions) for ``models``."""
    counts: Counter[str] = Counter()
    for labels, value in samples(scrape(port), name).items():
        if (model := dict(labels)["model_id"]) in models:
            counts[model] += int(value)
    return counts


#: Dead-letter reasons of the monitor's event-time screen (driftwarden.core.event_time.time_problem).
EVENT_TIME_REASONS = ("since the epoch (expected seconds)", "ahead of the monitor clock", "older than label_ttl_s")


def committed_everything(settings: Settings, groups: dict[str, list[str]]) -> dict[str, int]:
    """Per group: 1 once its committed offsets reached the high-water mark of every partition of its topics."""
    counts = {spec.name: spec.partitions for spec in settings.topics.specs(settings.partitions)}
    done = {}
    for group, topics in groups.items():
        partitions = [(t, p) for t in topics for p in range(counts[t])]
        marks = asyncio.run(watermarks(settings, partitions))
        committed = committed_offsets(settings, group, [TopicPartition(t, p) for t, p in partitions])
        done[group] = int(all((committed[TopicPartition(t, p)] or 0) >= marks[(t, p)][1] for t, p in partitions))
    return done


def test_hostile_messages_through_kafka_are_processed_or_dead_lettered_and_every_service_lives(
    service_broker, tmp_path: Path
):
    settings = trial_settings(service_broker, tmp_path, "fuzz-kafka").model_copy(update={"checkpoint_interval_s": 1.0})
    topics = settings.topics
    examples = [e | {"model_id": SERVED} for chunk in generate(Scenario(n_events=2_000, seed=6))
                for e in chunk.training_examples()]  # fmt: skip
    assert bootstrap(ModelRegistry(settings.registry_dir), SERVED, examples, TrainerConfig()).status == "promoted"
    notify_config = tmp_path / "notify.toml"
    notify_config.write_text(f'group = "{settings.topic_prefix}notify"\n[[receivers]]\nname = "nobody"\n'
                             'type = "alertmanager"\nurl = "http://127.0.0.1:9"\nmodels = ["routes-nothing"]\n'
                             "resend_interval_s = 3600\n")  # fmt: skip
    monitor_port, serving_port = free_port(), free_port()
    services = {
        "monitor": Service(["monitor", "--metrics-port", str(monitor_port)], settings, tmp_path, "monitor"),
        "trainer": Service(["trainer", "--metrics-port", "0"], settings, tmp_path, "trainer"),
        "serving": Service(["serve", "--port", str(serving_port)], settings, tmp_path, "serving"),
        "notify": Service(["notify", "--config", str(notify_config), "--metrics-port", "0"], settings, tmp_path,
                          "notify"),
    }  # fmt: skip
    try:
        request = {"request_id": "r1", "model_id": SERVED, "instances": [{"features": examples[0]["features"]}]}
        fuzz = {  # generated while the services start
            "predictions": hostile(PREDICTION, batch(PREDICTION_BATCH_SCHEMA, PREDICTION)),
            "labels": hostile(LABEL, batch(LABEL_BATCH_SCHEMA, LABEL)),
            "retrain_commands": hostile(RETRAIN),
            "inference_requests": hostile(request),
            "models": hostile(PUBLISHED),
            "alerts": hostile(ALERT),
        }
        values = {name: drawn(strategy, COUNTS[name]) for name, strategy in fuzz.items()}
        url = f"http://127.0.0.1:{serving_port}"
        asyncio.run(wait_until_ready(url, timeout_s=90, process=services["serving"].process))
        asyncio.run(probe_monitor(settings, timeout_s=90))
        started = time.monotonic()
        sent = {name: dict(zip(send_records(settings, getattr(topics, name), [(b"m", v) for v in raw]), raw,
                               strict=True)) for name, raw in values.items()}  # fmt: skip

        groups = {settings.monitor_group: [topics.predictions, topics.labels],
                  f"{settings.topic_prefix}trainer": [topics.retrain_commands],
                  f"{settings.topic_prefix}serving": [topics.inference_requests],
                  f"{settings.topic_prefix}notify": [topics.alerts]}  # fmt: skip
        wait_counts(lambda: committed_everything(settings, groups), dict.fromkeys(groups, 1), stall_s=60)
        print(f"{sum(map(len, sent.values())):,} messages consumed or dead-lettered and committed in "
              f"{time.monotonic() - started:.1f} s")  # fmt: skip
        dead = dead_letter_coordinates(read_events(settings, topics.dead_letters, DeadLetter))

        letters = read_events(settings, topics.dead_letters, DeadLetter)
        # Predictions: what the decoder rejects, and valid events with an implausible event time (the
        # screen), each dead-lettered with its reason; labels: what the decoder rejects.
        timed = [d for d in letters if d.source_topic == topics.predictions
                 and any(r in d.reason for r in EVENT_TIME_REASONS)]  # fmt: skip
        timed_at = dead_letter_coordinates(timed)
        for name, decoder in (("predictions", PREDICTIONS), ("labels", LABELS)):
            topic = getattr(topics, name)
            rejected = expected_rejections(decoder, topic, sent[name])
            assert {d for d in dead if d[0] == topic} == rejected | (timed_at if name == "predictions" else set())
            assert not rejected & timed_at, name
        for name, model in (("retrain_commands", RetrainCommand), ("alerts", Alert)):
            topic = getattr(topics, name)
            assert {d for d in dead if d[0] == topic} == invalid(model, topic, sent[name]), name

        requests = topics.inference_requests
        refused = {d for d in dead if d[0] == requests}
        assert invalid(InferenceRequest, requests, sent["inference_requests"]) <= refused
        answered = [r for r in read_events(settings, topics.inference_responses, InferenceResponse) if r.error is None]
        assert accounting_problems("inference requests", len(sent["inference_requests"]), len(answered),
                                   len(refused)) == []  # fmt: skip

        # The monitor fed its detectors exactly what its decoder accepts and its time screen passes, and
        # what serving wrote back, less the repeats of an event id it dropped (counted apart).
        accepted = Counter(e.model_id for raw in sent["predictions"].values() for e in PREDICTIONS.decode(raw).events)
        accepted[SERVED] += sum(len(r.predictions) for r in answered)
        screened = Counter(orjson.loads(base64.b64decode(d.payload_b64))["model_id"] for d in timed)
        seen = lambda: by_model(monitor_port, "driftwarden_events_processed_total", accepted)  # noqa: E731
        repeats = lambda: by_model(monitor_port, "driftwarden_duplicate_events_total", accepted)  # noqa: E731
        counted = lambda: seen() + repeats() + screened  # noqa: E731
        wait_counts(counted, accepted, stall_s=30)
        assert counted() == accepted

        valid_commands = len(sent["retrain_commands"]) - len(invalid(RetrainCommand, "", sent["retrain_commands"]))
        on_models = asyncio.run(_records(settings, topics.models))
        verdicts = len(on_models) - len(sent["models"])
        assert verdicts == valid_commands, "one verdict per valid retrain command"

        def followed() -> dict[str, int]:
            return {"events": int(sum(samples(scrape(serving_port), "driftwarden_serving_swaps_total").values()))}

        wait_counts(followed, {"events": len(on_models)}, stall_s=30)
        assert followed() == {"events": len(on_models)}

        print(
            f"dead-lettered by topic: {Counter(d[0].removeprefix(settings.topic_prefix) for d in dead)}; "
            f"{len(answered)} requests answered, {verdicts} verdicts, {len(on_models)} model events followed"
        )
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
            ready = orjson.loads(response.read())
        assert ready["ready"] and ready["problems"] == {}, ready
        assert {name: s.alive() for name, s in services.items()} == dict.fromkeys(services, True)
    finally:
        for service in services.values():
            service.stop()


async def _records(settings: Settings, topic: str) -> list[bytes]:
    return [record.value or b"" async for record in read_topic(settings, topic)]
