"""The JSON Schemas in schemas/ are the contract; the pydantic models must give the same verdicts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import ValidationError
from referencing import Registry, Resource

from driftwarden.core.decoding import LABELS, PREDICTIONS
from driftwarden.core.events import CONTRACTS, MonitorStatus, MonitorStatusV1, read_status

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
SCHEMAS = {p.name: json.loads(p.read_text()) for p in sorted(SCHEMA_DIR.glob("*.json"))}
REGISTRY = Registry().with_resources((schema["$id"], Resource.from_contents(schema)) for schema in SCHEMAS.values())

UUID_A = "6f1c2a7e-0d9b-4a57-9a43-5f0f3c1d2b11"
PREDICTION = {
    "event_id": UUID_A,
    "model_id": "fraud",
    "model_version": "1",
    "ts": 1700000000.5,
    "features": {"amount": 12.5, "country": "NL", "is_new": True, "age": None, "n": 3},
    "prediction": 1,
    "scores": {"0": 0.1, "1": 0.9},
    "segment": {"country": "NL"},
    "latency_ms": 3.2,
    "cost": 0.0001,
}
LABEL = {"event_id": UUID_A, "model_id": "fraud", "ts": 1700000100, "label": 1}
ALERT = {
    "alert_id": UUID_A,
    "fingerprint": "0123456789abcdef",
    "state": "firing",
    "severity": "warning",
    "kind": "data_drift",
    "model_id": "fraud",
    "model_version": "1",
    "subject": "amount",
    "detector": "adwin",
    "ts": 1.0,
    "summary": "amount drifted",
    "trigger_event_id": UUID_A,
    "evidence": {"reference_mean": 0.0, "current_mean": 1.0, "note": "x", "flag": False, "p": None},
}
RETRAIN = {
    "command_id": UUID_A,
    "idempotency_key": "fraud:1:abc",
    "model_id": "fraud",
    "model_version": "1",
    "ts": 5,
    "reasons": ["0123456789abcdef"],
    "window": {"start_ts": 1, "end_ts": 2},
}
PUBLISHED = {
    "model_id": "fraud",
    "model_version": "2",
    "status": "promoted",
    "ts": 5,
    "command_id": UUID_A,
    "artifact_uri": "file:///models/fraud/2/model.onnx",
    "sha256": "a" * 64,
    "parent_version": "1",
    "metrics": {"accuracy": 0.9},
}
DEAD = {
    "ts": 1,
    "source_topic": "driftwarden.predictions",
    "source_partition": 0,
    "source_offset": 7,
    "batch_index": 2,
    "key": "fraud",
    "reason": "not JSON",
    "payload_b64": "eyJ9",
}
STATUS = {"model_id": "fraud", "ts": 1, "events_processed": 5, "events_dead_lettered": 0, "alerts_fired": 0}
STATUS_V2 = {**STATUS, "schema": "monitor-status.v2", "group": "driftwarden-monitor", "worker": "host-1:4242"}
SUMMARY = {
    "schema": "window-summary.v1",
    "model_id": "fraud",
    "model_version": "1",
    "shard": 2,
    "shards": 4,
    "bucket": 170000000,
    "bucket_seconds": 10,
    "events": 3,
    "late_events": 0,
    "group": "driftwarden-monitor",
    "input_topic": "predictions",
    "input_partition": 1,
    "input_origin": 0,
    "seq": 7,
    "numeric": {"amount": {"bins": [1, 0, 1], "missing": 1, "sum": -2.5, "sum_squares": 8.5}},
    "categorical": {"country": {"counts": {"NL": 2, "DE": 0}, "missing": 1}},
}


# What producers use as ids (UUID, ULID, request id, number as a string, unicode, the longest allowed),
# and what is refused (empty, one character too long, not a string).
PRODUCER_IDS = [UUID_A, "01JD9Y0ZQ8K3M2N4P5R6S7T8V9", "req-7f3a9c", "1234567890", "anfrage/ä:1", "x" * 128]
NOT_EVENT_IDS = ["", "x" * 129, 42, None]


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of ``base`` with fields replaced; a value of ``...`` removes the field."""
    out = {**base, **changes}
    return {k: v for k, v in out.items() if v is not ...}


