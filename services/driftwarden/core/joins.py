"""Join label events to their predictions by ``event_id``, whatever order they arrive in.

Predictions and labels of a model share a partition (both keyed by ``model_id``), so the join is
local to one worker. A label may arrive after its prediction (the usual case), before it (held until
the prediction comes), twice (the duplicate is counted and ignored) or never (the prediction expires
after ``ttl_s`` of event time and is counted). Memory is bounded by ``max_pending`` per side: the
oldest entries are evicted, and counted, first.

>>> joiner = LabelJoiner(ttl_s=60, max_pending=1000)
>>> joiner.add_prediction("a", 10.0, ("1", 1.0, 0.9, (), b"{}")) is None
True
>>> joiner.add_label("a", 1.0, 20.0).label, joiner.add_label("a", 1.0, 21.0)
(1.0, None)
>>> joiner.add_label("b", 0.0, 22.0) is None, joiner.add_prediction("b", 22.5, ("1", 0.0, 0.8, (), b"{}")).label
(True, 0.0)
>>> joiner.add_prediction("c", 30.0, ("1", 1.0, 0.7, (), b"{}"))
>>> joiner.expire(100.0)
>>> joiner.counts()["expired_predictions"]
1
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, TypeVar, cast

import orjson

from driftwarden.core.state import (
    State,
    StateError,
    Stateful,
    StateReader,
    pack_array,
    pack_codes,
    pack_float,
    pack_utf8_blobs,
)

#: How many joined event ids are remembered to recognise duplicate labels.
RECENTLY_JOINED = 10_000

T = TypeVar("T")
#: A prediction or a label value (schemas: a number or a string).
Value = float | str
#: What the monitor keeps of a prediction until its label comes: (model_version, prediction,
#: confidence or NaN, segment values as a tuple of (field, value), the features for training as
#: JSON: a fraction of a dict's memory, and checkpoints write text much faster than dicts).
PredictionRecord = tuple[str, Value, float, tuple[tuple[str, str], ...], bytes]


def compact_json(value: object) -> bytes:
    """JSON bytes of exactly their size, to keep: orjson's own buffers hold ~8 KB however short."""
    return bytes(memoryview(orjson.dumps(value)))


@dataclass(frozen=True)
class Joined:
    event_id: str
    ts: float  # the prediction's event time
    model_version: str
    prediction: Value
    label: Value
    confidence: float
    segment: tuple[tuple[str, str], ...]
    features: dict[str, Any]

    def state(self) -> State:
        return {
            "event_id": self.event_id,
            "ts": self.ts,
            "model_version": self.model_version,
            "prediction": self.prediction,
            "label": self.label,
            "confidence": pack_float(self.confidence),
            "segment": [list(pair) for pair in self.segment],
            "features": compact_json(self.features).decode(),
        }

    @classmethod
    def from_state(cls, state: StateReader) -> Joined:
        prediction = _value(state.raw("prediction"), f"{state.where}.prediction")
        label = _value(state.raw("label"), f"{state.where}.label")
        segment = _segment(state.raw("segment"), f"{state.where}.segment")
        try:
            features = orjson.loads(state.text("features"))
        except orjson.JSONDecodeError:
            raise StateError(f"{state.where}.features: not JSON") from None
        if not isinstance(features, dict):
            raise StateError(f"{state.where}.features: expected an object")
        return cls(
            state.text("event_id"), state.number("ts"), state.text("model_version"), prediction, label,
            state.number("confidence"), segment, features,
        )  # fmt: skip


