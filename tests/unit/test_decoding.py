"""Raw message bytes -> events or rejections; nothing raises, nothing is silently dropped."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftwarden.core.columnar import PredictionColumns, decode_columns, refusals
from driftwarden.core.decoding import LABELS, PREDICTIONS
from driftwarden_load.producer import envelope, malformed_message
from driftwarden_load.scenarios import Scenario, generate

EVENTS = next(generate(Scenario(n_events=10), chunk_size=10)).prediction_events()
GOOD = EVENTS[0]


def batch(events):
    return orjson.dumps({"schema": "prediction-batch.v1", "model_id": "demo-model", "events": events})


def test_single_event_decodes():
    decoded = PREDICTIONS.decode(orjson.dumps(GOOD))
    assert [e.event_id for e in decoded.events] == [GOOD["event_id"]]
    assert decoded.rejections == []


def test_batch_envelope_decodes_in_order():
    decoded = PREDICTIONS.decode(batch(EVENTS))
    assert [e.event_id for e in decoded.events] == [e["event_id"] for e in EVENTS]


def test_one_bad_event_in_a_batch_is_rejected_alone_with_its_own_bytes():
    bad = {**EVENTS[3], "features": {"num_00": "NaN", "x": [1, "2"]}}
    decoded = PREDICTIONS.decode(batch([*EVENTS[:3], bad, *EVENTS[4:]]))
    assert len(decoded.events) == 9
    (rejection,) = decoded.rejections
    assert rejection.batch_index == 3
    assert rejection.reason.startswith("features.x")
    assert orjson.loads(rejection.payload) == bad


def test_event_of_another_model_inside_an_envelope_is_rejected():
    stranger = {**EVENTS[1], "model_id": "other-model"}
    decoded = PREDICTIONS.decode(batch([EVENTS[0], stranger]))
    assert len(decoded.events) == 1
    assert decoded.rejections[0].batch_index == 1
    assert "differs from the envelope's 'demo-model'" in decoded.rejections[0].reason


@pytest.mark.parametrize(
    ("raw", "reason_start"),
    [
        (b"", "empty message"),
        (None, "empty message"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "Input should be a valid dictionary"),
        (
            orjson.dumps({"schema": "prediction-batch.v1", "model_id": "m", "events": []}),
            "invalid batch envelope",
        ),
        (
            orjson.dumps({"schema": "prediction-batch.v1", "events": [GOOD]}),
            "invalid batch envelope: model_id",
        ),
    ],
)
def test_whole_message_rejections_keep_the_original_bytes(raw, reason_start):
    decoded = PREDICTIONS.decode(raw)
    assert decoded.events == []
    (rejection,) = decoded.rejections
    assert rejection.reason.startswith(reason_start), rejection.reason
    assert rejection.payload == (raw or b"")
    assert rejection.batch_index is None


def test_every_kind_of_generated_malformed_message_is_rejected_with_a_reason():
    reasons = set()
    for kind in range(5):
        decoded = PREDICTIONS.decode(malformed_message(kind, GOOD))
        assert decoded.events == []
        assert len(decoded.rejections) == 1
        reasons.add(decoded.rejections[0].reason.split(":")[0])
    assert len(reasons) == 5


def test_long_error_lists_are_summarised_on_one_line():
    decoded = PREDICTIONS.decode(orjson.dumps({"nothing": "right"}))
    reason = decoded.rejections[0].reason
    assert "\n" not in reason
    assert "more errors" in reason


def test_labels_decode_single_and_batched():
    labels = next(generate(Scenario(n_events=5), chunk_size=5)).label_events()
    assert len(LABELS.decode(envelope("label-batch.v1", "demo-model", labels)).events) == 5
    assert len(LABELS.decode(envelope("label-batch.v1", "demo-model", labels[:1])).events) == 1


CHUNK = next(generate(Scenario(n_events=10), chunk_size=10))


def test_a_columnar_batch_decodes_to_the_same_predictions_as_events():
    decoded = PREDICTIONS.decode(orjson.dumps(CHUNK.prediction_columns()))
    assert decoded.events == [] and decoded.rejections == [] and len(decoded) == 10
    (columns,) = decoded.columns
    assert columns.events() == PREDICTIONS.decode(batch(EVENTS)).events


def test_bad_rows_of_a_columnar_batch_are_dead_lettered_alone_as_events():
    document = CHUNK.prediction_columns()
    document["ts"][2] = -5.0
    document["features"]["num_03"][7] = [1]
    document["scores"]["1"][7] = 2.0  # a second problem of the same row: one rejection, the first reason
    decoded = PREDICTIONS.decode(orjson.dumps(document))
    assert [(r.batch_index, r.reason) for r in decoded.rejections] == [
        (2, "ts: Input should be a number greater than or equal to 0"),
        (7, "features.num_03: no arrays (embeddings) in a columnar batch; send prediction.v1 events"),
    ]
    assert orjson.loads(decoded.rejections[0].payload) == {**EVENTS[2], "ts": -5.0}
    (columns,) = decoded.columns
    assert columns.event_ids == [e["event_id"] for i, e in enumerate(EVENTS) if i not in (2, 7)]
    kept = [e["features"]["num_03"] for i, e in enumerate(EVENTS) if i not in (2, 7)]
    assert columns.features["num_03"].tolist() == kept  # numbers again: the fast path


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ts": [1.0]}, "invalid columnar batch: ts has 1 values for 10 event ids"),
        ({"model_version": None}, "invalid columnar batch: model_version: Input should be a valid string"),
        ({"features": {"x": 1}}, "invalid columnar batch: features.x: Input should be a valid list"),
    ],
)
def test_a_columnar_batch_of_the_wrong_shape_is_refused_whole(change, reason):
    raw = orjson.dumps(CHUNK.prediction_columns() | change)
    decoded = PREDICTIONS.decode(raw)
    assert len(decoded) == 0
    assert [(r.batch_index, r.reason, r.payload) for r in decoded.rejections] == [(None, reason, raw)]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_refusals_found_on_a_batchs_columns_are_the_decoders_of_its_bytes(data):
    """Serving checks its write-back on the columns it built (no encoding, no parsing): the rows and
    reasons must be exactly those the monitor's decoder finds in the message those columns become."""
    n = data.draw(st.integers(1, 6))
    number = st.one_of(st.floats(-2, 3), st.sampled_from([0.0, 1.0, float("nan"), float("inf"), -float("inf")]))
    numbers = st.lists(number, min_size=n, max_size=n).map(np.array)
    text = st.one_of(st.text(max_size=3), st.sampled_from(["x" * 129, "v1"]))
    small = st.integers(-3, 3)
    value = st.one_of(text, st.none(), st.booleans(), small, number, st.lists(small, max_size=2))
    values = st.lists(value, min_size=n, max_size=n)
    optional = st.one_of(st.none(), numbers)
    batch = PredictionColumns(
        "m",
        "1",
        data.draw(st.lists(st.one_of(text, small, st.none()), min_size=n, max_size=n)),
        data.draw(numbers),
        {"x": data.draw(numbers), "c": data.draw(st.one_of(values, values.map(lambda v: np.array(v, dtype=object))))},
        data.draw(st.lists(st.one_of(text, small, number, st.none()), min_size=n, max_size=n)),
        data.draw(st.one_of(st.none(), st.dictionaries(st.sampled_from(["0", "1"]), numbers, min_size=1))),
        data.draw(st.one_of(st.none(), st.fixed_dictionaries({"deployment": values}))),
        data.draw(optional),
        data.draw(optional),
    )
    raw = batch.to_json()
    decoded = decode_columns(orjson.loads(raw), raw)
    assert refusals(batch) == [(row, reason) for row, reason, _ in decoded.rejections]