# (schema file, document, expected verdict). Invalid documents each break exactly one rule.
COLUMNS = {
    "schema": "prediction-columns.v1",
    "model_id": "fraud",
    "model_version": "1",
    "event_id": [UUID_A, "req-2"],
    "ts": [1700000000.5, 1700000001],
    "features": {"amount": [12.5, None], "country": ["NL", "DE"], "is_new": [True, False], "n": [3, 4]},
    "prediction": [1, "fraud"],
    "scores": {"0": [0.1, 0.8], "1": [0.9, 0.2]},
    "segment": {"country": ["NL", None]},
    "latency_ms": [3.2, None],
    "cost": None,
}


def with_column(**changes: Any) -> dict[str, Any]:
    return with_(COLUMNS, **changes)


CORPUS: list[tuple[str, Any, bool]] = [
    ("prediction-columns.v1.json", COLUMNS, True),
    ("prediction-columns.v1.json", with_column(scores=..., segment=..., latency_ms=..., cost=...), True),
    ("prediction-columns.v1.json", with_column(cost=[0.001, 0], features={}), True),
    ("prediction-columns.v1.json", with_column(schema="prediction-columns.v2"), False),
    ("prediction-columns.v1.json", with_column(model_version=...), False),
    ("prediction-columns.v1.json", with_column(model_version="../1"), False),
    ("prediction-columns.v1.json", with_column(event_id=[], ts=[], prediction=[], features={}), False),
    ("prediction-columns.v1.json", with_column(event_id=[UUID_A, ""]), False),
    ("prediction-columns.v1.json", with_column(ts=[1, -1]), False),
    ("prediction-columns.v1.json", with_column(ts=[1, True]), False),
    ("prediction-columns.v1.json", with_column(ts=1), False),
    ("prediction-columns.v1.json", with_column(features={"x": [1, [2]]}), False),
    ("prediction-columns.v1.json", with_column(features={"x": 1}), False),
    ("prediction-columns.v1.json", with_column(prediction=[1, None]), False),
    ("prediction-columns.v1.json", with_column(scores={"1": [0.5, 1.5]}), False),
    ("prediction-columns.v1.json", with_column(segment={"country": ["NL", 1]}), False),
    ("prediction-columns.v1.json", with_column(latency_ms=[-1, 2]), False),
    ("prediction-columns.v1.json", with_column(unexpected=[1, 2]), False),
    ("prediction-columns.v1.json", [COLUMNS], False),
    ("prediction.v1.json", PREDICTION, True),
    ("prediction.v1.json", with_(PREDICTION, scores=..., segment=..., latency_ms=..., cost=...), True),
    ("prediction.v1.json", with_(PREDICTION, prediction="fraud"), True),
    ("prediction.v1.json", with_(PREDICTION, latency_ms=None), True),
    ("prediction.v1.json", with_(PREDICTION, features={}), True),
    ("prediction.v1.json", with_(PREDICTION, event_id=...), False),
    # event_id is the producer's own id: any non-empty string of at most 128 characters.
    *[("prediction.v1.json", with_(PREDICTION, event_id=i), True) for i in PRODUCER_IDS],
    *[("label.v1.json", with_(LABEL, event_id=i), True) for i in PRODUCER_IDS],
    *[("prediction.v1.json", with_(PREDICTION, event_id=i), False) for i in NOT_EVENT_IDS],
    *[("label.v1.json", with_(LABEL, event_id=i), False) for i in NOT_EVENT_IDS],
    ("prediction.v1.json", with_(PREDICTION, model_id=""), False),
    ("prediction.v1.json", with_(PREDICTION, model_id="../etc"), False),
    ("prediction.v1.json", with_(PREDICTION, model_id=7), False),
    ("prediction.v1.json", with_(PREDICTION, ts="2024-01-01T00:00:00Z"), False),
    ("prediction.v1.json", with_(PREDICTION, ts=-1), False),
    ("prediction.v1.json", with_(PREDICTION, ts=True), False),
    # A feature may be an array of 1-4096 numbers (an embedding); nothing else nests.
    ("prediction.v1.json", with_(PREDICTION, features={"x": [1, 2.5, -3e-5]}), True),
    ("prediction.v1.json", with_(PREDICTION, features={"x": [0.5] * 4096, "y": [1]}), True),
    (
        "prediction-batch.v1.json",
        {"schema": "prediction-batch.v1", "model_id": "fraud", "events": [with_(PREDICTION, features={"x": [1, 2]})]},
        True,
    ),
    ("prediction.v1.json", with_(PREDICTION, features={"x": []}), False),
    ("prediction.v1.json", with_(PREDICTION, features={"x": [0.5] * 4097}), False),
    ("prediction.v1.json", with_(PREDICTION, features={"x": [1, "2"]}), False),
    ("prediction.v1.json", with_(PREDICTION, features={"x": [1, None]}), False),
    ("prediction.v1.json", with_(PREDICTION, features={"x": [1, True]}), False),
    ("prediction.v1.json", with_(PREDICTION, features={"x": [[1], [2]]}), False),
    ("prediction-columns.v1.json", with_column(features={"x": [[1.0], [2.0]]}), False),  # columns take no arrays
    ("prediction.v1.json", with_(PREDICTION, features={"x": {"nested": 1}}), False),
    ("prediction.v1.json", with_(PREDICTION, features=[1, 2]), False),
    ("prediction.v1.json", with_(PREDICTION, prediction=None), False),
    ("prediction.v1.json", with_(PREDICTION, prediction=[1]), False),
    ("prediction.v1.json", with_(PREDICTION, prediction=True), False),
    ("prediction.v1.json", with_(PREDICTION, scores={"1": 1.5}), False),
    ("prediction.v1.json", with_(PREDICTION, scores={"1": "0.5"}), False),
    ("prediction.v1.json", with_(PREDICTION, segment={"country": 1}), False),
    ("prediction.v1.json", with_(PREDICTION, latency_ms=-3), False),
    ("prediction.v1.json", with_(PREDICTION, latency_ms="3"), False),
    ("prediction.v1.json", with_(PREDICTION, cost=-0.1), False),
    ("prediction.v1.json", with_(PREDICTION, unexpected=1), False),
    ("prediction.v1.json", [PREDICTION], False),
    ("prediction.v1.json", "text", False),
    ("label.v1.json", LABEL, True),
    ("label.v1.json", with_(LABEL, label="spam"), True),
    ("label.v1.json", with_(LABEL, label=None), False),
    ("label.v1.json", with_(LABEL, event_id=...), False),
    ("label.v1.json", with_(LABEL, model_version="1"), False),
    (
        "prediction-batch.v1.json",
        {"schema": "prediction-batch.v1", "model_id": "fraud", "events": [PREDICTION]},
        True,
    ),
    (
        "prediction-batch.v1.json",
        {"schema": "prediction-batch.v2", "model_id": "fraud", "events": [PREDICTION]},
        False,
    ),
    ("prediction-batch.v1.json", {"schema": "prediction-batch.v1", "model_id": "fraud", "events": []}, False),
    (
        "prediction-batch.v1.json",
        {"schema": "prediction-batch.v1", "model_id": "fraud", "events": [LABEL]},
        False,
    ),
    ("prediction-batch.v1.json", {"schema": "prediction-batch.v1", "events": [PREDICTION]}, False),
    (
        "label-batch.v1.json",
        {"schema": "label-batch.v1", "model_id": "fraud", "events": [LABEL, LABEL]},
        True,
    ),
    ("label-batch.v1.json", {"schema": "label-batch.v1", "model_id": "fraud", "events": [PREDICTION]}, False),
    ("alert.v1.json", ALERT, True),
    ("alert.v1.json", with_(ALERT, trigger_event_id=...), True),
    ("alert.v1.json", with_(ALERT, trigger_event_id="req-7f3a9c"), True),
    ("alert.v1.json", with_(ALERT, trigger_event_id=""), False),
    ("alert.v1.json", with_(ALERT, alert_id="req-7f3a9c"), False),  # ids driftwarden mints are UUIDs
    ("alert.v1.json", with_(ALERT, state="open"), False),
    ("alert.v1.json", with_(ALERT, severity="page"), False),
    ("alert.v1.json", with_(ALERT, kind="vibes"), False),
    ("alert.v1.json", with_(ALERT, fingerprint="XYZ"), False),
    ("alert.v1.json", with_(ALERT, evidence={"window": [1, 2]}), False),
    ("alert.v1.json", with_(ALERT, subject=""), False),
    ("retrain-command.v1.json", RETRAIN, True),
    ("retrain-command.v1.json", with_(RETRAIN, reasons=[]), False),
    ("retrain-command.v1.json", with_(RETRAIN, command_id="cmd-1"), False),
    ("retrain-command.v1.json", with_(RETRAIN, window={"start_ts": 1}), False),
    ("retrain-command.v1.json", with_(RETRAIN, window={"start_ts": 1, "end_ts": 2, "x": 3}), False),
    ("retrain-command.v1.json", with_(RETRAIN, idempotency_key=""), False),
    ("model-published.v1.json", PUBLISHED, True),
    ("model-published.v1.json", with_(PUBLISHED, status="rejected", reason="worse", sha256=...), True),
    ("model-published.v1.json", with_(PUBLISHED, status="maybe"), False),
    ("model-published.v1.json", with_(PUBLISHED, status="canary", traffic_fraction=0.1), True),
    ("model-published.v1.json", with_(PUBLISHED, status="canary", traffic_fraction=1.5), False),
    ("model-published.v1.json", with_(PUBLISHED, sha256="abc"), False),
    ("model-published.v1.json", with_(PUBLISHED, metrics={"accuracy": "high"}), False),
    ("dead-letter.v1.json", DEAD, True),
    ("dead-letter.v1.json", with_(DEAD, key=None, batch_index=...), True),
    ("dead-letter.v1.json", with_(DEAD, source_offset=-1), False),
    ("dead-letter.v1.json", with_(DEAD, source_offset=1.5), False),
    ("dead-letter.v1.json", with_(DEAD, reason=""), False),
    ("dead-letter.v1.json", with_(DEAD, payload_b64=...), False),
    (
        "inference-request.v1.json",
        {"request_id": "r1", "model_id": "fraud", "instances": [{"features": {"a": 1}}]},
        True,
    ),
    (
        "inference-request.v1.json",
        {"request_id": "r1", "model_id": "fraud", "instances": [{"event_id": UUID_A, "features": {}}]},
        True,
    ),
    ("inference-request.v1.json", {"request_id": "r1", "model_id": "fraud", "instances": []}, False),
    (
        "inference-request.v1.json",
        {"request_id": "r1", "model_id": "fraud", "instances": [{"features": {"a": [1]}}]},
        False,
    ),
    ("inference-request.v1.json", {"request_id": "", "model_id": "fraud", "instances": [{"features": {}}]}, False),
    (
        "inference-response.v1.json",
        {
            "request_id": "r1",
            "model_id": "fraud",
            "ts": 1,
            "model_version": "2",
            "predictions": [{"event_id": UUID_A, "label": "1", "scores": {"1": 0.9}}],
        },
        True,
    ),
    ("inference-response.v1.json", {"request_id": "r1", "model_id": "fraud", "ts": 1, "error": "missing num_01"}, True),
    (
        "inference-response.v1.json",
        {
            "request_id": "r1",
            "model_id": "fraud",
            "ts": 1,
            "predictions": [{"event_id": UUID_A, "label": 1, "scores": {}}],
        },
        False,
    ),
    *[
        (
            "inference-request.v1.json",
            {"request_id": "r1", "model_id": "fraud", "instances": [{"event_id": i, "features": {}}]},
            i in PRODUCER_IDS,
        )
        for i in PRODUCER_IDS[1:3] + NOT_EVENT_IDS[:3]
    ],
    *[
        (
            "inference-response.v1.json",
            {
                "request_id": "r1",
                "model_id": "fraud",
                "ts": 1,
                "model_version": "2",
                "predictions": [{"event_id": i, "label": "1", "scores": {}}],
            },
            i in PRODUCER_IDS,
        )
        for i in PRODUCER_IDS[1:3] + NOT_EVENT_IDS[:3]
    ],
    ("monitor-status.v1.json", STATUS, True),
    ("window-summary.v1.json", SUMMARY, True),
    ("window-summary.v1.json", with_(SUMMARY, numeric={}, categorical={}, events=0), True),
    ("window-summary.v1.json", with_(SUMMARY, schema="window-summary.v2"), False),
    ("window-summary.v1.json", with_(SUMMARY, shards=0), False),
    ("window-summary.v1.json", with_(SUMMARY, bucket=-1), False),
    ("window-summary.v1.json", with_(SUMMARY, bucket_seconds=0), False),
    ("window-summary.v1.json", with_(SUMMARY, late_events=...), False),
    ("window-summary.v1.json", with_(SUMMARY, seq=...), False),
    ("window-summary.v1.json", with_(SUMMARY, seq=-1), False),
    (
        "window-summary.v1.json",
        with_(SUMMARY, numeric={"a": {"bins": [1], "missing": 0, "sum": 0, "sum_squares": 0}}),
        False,
    ),
    (
        "window-summary.v1.json",
        with_(SUMMARY, numeric={"a": {"bins": [1, 0.5], "missing": 0, "sum": 0, "sum_squares": 0}}),
        False,
    ),
    ("window-summary.v1.json", with_(SUMMARY, numeric={"a": {"bins": [1, 2], "missing": 0, "sum": 0}}), False),
    ("window-summary.v1.json", with_(SUMMARY, categorical={"c": {"counts": {"NL": -1}, "missing": 0}}), False),
    ("window-summary.v1.json", with_(SUMMARY, categorical={"c": {"counts": {}, "missing": 0, "x": 1}}), False),
    ("monitor-status.v1.json", with_(STATUS, events_processed=-1), False),
    ("monitor-status.v1.json", with_(STATUS, alerts_fired=...), False),
    ("monitor-status.v1.json", with_(STATUS, window_statistics=[["data_drift", "a:b", "psi", 0.3]]), True),
    ("monitor-status.v1.json", with_(STATUS, window_statistics=[["data_drift", "a", "p_value", 1]]), True),
    ("monitor-status.v1.json", with_(STATUS, window_statistics=[["data_drift", "a", "psi"]]), False),
    ("monitor-status.v1.json", with_(STATUS, window_statistics=[["data_drift", "a", "psi", 0.3, 1.0]]), False),
    ("monitor-status.v1.json", with_(STATUS, window_statistics=[["data_drift", 7, "psi", 0.3]]), False),
    ("monitor-status.v1.json", with_(STATUS, window_statistics=[["data_drift", "a", "psi", "high"]]), False),
    ("monitor-status.v1.json", with_(STATUS, window_statistics=[["data_drift", "a", "psi", True]]), False),
    ("monitor-status.v1.json", STATUS_V2, False),  # a v1 reader refuses a v2 status: upgrade readers first
    ("monitor-status.v1.json", with_(STATUS, group="driftwarden-monitor"), False),
    ("monitor-status.v2.json", STATUS_V2, True),
    ("monitor-status.v2.json", with_(STATUS_V2, window_statistics=[["data_drift", "a", "psi", 0.3]]), True),
    ("monitor-status.v2.json", STATUS, False),  # v1 has no group: read as v1 (read_status), not as v2
    ("monitor-status.v2.json", with_(STATUS_V2, schema="monitor-status.v1"), False),
    ("monitor-status.v2.json", with_(STATUS_V2, group=""), False),
    ("monitor-status.v2.json", with_(STATUS_V2, group=7), False),
    ("monitor-status.v2.json", with_(STATUS_V2, worker=...), False),
    ("monitor-status.v2.json", with_(STATUS_V2, events_processed=-1), False),
]


