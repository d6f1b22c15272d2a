"""Join label events to their predictions by ``event_id``, whatever order they arrive in.

Predictions and labels of a model share a partition (both keyed by ``model_id``), so the join is
local to one worker. A label may arrive after its prediction (the usual case), before it (held until
the prediction comes), twice (the duplicate is counted and ignored) or never (the prediction expires
after ``ttl_s`` of event time and is counted). Memory is bounded by ``max_pending`` per side: the
oldest entries are evicted, and counted, first (pending predictions 1 % at a time).

A pending prediction keeps only what the performance metrics need: its event time, model version,
prediction, top score and segment, packed into 28 bytes (the version, the segment and a text
prediction as one code into a small table); with its event id and the dict entry, ~170 bytes
(``driftwarden bench joiner``). Features are not kept: the trainer joins its own examples
(:mod:`driftwarden.core.training_join`).

>>> joiner = LabelJoiner(ttl_s=60, max_pending=1000)
>>> joiner.add_prediction("a", 10.0, "1", 1.0, 0.9, ()) is None
True
>>> joiner.add_label("a", 1.0, 20.0).label, joiner.add_label("a", 1.0, 21.0)
(1.0, None)
>>> joiner.add_label("b", 0.0, 22.0) is None, joiner.add_prediction("b", 22.5, "1", "no", 0.8, ()).label
(True, 0.0)
>>> joiner.add_prediction("c", 30.0, "1", "yes", 0.7, (("country", "NL"),))
>>> joined = joiner.add_label("c", "no", 31.0)
>>> joined.prediction, joined.label, joined.confidence, joined.segment
('yes', 'no', 0.7, (('country', 'NL'),))
>>> joiner.add_prediction("d", 30.0, "1", 1.0, 0.7, ())
>>> joiner.expire(100.0)
>>> joiner.counts()["expired_predictions"]
1
"""

from __future__ import annotations

import math
import struct
from collections import OrderedDict
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeVar, cast

import numpy as np

from driftwarden.core.state import (
    JsonValue,
    State,
    StateError,
    Stateful,
    StateReader,
    pack_array,
    pack_codes,
    pack_float,
)

#: How many joined event ids are remembered to recognise duplicate labels.
RECENTLY_JOINED = 10_000
#: Removed predictions leave holes in the dict that iterating from its oldest entry walks over; it is
#: copied without them once more were removed than it holds (and at least this many).
COMPACT_AFTER = 65_536
#: A full joiner evicts this share of its pending predictions at once (one by one, each eviction would
#: walk over the holes at the dict's front).
EVICT_SHARE = 100

T = TypeVar("T")
#: A prediction or a label value (schemas: a number or a string).
Value = float | str
#: A column of numbers (or of codes).
Column = np.ndarray | Sequence[float] | Sequence[int]
#: Segment values as a tuple of (field, value) pairs.
Segment = tuple[tuple[str, str], ...]
#: What a code stands for: (model_version, segment, the prediction when it is text, else None).
Kind = tuple[str, Segment, str | None]
#: A pending prediction: event time, top score (NaN without scores), the prediction when a number
#: (NaN when text) and its kind's code. 28 bytes: a bytes object of 64 (a tuple of these was ~200).
RECORD = struct.Struct("<dddI")
RECORD_DTYPE = np.dtype([("ts", "<f8"), ("confidence", "<f8"), ("number", "<f8"), ("kind", "<u4")])
_TS = struct.Struct("<d")


@dataclass(frozen=True)
class Joined:
    event_id: str
    ts: float  # the prediction's event time
    model_version: str
    prediction: Value
    label: Value
    confidence: float
    segment: Segment

    def state(self) -> State:
        return {
            "event_id": self.event_id,
            "ts": self.ts,
            "model_version": self.model_version,
            "prediction": self.prediction,
            "label": self.label,
            "confidence": pack_float(self.confidence),
            "segment": [list(pair) for pair in self.segment],
        }

    @classmethod
    def from_state(cls, state: StateReader) -> Joined:
        prediction = _value(state.raw("prediction"), f"{state.where}.prediction")
        label = _value(state.raw("label"), f"{state.where}.label")
        segment = _segment(state.raw("segment"), f"{state.where}.segment")
        return cls(
            state.text("event_id"), state.number("ts"), state.text("model_version"), prediction, label,
            state.number("confidence"), segment,
        )  # fmt: skip


