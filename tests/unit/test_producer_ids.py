"""Producers' own ids (ULIDs, request ids, numbers as strings) go through decoding, joins and dedupe."""

from __future__ import annotations

import orjson

from driftwarden.core.config import ModelMonitorConfig, MonitoringConfig
from driftwarden.core.decoding import LABELS, PREDICTIONS
from driftwarden.core.joins import LabelJoiner
from driftwarden.core.monitor import Monitor
from driftwarden.serving.server import shadow_event_id

# One id style per prediction: ULID, request id, numeric string, unicode with separators, the longest.
IDS = ["01JD9Y0ZQ8K3M2N4P5R6S7T8V9", "req-7f3a9c", "1234567890", "anfrage/ä:1", "x" * 128]


def prediction(event_id: str, i: int) -> dict[str, object]:
    return {"event_id": event_id, "model_id": "shop", "model_version": "1", "ts": 1_000.0 + i,
            "features": {"x": float(i)}, "prediction": 1, "scores": {"0": 0.2, "1": 0.8}}  # fmt: skip


def batch(schema: str, events: list[dict[str, object]]) -> bytes:
    return orjson.dumps({"schema": schema, "model_id": "shop", "events": events})


def test_producer_ids_are_decoded_joined_and_deduplicated():
    predictions = PREDICTIONS.decode(batch("prediction-batch.v1", [prediction(e, i) for i, e in enumerate(IDS)]))
    labels = [{"event_id": e, "model_id": "shop", "ts": 2_000.0, "label": 1} for e in IDS]
    decoded_labels = LABELS.decode(batch("label-batch.v1", labels + labels[:2]))  # two duplicates
    assert (len(predictions.events), predictions.rejections) == (len(IDS), [])
    assert (len(decoded_labels.events), decoded_labels.rejections) == (len(IDS) + 2, [])
    config = MonitoringConfig(defaults=ModelMonitorConfig(reference_size=1_000, window_size=500, label_window=200))
    monitor = Monitor(config)
    monitor.observe(predictions.events, now=1.0)
    monitor.observe_labels(decoded_labels.events, now=1.0)
    joins = monitor.status("shop", 0).label_joins
    assert joins is not None
    assert (joins["joined"], joins["duplicate_labels"], joins["pending_predictions"]) == (len(IDS), 2, 0)


def test_pending_producer_ids_survive_a_checkpoint():
    joiner = LabelJoiner(ttl_s=1e9, max_pending=100)
    for i, event_id in enumerate(IDS):
        joiner.add_prediction(event_id, float(i), "1", 1.0, 0.8, ())
    restored = LabelJoiner.from_bytes(joiner.to_bytes())
    joined = [restored.add_label(e, 1.0, 10.0) for e in IDS]
    assert [j.event_id if j else None for j in joined] == IDS


def test_shadow_predictions_get_valid_distinct_ids_from_any_producer_id():
    shadow_ids = {shadow_event_id(e, "shadow") for e in IDS}
    assert len(shadow_ids) == len(IDS)
    shadow = [prediction(e, i) for i, e in enumerate(sorted(shadow_ids))]
    assert PREDICTIONS.decode(batch("prediction-batch.v1", shadow)).rejections == []