def test_every_schema_has_a_model_and_every_model_a_schema():
    assert set(SCHEMAS) == set(CONTRACTS)


def test_corpus_covers_every_schema_with_valid_and_invalid_examples():
    for name in SCHEMAS:
        verdicts = {ok for schema, _, ok in CORPUS if schema == name}
        assert verdicts == {True, False}, name


@pytest.mark.parametrize(("schema_name", "document", "expected"), CORPUS)
def test_json_schema_and_pydantic_agree(schema_name: str, document: Any, expected: bool):
    validator = Draft202012Validator(SCHEMAS[schema_name], registry=REGISTRY)
    schema_ok = validator.is_valid(document)
    try:
        CONTRACTS[schema_name].model_validate_json(json.dumps(document))
        model_ok = True
    except ValidationError:
        model_ok = False
    assert (schema_ok, model_ok) == (expected, expected)
    decoder = {"prediction.v1.json": PREDICTIONS, "label.v1.json": LABELS}.get(schema_name)
    if decoder is not None:  # what the monitor accepts (hot path or event by event) is the contract
        decoded = decoder.decode(json.dumps(document).encode())
        assert (len(decoded.events), len(decoded.rejections)) == ((1, 0) if expected else (0, 1))
    if schema_name == "prediction-columns.v1.json":  # checked column by column with numpy, same verdict
        decoded = PREDICTIONS.decode(json.dumps(document).encode())
        assert (len(decoded), bool(decoded.rejections)) == ((2, False) if expected else (len(decoded), True))


