"""A retrain command's examples: one model's predictions in the command's window joined with their labels.

The trainer reads the predictions topic, then the labels topic, each to its high-water mark, and hands
every message of the model to a :class:`TrainingJoin`. Messages are decoded as the monitor decodes
them (:data:`~driftwarden.core.decoding.PREDICTIONS`, :data:`~driftwarden.core.decoding.LABELS`:
events, batch envelopes, columnar batches); what cannot be read is returned as rejections, and
counted, and skipped. The join keeps the model's predictions with event time in [start_ts, end_ts]
(the first of a repeated event id) as examples without their label, and gives each the first label
with its event id, as the monitor's label joiner does; later labels are counted as duplicates.

Memory: the window's predictions of one model, features included (the examples themselves), and no
more: labels are matched as they are read, never held.

>>> import orjson
>>> from driftwarden_load.producer import envelope
>>> from driftwarden_load.scenarios import Scenario, generate
>>> chunk = next(generate(Scenario(n_events=10, model_id="m")))
>>> join = TrainingJoin("m", start_ts=chunk.ts[2], end_ts=chunk.ts[7])
>>> join.add_predictions(envelope("prediction-batch.v1", "m", chunk.prediction_events()))
[]
>>> [r.reason.split(":")[0] for r in join.add_labels(envelope("label-batch.v1", "m", chunk.label_events()) + b"]")]
['not valid JSON']
>>> join.add_labels(orjson.dumps(chunk.label_events()[3])), join.add_labels(orjson.dumps(chunk.label_events()[3]))
([], [])
>>> [e["event_id"] for e in join.examples()] == [chunk.event_ids[3]], join.counts()
(True, {'examples': 1, 'unlabelled': 5, 'duplicate_predictions': 0, 'duplicate_labels': 1, 'invalid_records': 1})
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from driftwarden.core.decoding import LABELS, PREDICTIONS, Rejection

#: What an example holds (what ``Dataset.from_examples`` reads: features, label, ts; the rest identifies it).
EXAMPLE_FIELDS = ("event_id", "model_id", "model_version", "ts", "features", "prediction")


class TrainingJoin:
    def __init__(self, model_id: str, start_ts: float, end_ts: float) -> None:
        self.model_id = model_id
        self.start_ts = start_ts
        self.end_ts = end_ts
        #: event id -> example (its "label" set by the first label), in the order the predictions came
        self.predictions: dict[str, dict[str, Any]] = {}
        self.labelled = 0
        self.duplicate_predictions = 0
        self.duplicate_labels = 0
        self.invalid_records = 0

    def add_predictions(self, raw: bytes | None) -> list[Rejection]:
        """One message of the predictions topic; what of it could not be read (counted, skipped)."""
        decoded = PREDICTIONS.decode(raw)
        rows: list[Iterable[dict[str, Any]]] = [
            (e.model_dump(include=set(EXAMPLE_FIELDS)) for e in decoded.events if self._keeps(e.model_id, e.ts))
        ]
        for batch in decoded.columns:
            inside = (batch.ts >= self.start_ts) & (batch.ts <= self.end_ts)
            if batch.model_id == self.model_id and inside.any():
                rows.append(batch.take(np.flatnonzero(inside)).rows())
        for part in rows:
            for row in part:
                if row["event_id"] in self.predictions:
                    self.duplicate_predictions += 1
                    continue
                self.predictions[row["event_id"]] = {name: row[name] for name in EXAMPLE_FIELDS}
        self.invalid_records += len(decoded.rejections)
        return decoded.rejections

    def add_labels(self, raw: bytes | None) -> list[Rejection]:
        """One message of the labels topic (read after every prediction); what of it could not be read."""
        decoded = LABELS.decode(raw)
        for label in decoded.events:
            example = self.predictions.get(label.event_id) if label.model_id == self.model_id else None
            if example is None:  # a label of a prediction outside the window (or of none)
                continue
            if "label" in example:
                self.duplicate_labels += 1
                continue
            example["label"] = label.label
            self.labelled += 1
        self.invalid_records += len(decoded.rejections)
        return decoded.rejections

    def examples(self) -> list[dict[str, Any]]:
        """The labelled examples (the documents the model training code takes)."""
        return [example for example in self.predictions.values() if "label" in example]

    def counts(self) -> dict[str, int]:
        return {
            "examples": self.labelled,
            "unlabelled": len(self.predictions) - self.labelled,
            "duplicate_predictions": self.duplicate_predictions,
            "duplicate_labels": self.duplicate_labels,
            "invalid_records": self.invalid_records,
        }

    def _keeps(self, model_id: str, ts: float) -> bool:
        return model_id == self.model_id and self.start_ts <= ts <= self.end_ts
