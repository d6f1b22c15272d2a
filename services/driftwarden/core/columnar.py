"""Columnar prediction batches (``schemas/prediction-columns.v1.json``): validated per column with numpy.

One Kafka message carries many predictions of one model version as columns: ``event_id``, ``ts``,
``prediction`` and each feature hold one value per row. Decoding checks whole columns at once (a
column of numbers becomes one float array; no per-event objects), so the numeric features reach
the detectors without a Python loop per event. A row with a bad value is refused alone, with its
index and the row as a ``prediction.v1`` event; an envelope whose shape is wrong (a missing field,
columns of different lengths) is refused whole.

>>> raw = orjson.dumps({"schema": "prediction-columns.v1", "model_id": "m", "model_version": "1",
...     "event_id": ["a", "b", "c"], "ts": [1.0, -2.0, 3], "prediction": [0, 1, 1],
...     "features": {"x": [0.5, 1.5, 2.5], "country": ["NL", None, "DE"]}})
>>> decoded = decode_columns(orjson.loads(raw), raw)
>>> batch = decoded.batch
>>> len(batch), batch.features["x"], batch.ts
(2, array([0.5, 2.5]), array([1., 3.]))
>>> decoded.rejections[0][:2]
(1, 'ts: Input should be a number greater than or equal to 0')
>>> orjson.loads(decoded.rejections[0][2])["features"]
{'x': 1.5, 'country': None}
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from driftwarden.core.events import (
    EVENT_ID_MAX_LENGTH,
    PREDICTION_BATCH_SCHEMA,
    PREDICTION_COLUMNS_SCHEMA,
    PredictionColumnBatch,
    PredictionEvent,
    is_model_id,
)
from driftwarden.core.features import column_types, value_text
from driftwarden.core.joins import Segment
from driftwarden.core.profile import Columns, FeatureSchema, common_length, feature_schema, numeric_column

MAX_ROWS = 100_000
#: The fields every ``prediction.v1`` event has, and those it may have.
_EVENT_REQUIRED = frozenset({"event_id", "model_id", "model_version", "ts", "features", "prediction"})
_OPTIONAL = frozenset({"scores", "segment", "latency_ms", "cost"})
_REQUIRED = _EVENT_REQUIRED | {"schema"}
_BATCH_FIELDS = frozenset({"schema", "model_id", "events"})
_NUMBERS = {float, int}
_FEATURE_TYPES = {float, int, str, bool, type(None)}
#: A feature column: floats when every value is a number, else the values as they came.
FeatureColumn = np.ndarray | list[Any]


@dataclass
class PredictionColumns:
    """A validated columnar batch: one model version, ``len(self)`` rows, numbers as float arrays."""

    model_id: str
    model_version: str
    event_ids: list[str]
    ts: np.ndarray
    features: dict[str, FeatureColumn]
    prediction: list[float | str]
    scores: dict[str, np.ndarray] | None = None
    segment: dict[str, list[str | None]] | None = None
    latency_ms: np.ndarray | None = None  # NaN where absent
    cost: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.event_ids)

    def __getitem__(self, rows: slice) -> PredictionColumns:
        return self.take(rows)

    def take(self, rows: slice | np.ndarray) -> PredictionColumns:
        """The rows ``rows`` (a slice, or an array of row numbers)."""
        if isinstance(rows, slice):
            pick: Any = lambda values: values[rows]  # noqa: E731
        else:
            pick = lambda values: values[rows] if isinstance(values, np.ndarray) else [values[i] for i in rows]  # noqa: E731
        return PredictionColumns(
            self.model_id,
            self.model_version,
            pick(self.event_ids),
            pick(self.ts),
            {name: pick(values) for name, values in self.features.items()},
            pick(self.prediction),
            None if self.scores is None else {c: pick(v) for c, v in self.scores.items()},
            None if self.segment is None else {k: pick(v) for k, v in self.segment.items()},
            None if self.latency_ms is None else pick(self.latency_ms),
            None if self.cost is None else pick(self.cost),
        )

    @classmethod
    def concat(cls, parts: Sequence[PredictionColumns]) -> PredictionColumns:
        """The rows of ``parts`` one after the other. The parts are of one model version with the same
        features and score classes; a segment field or a latency or cost column absent from a part is
        null in its rows.

        >>> a = PredictionColumns("m", "1", ["a"], np.array([1.0]), {"x": np.array([0.5])}, ["0"],
        ...                       segment={"deployment": ["primary"]})
        >>> b = PredictionColumns("m", "1", ["b"], np.array([2.0]), {"x": np.array([1.5])}, ["1"],
        ...                       latency_ms=np.array([3.0]))
        >>> both = PredictionColumns.concat([a, b])
        >>> both.event_ids, both.features["x"], both.segment, both.latency_ms
        (['a', 'b'], array([0.5, 1.5]), {'deployment': ['primary', None]}, array([nan,  3.]))
        """
        if len(parts) == 1:
            return parts[0]
        first = parts[0]

        def joined(values: list[Any]) -> FeatureColumn:
            if all(isinstance(v, np.ndarray) and v.dtype.kind == "f" for v in values):
                return np.concatenate(values)
            return [value for part in values for value in (part.tolist() if isinstance(part, np.ndarray) else part)]

        def optional(column: Callable[[PredictionColumns], np.ndarray | None]) -> np.ndarray | None:
            columns = [column(part) for part in parts]
            if all(c is None for c in columns):
                return None
            filled = [np.full(len(part), np.nan) if c is None else c for part, c in zip(parts, columns, strict=True)]
            return np.concatenate(filled)

        segments = [part.segment or {} for part in parts]
        keys = sorted({key for segment in segments for key in segment})
        scores = None if first.scores is None else {c: [(p.scores or {})[c] for p in parts] for c in first.scores}
        return PredictionColumns(
            first.model_id,
            first.model_version,
            [event_id for part in parts for event_id in part.event_ids],
            np.concatenate([part.ts for part in parts]),
            {name: joined([part.features[name] for part in parts]) for name in first.features},
            [prediction for part in parts for prediction in part.prediction],
            None if scores is None else {c: np.concatenate(columns) for c, columns in scores.items()},
            {k: [v for p, s in zip(parts, segments, strict=True) for v in s.get(k, [None] * len(p))] for k in keys}
            or None,
            optional(lambda part: part.latency_ms),
            optional(lambda part: part.cost),
        )

    def to_json(self) -> bytes:
        """The rows as one ``prediction-columns.v1`` message (NaN numbers are written as null)."""

        def column(values: FeatureColumn) -> Any:
            if isinstance(values, np.ndarray):
                return np.ascontiguousarray(values, dtype=float) if values.dtype.kind in "fiu" else values.tolist()
            return values

        document: dict[str, Any] = {
            "schema": PREDICTION_COLUMNS_SCHEMA, "model_id": self.model_id, "model_version": self.model_version,
            "event_id": self.event_ids, "ts": column(self.ts),
            "features": {name: column(values) for name, values in self.features.items()},
            "prediction": self.prediction,
        }  # fmt: skip
        if self.scores is not None:
            document["scores"] = {c: column(values) for c, values in self.scores.items()}
        if self.segment is not None:
            document["segment"] = self.segment
        for name, values in (("latency_ms", self.latency_ms), ("cost", self.cost)):
            if values is not None:
                document[name] = column(values)
        return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)

    def rows(self) -> Iterator[dict[str, Any]]:
        """Each row as a ``prediction.v1`` document (for dead letters and the reference's events)."""
        names = list(self.features)
        values = zip(*(column.tolist() if isinstance(column, np.ndarray) else column
                       for column in self.features.values()), strict=True)  # fmt: skip
        ts = self.ts.tolist()  # (Python floats once per column, not a numpy scalar per value)
        scores = None if self.scores is None else {c: v.tolist() for c, v in self.scores.items()}
        optional = [(name, column.tolist()) for name, column in (("latency_ms", self.latency_ms), ("cost", self.cost))
                    if column is not None]  # fmt: skip
        for i, row in enumerate(values if names else ((),) * len(self)):
            event: dict[str, Any] = {
                "event_id": self.event_ids[i], "model_id": self.model_id, "model_version": self.model_version,
                "ts": ts[i], "features": dict(zip(names, row, strict=True)), "prediction": self.prediction[i],
            }  # fmt: skip
            if scores is not None:
                event["scores"] = {c: v[i] for c, v in scores.items()}
            if self.segment is not None:
                event["segment"] = {k: v[i] for k, v in self.segment.items() if v[i] is not None}
            for name, column in optional:
                if column[i] == column[i]:
                    event[name] = column[i]
            yield event

    def events(self) -> list[PredictionEvent]:
        """The rows as prediction events (the reference phase builds its profile from events)."""
        return [PredictionEvent.model_validate(row) for row in self.rows()]

    def schema(self, declared: dict[str, str], ignored: Sequence[str]) -> FeatureSchema:
        """:func:`~driftwarden.core.profile.infer_schema` of the rows as events, read from the columns."""
        types = column_types(self.features, declared, ignored)
        embedding = {
            name: common_length(len(v) for v in self.features.get(name, ()) if type(v) is list)
            for name in types.embedding
        }
        text_predictions = any(type(p) is str for p in self.prediction)
        return feature_schema(types, set(self.scores or {}), text_predictions, embedding)

    def columns(self, schema: FeatureSchema) -> Columns:
        """The rows as the detectors' :class:`~driftwarden.core.profile.Columns`, the same as
        :func:`~driftwarden.core.profile.to_columns` of the same rows as events, column by column."""
        n = len(self)
        numeric, missing, violations = (np.empty((n, len(schema.numeric))) for _ in range(3))
        for j, name in enumerate(schema.numeric):
            column = self.features.get(name)
            numeric[:, j], missing[:, j], violations[:, j] = numeric_column([None] * n if column is None else column, n)
        categorical = []
        for name in schema.categorical:
            column = self.features.get(name, [None] * n)
            values = column.tolist() if isinstance(column, np.ndarray) else column
            categorical.append(values if set(map(type, values)) <= {str} else list(map(value_text, values)))
        confidence, signal = np.full(n, np.nan), np.full(n, np.nan)
        if self.scores:
            confidence = np.max(np.vstack(list(self.scores.values())), axis=0)
            positive = schema.positive_class
            signal = (self.scores.get(positive, np.full(n, np.nan)) if positive else confidence).copy()
        elif schema.task == "regression":
            signal = np.array([p if type(p) is float else np.nan for p in self.prediction], dtype=float)
        return Columns(
            event_ids=self.event_ids,
            ts=self.ts,
            numeric=numeric,
            numeric_missing=missing.astype(bool),
            categorical=categorical,
            type_violations=violations.astype(bool),
            signal=signal,
            confidence=confidence,
            latency_ms=np.full(n, np.nan) if self.latency_ms is None else self.latency_ms,
            cost=np.full(n, np.nan) if self.cost is None else self.cost,
            embeddings=[np.full((n, length), np.nan) for length in schema.embedding.values()],  # (no arrays here)
        )

    def join_columns(self) -> tuple[np.ndarray, list[Segment]]:
        """What the label joiner takes besides ids, times and predictions
        (:meth:`~driftwarden.core.joins.LabelJoiner.add_predictions`): each row's top score (NaN without
        scores) and segment."""
        scores = list((self.scores or {}).values())
        confidence = np.max(np.vstack(scores), axis=0) if scores else np.full(len(self), np.nan)
        segments = self.segment or {}
        if not segments:
            return confidence, [()] * len(self)
        keys = sorted(segments)
        return confidence, [tuple((k, v) for k in keys if (v := segments[k][i]) is not None) for i in range(len(self))]


@dataclass
class DecodedColumns:
    batch: PredictionColumns | None
    #: (row or None for the whole envelope, reason, the row's or the envelope's bytes)
    rejections: list[tuple[int | None, str, bytes]]


def decode_columns(document: Any, raw: bytes) -> DecodedColumns:
    """Validate a parsed ``prediction-columns.v1`` document column by column (see the module doc)."""
    shape_error = _shape_error(document)
    if shape_error is not None:
        return DecodedColumns(None, [(None, f"invalid columnar batch: {shape_error}", raw)])
    refused = _Refused(len(document["event_id"]))
    batch = _validated(document, refused)
    if not refused.bad.any():
        return DecodedColumns(batch, [])
    refused_rows = np.flatnonzero(refused.bad)
    rows = list(batch.take(refused_rows).rows())
    rejections: list[tuple[int | None, str, bytes]] = [
        (int(i), refused.reasons[int(i)], orjson.dumps(row)) for i, row in zip(refused_rows, rows, strict=True)
    ]
    if len(refused_rows) == len(batch):
        return DecodedColumns(None, rejections)
    kept = batch.take(np.flatnonzero(~refused.bad))
    for name, column in kept.features.items():  # a column whose only non-number was refused: numbers again
        if isinstance(column, list) and set(map(type, column)) <= {float}:
            kept.features[name] = np.array(column, dtype=float)
    return DecodedColumns(kept, rejections)


def decode_rows(document: Any) -> PredictionColumns | None:
    """A parsed ``prediction-batch.v1`` document as one columnar batch, when its events are alike and
    every one is valid; None otherwise (the caller then validates it event by event, as before).

    Alike: the same fields, features, score classes and segment keys, each in the same order, and one
    model version (the envelope's model). The events' values become columns in one pass (no per-event
    objects) and are validated column by column by the columnar batch's rules, which are the row
    contract's (``prediction.v1``) but for two, checked here: a segment value is a string (not null),
    and a feature may be an array (an embedding; refused here, so such an envelope is not taken).
    The batch's rows, as events, are the envelope's events as :class:`PredictionBatch` reads them.

    >>> event = {"event_id": "a", "model_id": "m", "model_version": "1", "ts": 1, "features": {"x": 2},
    ...          "prediction": "no"}
    >>> batch = decode_rows({"schema": "prediction-batch.v1", "model_id": "m",
    ...                      "events": [event, event | {"event_id": "b", "features": {"x": 3.5}}]})
    >>> batch.event_ids, batch.ts, batch.features
    (['a', 'b'], array([1., 1.]), {'x': array([2. , 3.5])})
    >>> decode_rows({"schema": "prediction-batch.v1", "model_id": "m", "events": [event, event | {"ts": -1}]})
    """
    if not (type(document) is dict and document.keys() == _BATCH_FIELDS):
        return None
    model_id, events = document["model_id"], document["events"]
    if not (document["schema"] == PREDICTION_BATCH_SCHEMA and type(model_id) is str and is_model_id(model_id)
            and type(events) is list and 1 <= len(events) <= MAX_ROWS):  # fmt: skip
        return None
    fields = _alike(events)
    if fields is None or not _EVENT_REQUIRED <= fields.keys() <= _EVENT_REQUIRED | _OPTIONAL:
        return None
    n, version = len(events), fields["model_version"][0]
    if fields["model_id"].count(model_id) != n or fields["model_version"].count(version) != n:
        return None
    if not (type(version) is str and is_model_id(version)):
        return None
    columns: dict[str, Any] = {"model_id": model_id, "model_version": version, "features": _alike(fields["features"])}
    for name in ("scores", "segment"):  # each event's mapping, or null in every event
        values = fields.get(name, [None] * n)
        if values.count(None) == n:
            columns[name] = None
        elif (mapping := _alike(values)) is not None:
            columns[name] = mapping
        else:
            return None
    if columns["features"] is None or any(set(map(type, v)) != {str} for v in (columns["segment"] or {}).values()):
        return None
    refused = _Refused(n)
    batch = _validated(fields | columns, refused)
    return None if refused.bad.any() else batch


def _alike(mappings: list[Any]) -> dict[str, list[Any]] | None:
    """Per key, its values, when ``mappings`` are objects with the same keys in the same order; else None."""
    if set(map(type, mappings)) != {dict}:
        return None
    keys = set(map(tuple, mappings))
    if len(keys) != 1:
        return None
    # one key at a time (C-level lookups; no iterator per mapping: few allocations for the collector)
    return {key: list(map(itemgetter(key), mappings)) for key in keys.pop()}


def refusals(batch: PredictionColumns) -> list[tuple[int | None, str]]:
    """The rows of ``batch`` that :func:`decode_columns` refuses in ``batch.to_json()``, with the same
    reasons, found on the columns themselves: no encoding, no parsing (a number that is not finite is
    null there, as ``to_json`` writes it). A batch whose envelope is wrong is decoded from its bytes.

    >>> batch = PredictionColumns("m", "1", ["a", "b", ""], np.array([1.0, np.inf, 2.0]),
    ...                           {"x": np.array([np.nan, 1.0, 2.0])}, ["0", "1", "1"],
    ...                           {"1": np.array([0.5, 0.5, 1.5])})
    >>> refusals(batch)
    [(1, 'ts: Input should be a valid number'), (2, 'event_id: a string of 1-128 characters')]
    >>> raw = batch.to_json()
    >>> refusals(batch) == [(row, reason) for row, reason, _ in decode_columns(orjson.loads(raw), raw).rejections]
    True
    >>> refusals(PredictionColumns("not a model id", "1", ["a"], np.ones(1), {}, ["0"]))[0][1][:22]
    'invalid columnar batch'
    """
    n = len(batch)
    optional = (batch.latency_ms, batch.cost)
    columns = [batch.ts, batch.prediction, *batch.features.values(), *(batch.scores or {}).values(),
               *(batch.segment or {}).values(), *(column for column in optional if column is not None)]  # fmt: skip
    if not (is_model_id(batch.model_id) and is_model_id(batch.model_version) and 1 <= n <= MAX_ROWS
            and all(len(column) == n for column in columns)):  # fmt: skip
        raw = batch.to_json()
        return [(row, reason) for row, reason, _ in decode_columns(orjson.loads(raw), raw).rejections]
    refused = _Refused(n)
    document: dict[str, Any] = {
        "model_id": batch.model_id, "model_version": batch.model_version, "event_id": _written(batch.event_ids),
        "ts": _written(batch.ts), "prediction": _written(batch.prediction),
        "features": {name: values if isinstance(values, np.ndarray) and values.dtype.kind in "fiu" else _written(values)
                     for name, values in batch.features.items()},  # (number features: nothing to refuse in them)
        "scores": None if batch.scores is None else {c: _written(v) for c, v in batch.scores.items()},
        "segment": None if batch.segment is None else {k: _written(v) for k, v in batch.segment.items()},
        "latency_ms": None if batch.latency_ms is None else _written(batch.latency_ms),
        "cost": None if batch.cost is None else _written(batch.cost),
    }  # fmt: skip
    _validated(document, refused)
    return [(i, refused.reasons[i]) for i in np.flatnonzero(refused.bad).tolist()]


def _written(values: Any) -> Any:
    """A column as :meth:`PredictionColumns.to_json` writes it: numbers as a float array (not finite:
    null), anything else as a list (a float that is not finite: None)."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "fiu":
            finite = np.isfinite(values)
            return values if finite.all() else np.where(finite, values, np.nan)
        values = values.tolist()
    if float in set(map(type, values)):
        return [None if type(v) is float and not np.isfinite(v) else v for v in values]
    return values


class _Refused:
    """The rows refused so far, each with the first reason found."""

    def __init__(self, n: int) -> None:
        self.bad = np.zeros(n, dtype=bool)
        self.reasons: dict[int, str] = {}

    def __call__(self, rows: np.ndarray, reason: str) -> None:
        if not rows.any():  # (the usual case: a cheap test, not a search)
            return
        for i in np.flatnonzero(rows & ~self.bad).tolist():
            self.reasons[i] = reason
        self.bad |= rows


def _validated(document: dict[str, Any], refuse: _Refused) -> PredictionColumns:
    """The batch of a document of a well-formed envelope, validated column by column (its columns as
    decoded JSON, lists; or as :func:`_written`: numbers as float arrays, NaN for null); the rows the
    monitor refuses are told to ``refuse``."""
    ids = document["event_id"]
    n = len(ids)
    if set(map(type, ids)) == {str}:
        is_text, lengths = np.ones(n, bool), np.fromiter(map(len, ids), int, n)
    else:
        is_text = np.fromiter((type(i) is str for i in ids), bool, n)
        lengths = np.fromiter((len(i) if t else 0 for i, t in zip(ids, is_text, strict=True)), int, n)
    refuse(~is_text | (lengths < 1) | (lengths > EVENT_ID_MAX_LENGTH), "event_id: a string of 1-128 characters")
    ts = _numbers(document["ts"], n, 0.0, None, False, "ts", refuse)
    features: dict[str, FeatureColumn] = {}
    for name, column in document["features"].items():
        if isinstance(column, np.ndarray):  # numbers, null where NaN: nothing to refuse
            features[name] = column
            continue
        types = set(map(type, column))
        if types <= _NUMBERS:
            features[name] = np.array(column, dtype=float)
            continue
        if list in types:
            arrays = np.fromiter((type(v) is list for v in column), bool, n)
            refuse(arrays, f"features.{name}: no arrays (embeddings) in a columnar batch; send prediction.v1 events")
        if not types <= _FEATURE_TYPES:
            wrong = np.fromiter((type(v) not in _FEATURE_TYPES for v in column), bool, n)
            refuse(wrong, f"features.{name}: Input should be a number, a string, a boolean or null")
        # as the row path reads it (an integer is a float)
        features[name] = [float(v) if type(v) is int else v for v in column] if int in types else column
    prediction = document["prediction"]
    prediction_types = set(map(type, prediction))
    if not prediction_types <= {float, int, str}:
        wrong = np.fromiter((type(v) not in (float, int, str) for v in prediction), bool, n)
        refuse(wrong, "prediction: Input should be a valid number or a valid string")
    if int in prediction_types:  # as the row path reads it (an integer is a float)
        mixed = not prediction_types <= _NUMBERS
        prediction = [float(v) if type(v) is int else v for v in prediction] if mixed else list(map(float, prediction))
    scores = document.get("scores")
    if scores is not None:
        scores = {c: _numbers(v, n, 0.0, 1.0, False, f"scores.{c}", refuse) for c, v in scores.items()}
    segment = document.get("segment")
    if segment is not None:
        for key, values in segment.items():
            if not set(map(type, values)) <= {str, type(None)}:
                wrong = np.fromiter((v is not None and type(v) is not str for v in values), bool, n)
                refuse(wrong, f"segment.{key}: Input should be a valid string or null")
    latency, cost = (
        None if document.get(key) is None else _numbers(document[key], n, 0.0, None, True, key, refuse)
        for key in ("latency_ms", "cost")
    )
    return PredictionColumns(document["model_id"], document["model_version"], ids, ts, features, prediction,
                             scores, segment, latency, cost)  # fmt: skip


def _numbers(
    values: list[Any] | np.ndarray, n: int, low: float, high: float | None, nullable: bool, name: str, refuse: Any
) -> np.ndarray:
    """A column of numbers in [low, high] as floats (NaN for a refused row, or for null when allowed);
    ``values`` decoded JSON, or a float array with NaN for null."""
    if isinstance(values, np.ndarray):
        array = values
        if not nullable:
            refuse(np.isnan(array), f"{name}: Input should be a valid number")
    elif set(map(type, values)) <= _NUMBERS:
        array = np.array(values, dtype=float)
    else:  # rare: bools, strings or nulls among the numbers
        array = np.array([float(v) if type(v) in _NUMBERS else np.nan for v in values], dtype=float)
        null = np.fromiter((v is None for v in values), bool, n)
        refuse(np.isnan(array) & ~(null & nullable), f"{name}: Input should be a valid number")
    outside = (array < low) | (array > high if high is not None else False)
    if outside.any():
        bound = f"greater than or equal to {low:g}" + ("" if high is None else f" and at most {high:g}")
        refuse(outside, f"{name}: Input should be a number {bound}")
    return array


def _shape_error(document: Any) -> str | None:
    """What is wrong with the envelope as a whole (fields, types of its parts, column lengths), if anything."""
    if not isinstance(document, dict) or not _REQUIRED <= document.keys() <= _REQUIRED | _OPTIONAL:
        return _pydantic_reason(document)
    ids = document["event_id"]
    if document["schema"] != PREDICTION_COLUMNS_SCHEMA or not isinstance(ids, list) or not 1 <= len(ids) <= MAX_ROWS:
        return _pydantic_reason(document)
    if not (isinstance(document["model_id"], str) and is_model_id(document["model_id"])):
        return _pydantic_reason(document)
    if not (isinstance(document["model_version"], str) and is_model_id(document["model_version"])):
        return _pydantic_reason(document)
    columns = {"ts": document["ts"], "prediction": document["prediction"]}
    for key in ("latency_ms", "cost"):
        if document.get(key) is not None:
            columns[key] = document[key]
    for group in ("features", "scores", "segment"):
        mapping = document.get(group)
        if group == "features" or mapping is not None:
            if not isinstance(mapping, dict):
                return _pydantic_reason(document)
            columns.update({f"{group}.{name}": values for name, values in mapping.items()})
    for name, values in columns.items():
        if not isinstance(values, list):
            return _pydantic_reason(document)
        if len(values) != len(ids):
            return f"{name} has {len(values)} values for {len(ids)} event ids"
    return None


def _pydantic_reason(document: Any) -> str:
    from driftwarden.core.decoding import describe  # (decoding imports this module)

    try:
        PredictionColumnBatch.model_validate(document)
    except ValidationError as exc:
        return describe(exc.errors())
    return "not a columnar prediction batch"