@pytest.mark.parametrize("schema_name", sorted(SCHEMAS))
def test_field_names_and_required_fields_match(schema_name: str):
    schema = SCHEMAS[schema_name]
    fields = CONTRACTS[schema_name].model_fields
    names = {field.alias or name for name, field in fields.items()}
    required = {field.alias or name for name, field in fields.items() if field.is_required()}
    assert names == set(schema["properties"])
    assert required == set(schema["required"])


@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_schemas_are_valid_draft_2020_12(schema: str):
    Draft202012Validator.check_schema(SCHEMAS[schema])


def test_serialized_models_validate_against_their_schema():
    for name, document in [
        ("prediction.v1.json", PREDICTION),
        ("alert.v1.json", ALERT),
        ("window-summary.v1.json", SUMMARY),
        ("prediction-columns.v1.json", COLUMNS),
        ("monitor-status.v2.json", STATUS_V2),
    ]:
        model = CONTRACTS[name].model_validate_json(json.dumps(document))
        validator = Draft202012Validator(SCHEMAS[name], registry=REGISTRY)
        validator.validate(json.loads(model.to_json()))


def test_a_status_of_either_version_is_read_and_a_published_one_is_v2_with_its_group():
    v1 = read_status(json.dumps(STATUS).encode())
    assert type(v1) is MonitorStatusV1 and v1.published_by is None
    v2 = read_status(json.dumps(STATUS_V2).encode())
    assert type(v2) is MonitorStatus and v2.published_by == "driftwarden-monitor"
    published = v1.published("driftwarden-monitor", "host-1:4242")
    assert published == v2 and json.loads(published.to_json()) == STATUS_V2
    with pytest.raises(ValidationError):
        read_status(json.dumps(with_(STATUS_V2, worker=...)).encode())