class LabelJoiner(Stateful):
    def __init__(self, ttl_s: float, max_pending: int) -> None:
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self.predictions: OrderedDict[str, tuple[float, PredictionRecord]] = OrderedDict()
        self.early_labels: OrderedDict[str, tuple[float, Value]] = OrderedDict()
        self.recently_joined: OrderedDict[str, float] = OrderedDict()
        self.joined = 0
        self.early = 0
        self.duplicates = 0
        self.expired_predictions = 0
        self.expired_labels = 0
        self.evicted = 0

    def add_prediction(self, event_id: str, ts: float, record: PredictionRecord) -> Joined | None:
        waiting = self.early_labels.pop(event_id, None)
        if waiting is not None:
            return self._join(event_id, ts, record, waiting[1])
        if event_id in self.predictions or event_id in self.recently_joined:
            self.duplicates += 1
            return None
        self.predictions[event_id] = (ts, record)
        self._bound(self.predictions)
        return None

    def add_label(self, event_id: str, label: Value, ts: float) -> Joined | None:
        pending = self.predictions.pop(event_id, None)
        if pending is not None:
            return self._join(event_id, pending[0], pending[1], label)
        if event_id in self.recently_joined or event_id in self.early_labels:
            self.duplicates += 1
            return None
        self.early += 1
        self.early_labels[event_id] = (ts, label)
        self._bound(self.early_labels)
        return None

    def expire(self, watermark_ts: float) -> None:
        """Drop what waited longer than the TTL, in event time."""
        horizon = watermark_ts - self.ttl_s
        self.expired_predictions += _drop_older(self.predictions, horizon)
        self.expired_labels += _drop_older(self.early_labels, horizon)
        _drop_older(self.recently_joined, horizon)

    def counts(self) -> dict[str, int]:
        return {
            "joined": self.joined,
            "early_labels": self.early,
            "duplicate_labels": self.duplicates,
            "expired_predictions": self.expired_predictions,
            "expired_labels": self.expired_labels,
            "evicted": self.evicted,
            "pending_predictions": len(self.predictions),
            "pending_labels": len(self.early_labels),
        }

    def _join(self, event_id: str, ts: float, record: PredictionRecord, label: Value) -> Joined:
        self.joined += 1
        self.recently_joined[event_id] = ts
        while len(self.recently_joined) > RECENTLY_JOINED:
            self.recently_joined.popitem(last=False)
        version, prediction, confidence, segment, features = record
        return Joined(event_id, ts, version, prediction, label, confidence, segment, orjson.loads(features))

    def _bound(self, entries: OrderedDict[str, T]) -> None:
        while len(entries) > self.max_pending:
            entries.popitem(last=False)
            self.evicted += 1

    # -- state: column-wise, so 200k pending predictions write fast -----------------------------

    COUNTERS = ("joined", "early", "duplicates", "expired_predictions", "expired_labels", "evicted")

    def state(self) -> State:
        pending = list(self.predictions.values())
        ts, records = list(map(itemgetter(0), pending)), list(map(itemgetter(1), pending))
        versions, predictions, confidence, segments, features = (list(map(itemgetter(k), records)) for k in range(5))
        return {
            "ttl_s": self.ttl_s,
            "max_pending": self.max_pending,
            **{name: getattr(self, name) for name in self.COUNTERS},
            "predictions": {
                "event_ids": list(self.predictions),
                "ts": pack_array(ts),
                "versions": pack_codes(versions),
                "predictions": predictions,
                "confidence": pack_array(confidence),
                "segments": pack_codes(segments),  # (tuples are written as JSON lists)
                "features": pack_utf8_blobs(features),
            },
            "early_labels": {
                "event_ids": list(self.early_labels),
                "ts": pack_array([ts for ts, _ in self.early_labels.values()]),
                "labels": [label for _, label in self.early_labels.values()],
            },
            "recently_joined": {
                "event_ids": list(self.recently_joined),
                "ts": pack_array(list(self.recently_joined.values())),
            },
        }

    @classmethod
    def from_state(cls, state: StateReader) -> LabelJoiner:
        joiner = cls(state.number("ttl_s"), state.integer("max_pending", minimum=1))
        for name in cls.COUNTERS:
            setattr(joiner, name, state.integer(name))
        predictions, labels = state.child("predictions"), state.child("early_labels")
        ids, ts = _keyed(predictions)
        label_ids, label_ts = _keyed(labels)
        versions, version_codes = predictions.codes("versions")
        segments, segment_codes = predictions.codes("segments")
        checked_versions = [v for v in versions if isinstance(v, str)]
        if len(checked_versions) != len(versions):
            raise StateError(f"{predictions.where}.versions: expected strings")
        checked_segments = [_segment(s, f"{predictions.where}.segments") for s in segments]
        columns = zip(
            map(checked_versions.__getitem__, version_codes),
            _values(predictions, "predictions"),
            predictions.array("confidence").tolist(),
            map(checked_segments.__getitem__, segment_codes),
            predictions.utf8_blobs("features"),
            strict=True,
        )
        try:
            joiner.predictions = OrderedDict(zip(ids, zip(ts, columns, strict=True), strict=True))
            joiner.early_labels = OrderedDict(
                zip(label_ids, zip(label_ts, _values(labels, "labels"), strict=True), strict=True)
            )
            joined_ids, joined_ts = _keyed(state.child("recently_joined"))
            joiner.recently_joined = OrderedDict(zip(joined_ids, joined_ts, strict=True))
        except ValueError:
            raise StateError(f"{state.where}: columns of different lengths") from None
        return joiner


def _keyed(state: StateReader) -> tuple[list[str], list[float]]:
    return state.texts("event_ids"), state.array("ts").tolist()


def _values(state: StateReader, key: str) -> list[Value]:
    """Predictions or labels from a state (checked at C speed: there may be 100,000s)."""
    values = state.items(key)
    if not set(map(type, values)) <= {float, str}:
        raise StateError(f"{state.where}.{key}: expected numbers and strings")
    return cast("list[Value]", values)  # (every item checked above)


def _value(value: object, where: str) -> Value:
    """A prediction or label from a state."""
    if isinstance(value, float | str):
        return value
    raise StateError(f"{where}: expected a number or a string, got {value!r:.40}")


def _segment(pairs: object, where: str) -> tuple[tuple[str, str], ...]:
    """Segment values ``[[field, value], ...]`` from a state."""
    segment: list[tuple[str, str]] = []
    for pair in pairs if isinstance(pairs, list) else [None]:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and isinstance(pair[1], str)):
            raise StateError(f"{where}: expected [field, value] pairs")
        segment.append((pair[0], pair[1]))
    return tuple(segment)


def _drop_older(entries: OrderedDict[str, Any], horizon: float) -> int:
    dropped = 0
    while entries:
        value = next(iter(entries.values()))
        ts = value[0] if isinstance(value, tuple) else value
        if ts >= horizon:
            break
        entries.popitem(last=False)
        dropped += 1
    return dropped