class LabelJoiner(Stateful):
    def __init__(self, ttl_s: float, max_pending: int) -> None:
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        #: event id -> packed record (:data:`RECORD`), oldest first (a dict: an OrderedDict costs ~50 B more)
        self.predictions: dict[str, bytes] = {}
        self.kinds: list[Kind] = []
        self._kind_codes: dict[Kind, int] = {}
        self._removed = 0  # predictions removed since the dict was last compacted
        self.early_labels: OrderedDict[str, tuple[float, Value]] = OrderedDict()
        self.recently_joined: OrderedDict[str, float] = OrderedDict()
        self.joined = 0
        self.early = 0
        self.duplicates = 0
        self.expired_predictions = 0
        self.expired_labels = 0
        self.evicted = 0

    def add_prediction(
        self, event_id: str, ts: float, model_version: str, prediction: Value, confidence: float, segment: Segment
    ) -> Joined | None:
        waiting = self.early_labels.pop(event_id, None)
        if waiting is not None:
            return self._join(event_id, ts, model_version, prediction, confidence, segment, waiting[1])
        if event_id in self.predictions or event_id in self.recently_joined:
            self.duplicates += 1
            return None
        text = prediction if isinstance(prediction, str) else None
        number = float("nan") if text is not None else prediction
        self.predictions[event_id] = RECORD.pack(ts, confidence, number, self._code((model_version, segment, text)))
        if len(self.predictions) > self.max_pending:  # full: the oldest 1/EVICT_SHARE go at once
            self.evicted += self._drop(len(self.predictions) - self.max_pending + self.max_pending // EVICT_SHARE)
        return None

    def add_predictions(
        self, event_ids: Sequence[str], ts: np.ndarray, model_version: str, predictions: Sequence[Value],
        confidence: np.ndarray, segments: Sequence[Segment],
    ) -> list[Joined]:  # fmt: skip
        """``add_prediction`` for each row of a columnar batch, in order; the joins made.

        Rows that all wait (no label came early for any, none pending or recently joined, none twice, room for
        all) are packed at once, as one at a time would pack them; otherwise they are added one at a time.

        >>> joiner = LabelJoiner(ttl_s=60, max_pending=1000)
        >>> joiner.add_predictions(["a", "b"], np.array([1.0, 2.0]), "1", [1.0, "no"], np.array([0.9, 0.8]), [(), ()])
        []
        >>> joiner.add_label("b", "yes", 3.0).prediction, joiner.add_label("x", 0.0, 4.0)
        ('no', None)
        >>> [j.event_id for j in joiner.add_predictions(["x", "y"], np.array([5.0, 6.0]), "1", [0.0, 1.0],
        ...                                             np.array([0.7, 0.6]), [(), ()])]  # x's label came early
        ['x']
        """
        pending, n = self.predictions, len(event_ids)
        if (len(pending) + n > self.max_pending or not pending.keys().isdisjoint(event_ids)
                or not self.early_labels.keys().isdisjoint(event_ids)
                or not self.recently_joined.keys().isdisjoint(event_ids) or len(set(event_ids)) < n):  # fmt: skip
            rows = zip(event_ids, ts.tolist(), predictions, confidence.tolist(), segments, strict=True)
            return [j for i, t, p, c, segment in rows if (j := self.add_prediction(i, t, model_version, p, c, segment))]
        code = self._code
        if str not in set(map(type, predictions)) and not any(segments):  # numbers, no segment: one kind
            codes: Column = np.full(n, code((model_version, (), None)))
            numbers: Column = np.array(predictions, dtype=float)
        else:
            codes = [code((model_version, segment, p if isinstance(p, str) else None))
                     for p, segment in zip(predictions, segments, strict=True)]  # fmt: skip
            numbers = [math.nan if isinstance(p, str) else float(p) for p in predictions]
        pending.update(zip(event_ids, _packed(ts, confidence, numbers, codes), strict=True))
        return []

    def _code(self, kind: Kind) -> int:
        """The code of a (model_version, segment, text prediction) kind, a new one the first time."""
        code = self._kind_codes.get(kind)
        if code is None:
            code = self._kind_codes[kind] = len(self.kinds)
            self.kinds.append(kind)
        return code

    def add_label(self, event_id: str, label: Value, ts: float) -> Joined | None:
        packed = self.predictions.pop(event_id, None)
        if packed is not None:
            self._compact(1)
            prediction_ts, confidence, number, code = RECORD.unpack(packed)
            version, segment, text = self.kinds[code]
            prediction = number if text is None else text
            return self._join(event_id, prediction_ts, version, prediction, confidence, segment, label)
        if event_id in self.recently_joined or event_id in self.early_labels:
            self.duplicates += 1
            return None
        self.early += 1
        self.early_labels[event_id] = (ts, label)
        self.evicted += _drop_oldest(self.early_labels, len(self.early_labels) - self.max_pending)
        return None

    def expire(self, watermark_ts: float) -> None:
        """Drop what waited longer than the TTL, in event time."""
        horizon = watermark_ts - self.ttl_s
        self.expired_predictions += self._drop(
            _count_older(self.predictions, horizon, lambda packed: _TS.unpack_from(packed)[0])
        )
        self.expired_labels += _drop_oldest(
            self.early_labels, _count_older(self.early_labels, horizon, lambda value: value[0])
        )
        _drop_oldest(self.recently_joined, _count_older(self.recently_joined, horizon, float))

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

    def _join(
        self, event_id: str, ts: float, version: str, prediction: Value, confidence: float, segment: Segment,
        label: Value,
    ) -> Joined:  # fmt: skip
        self.joined += 1
        self.recently_joined[event_id] = ts
        _drop_oldest(self.recently_joined, len(self.recently_joined) - RECENTLY_JOINED)
        return Joined(event_id, ts, version, prediction, label, confidence, segment)

    def _drop(self, n: int) -> int:
        """Drop the ``n`` oldest pending predictions; how many were dropped."""
        dropped = _drop_oldest(self.predictions, n)
        self._compact(dropped)
        return dropped

    def _compact(self, removed: int) -> None:
        self._removed += removed
        if self._removed > max(COMPACT_AFTER, len(self.predictions)):
            self.predictions = dict(self.predictions)  # (the copy leaves the holes out)
            self._removed = 0

    # -- state: column-wise, so 200k pending predictions write fast -----------------------------

    COUNTERS = ("joined", "early", "duplicates", "expired_predictions", "expired_labels", "evicted")

    def state(self) -> State:
        records = np.frombuffer(b"".join(self.predictions.values()), dtype=RECORD_DTYPE)
        kinds = self.kinds
        return {
            "ttl_s": self.ttl_s,
            "max_pending": self.max_pending,
            **{name: getattr(self, name) for name in self.COUNTERS},
            "predictions": {
                "event_ids": list(self.predictions),
                "ts": pack_array(records["ts"]),
                "confidence": pack_array(records["confidence"]),
                "numbers": pack_array(records["number"]),
                "kinds": pack_codes(cast("list[JsonValue]", [kinds[code] for code in records["kind"].tolist()])),
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
        ids, ts = predictions.texts("event_ids"), predictions.array("ts")
        kinds, codes = predictions.codes("kinds")
        joiner.kinds = [_kind(kind, f"{predictions.where}.kinds") for kind in kinds]
        joiner._kind_codes = {kind: code for code, kind in enumerate(joiner.kinds)}
        confidence, numbers = predictions.array("confidence"), predictions.array("numbers")
        if len({len(ids), len(ts), len(confidence), len(numbers), len(codes)}) != 1:
            raise StateError(f"{predictions.where}: columns of different lengths")
        joiner.predictions = dict(zip(ids, _packed(ts, confidence, numbers, codes), strict=True))
        label_ids, label_ts = _keyed(labels)
        try:
            joiner.early_labels = OrderedDict(
                zip(label_ids, zip(label_ts, _values(labels, "labels"), strict=True), strict=True)
            )
            joined_ids, joined_ts = _keyed(state.child("recently_joined"))
            joiner.recently_joined = OrderedDict(zip(joined_ids, joined_ts, strict=True))
        except ValueError:
            raise StateError(f"{state.where}: columns of different lengths") from None
        return joiner


def _packed(ts: Column, confidence: Column, numbers: Column, codes: Column) -> list[bytes]:
    """Records (:data:`RECORD`) of pending predictions from their columns, packed at once."""
    records = np.empty(len(ts), dtype=RECORD_DTYPE)
    for name, column in zip(RECORD_DTYPE.names or (), (ts, confidence, numbers, codes), strict=True):
        records[name] = column
    data, size = records.tobytes(), RECORD.size
    return [data[i : i + size] for i in range(0, len(data), size)]


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


def _segment(pairs: object, where: str) -> Segment:
    """Segment values ``[[field, value], ...]`` from a state."""
    segment: list[tuple[str, str]] = []
    for pair in pairs if isinstance(pairs, list) else [None]:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and isinstance(pair[1], str)):
            raise StateError(f"{where}: expected [field, value] pairs")
        segment.append((pair[0], pair[1]))
    return tuple(segment)


def _kind(value: object, where: str) -> Kind:
    """A kind ``[model_version, segment, text prediction or null]`` from a state."""
    if not (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)):
        raise StateError(f"{where}: expected [model_version, segment, text or null] triples")
    if not (value[2] is None or isinstance(value[2], str)):
        raise StateError(f"{where}: expected a text prediction or null, got {value[2]!r:.40}")
    return value[0], _segment(value[1], where), value[2]


def _count_older(entries: MutableMapping[str, T], horizon: float, ts_of: Callable[[T], float]) -> int:
    """How many of the oldest entries, up to the first one at or after ``horizon``, are older."""
    older = 0
    for value in entries.values():
        if ts_of(value) >= horizon:
            break
        older += 1
    return older


def _drop_oldest(entries: MutableMapping[str, Any], n: int) -> int:
    """Drop the ``n`` oldest entries (none when ``n`` ≤ 0); how many were dropped."""
    if n <= 0:
        return 0
    for key in list(islice(entries, n)):
        del entries[key]
    return n
