"""The trainer's join: a command's window of predictions (any format the monitor takes) with their labels."""

from __future__ import annotations

import orjson

from driftwarden.core.training_join import TrainingJoin
from driftwarden_load.producer import envelope
from driftwarden_load.scenarios import Scenario, generate


def test_every_prediction_format_joins_into_the_examples_the_trainer_took_from_the_monitor():
    chunks = list(generate(Scenario(n_events=3_000, model_id="m", seed=3)))
    expected = [e for chunk in chunks for e in chunk.training_examples()]
    start, end = expected[500]["ts"], expected[2_499]["ts"]
    join = TrainingJoin("m", start, end)
    first, second, third = chunks
    rows = first.prediction_events()
    messages = [orjson.dumps(event) for event in rows[:100]]  # single events
    messages += [envelope("prediction-batch.v1", "m", rows[i : i + 300]) for i in range(100, 1_000, 300)]
    messages += [orjson.dumps(second.prediction_columns(i, i + 250)) for i in range(0, 1_000, 250)]
    messages.append(orjson.dumps(third.prediction_columns()))
    other = next(generate(Scenario(n_events=200, model_id="other", seed=3)))  # the same ts, another model
    messages.append(envelope("prediction-batch.v1", "other", other.prediction_events()))
    for message in messages:
        assert join.add_predictions(message) == []
    labels = [label for chunk in chunks for label in chunk.label_events()]
    for i in range(0, 3_000, 700):
        assert join.add_labels(envelope("label-batch.v1", "m", labels[i : i + 700])) == []
    examples = join.examples()
    # The same documents the monitor published (the columnar rows without the embedding: none here).
    assert examples == expected[500:2_500]
    assert join.counts() == {"examples": 2_000, "unlabelled": 0, "duplicate_predictions": 0, "duplicate_labels": 0,
                             "invalid_records": 0}  # fmt: skip


def test_first_label_wins_repeats_are_counted_and_unreadable_records_are_skipped_and_counted():
    chunk = next(generate(Scenario(n_events=20, model_id="m", seed=4)))
    predictions, labels = chunk.prediction_events(), chunk.label_events()
    join = TrainingJoin("m", 0.0, 2e9)
    bad = {**predictions[5], "ts": "yesterday"}
    rejected = join.add_predictions(envelope("prediction-batch.v1", "m", [*predictions[:10], bad]))
    assert [(r.batch_index, r.reason) for r in rejected] == [(10, "ts: Input should be a valid number")]
    assert join.add_predictions(orjson.dumps(predictions[3])) == []  # a producer's retry: the first one stays
    (refused,) = join.add_labels(b"{oops")
    assert refused.reason.startswith("not valid JSON")
    flipped = [{**label, "label": 1 - label["label"]} for label in labels]
    join.add_labels(envelope("label-batch.v1", "m", labels[:8]))
    join.add_labels(envelope("label-batch.v1", "m", flipped))  # later labels: duplicates, or of no prediction
    examples = join.examples()
    assert [e["label"] for e in examples] == [label["label"] for label in labels[:8]] + [flipped[8]["label"],
                                                                                       flipped[9]["label"]]  # fmt: skip
    assert join.counts() == {"examples": 10, "unlabelled": 0, "duplicate_predictions": 1, "duplicate_labels": 8,
                             "invalid_records": 2}  # fmt: skip
