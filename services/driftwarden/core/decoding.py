"""Turn raw Kafka message values into validated events, and everything else into rejections.

A message is either one event, a batch envelope (``"schema": "prediction-batch.v1"``) or, for
predictions, a columnar batch (``"schema": "prediction-columns.v1"``, decoded column by column by
:mod:`driftwarden.core.columnar` into :attr:`Decoded.columns`). Inside an envelope each event stands
alone: a bad one is rejected with its index and its own bytes while its
neighbours go through. Nothing raises on input; the caller dead-letters the rejections.

>>> good = {"event_id": "6f1c2a7e-0d9b-4a57-9a43-5f0f3c1d2b11", "model_id": "m", "model_version": "1",
...         "ts": 1.0, "features": {"x": 1.0}, "prediction": 0}
>>> bad = {**good, "ts": "yesterday"}
>>> envelope = {"schema": "prediction-batch.v1", "model_id": "m", "events": [good, bad, good]}
>>> decoded = PREDICTIONS.decode(orjson.dumps(envelope))
>>> len(decoded.events), [(r.batch_index, r.reason) for r in decoded.rejections]
(2, [(1, 'ts: Input should be a valid number')])
>>> PREDICTIONS.decode(b"{oops").rejections[0].reason
'not valid JSON: unexpected character, expected a string key: line 1 column 2 (char 1)'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import orjson
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from driftwarden.core.columnar import PredictionColumns, decode_columns, decode_rows
from driftwarden.core.events import (
    LABEL_BATCH_SCHEMA,
    PREDICTION_BATCH_SCHEMA,
    PREDICTION_COLUMNS_SCHEMA,
    EventBatch,
    KeyedEvent,
    LabelBatch,
    LabelEvent,
    PredictionBatch,
    PredictionEvent,
)

E = TypeVar("E", bound=KeyedEvent)

MAX_ERRORS_IN_REASON = 3


@dataclass(frozen=True)
class Rejection:
    """Why an input (or one event of a batch) was refused, with its exact bytes."""

    reason: str
    payload: bytes
    batch_index: int | None = None


@dataclass
class Decoded(Generic[E]):
    events: list[E] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    #: Columnar batches (predictions only), validated column by column.
    columns: list[PredictionColumns] = field(default_factory=list)

    def __len__(self) -> int:
        """How many events were accepted."""
        return len(self.events) + sum(len(batch) for batch in self.columns)


def describe(errors: list[ErrorDetails], skip_loc: int = 0) -> str:
    """A one-line summary of pydantic errors: ``field.path: message; ...``."""
    parts = []
    for error in errors[:MAX_ERRORS_IN_REASON]:
        loc = ".".join(str(part) for part in error["loc"][skip_loc:])
        parts.append(f"{loc}: {error['msg']}" if loc else error["msg"])
    if len(errors) > MAX_ERRORS_IN_REASON:
        parts.append(f"(+{len(errors) - MAX_ERRORS_IN_REASON} more errors)")
    return "; ".join(parts)


class Decoder(Generic[E]):
    """Decoder for one event type and its batch envelope."""

    def __init__(
        self, event: type[E], batch: type[EventBatch], batch_schema: str, columns_schema: str | None = None
    ) -> None:
        self.event = event
        self.batch = batch
        self.batch_schema = batch_schema
        self.columns_schema = columns_schema
        self._batch_marker = batch_schema.encode()
        self._columns_marker = columns_schema.encode() if columns_schema else None
        # ``model_validate_json`` with its defaults, without its Python wrapper (paid per single-event message)
        self._validate_event = event.__pydantic_validator__.validate_json
        self._validate_batch = batch.__pydantic_validator__.validate_json

    def decode(self, raw: bytes | None, rows_as_columns: bool = False) -> Decoded[E]:
        """The events (or columnar batches) of one message, and what of it was refused.

        With ``rows_as_columns`` (predictions), a batch envelope whose events are alike and all valid
        comes as one columnar batch in :attr:`Decoded.columns`, not as events
        (:func:`~driftwarden.core.columnar.decode_rows`): the monitor's fast path. Any other envelope
        is decoded event by event (as without it, from the same parsed document): the same rows and
        rejections either way.
        """
        if not raw:
            return Decoded(rejections=[Rejection("empty message", raw or b"")])
        if self._names_columns(raw):
            columnar = self._decode_columns(raw)
            if columnar is not None:
                return columnar
        if rows_as_columns and self._columns_marker is not None and self._batch_marker in raw:
            rows = self._decode_rows(raw)
            if rows is not None:
                return rows
        fast = self._decode_valid(raw)
        if fast is not None:
            return fast
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return Decoded(rejections=[Rejection(f"not valid JSON: {exc}", raw)])
        if isinstance(document, dict) and document.get("schema") == self.batch_schema:
            return self._decode_batch(document, raw)
        try:
            return Decoded(events=[self.event.model_validate(document)])
        except ValidationError as exc:
            return Decoded(rejections=[Rejection(describe(exc.errors()), raw)])

    def single(self, raw: bytes | None) -> bool:
        """Whether a message may be one event (neither a batch envelope nor a columnar batch), by its markers."""
        if not raw:
            return False
        return not self._names_columns(raw) and self._batch_marker not in raw

    def _names_columns(self, raw: bytes) -> bool:
        """Whether a message names the columnar schema near its start (it may be a columnar batch)."""
        return self._columns_marker is not None and raw.find(self._columns_marker, 0, 200) >= 0

    def singles_as_columns(self, raws: list[bytes]) -> PredictionColumns | None:
        """Single-event messages of one model, in order, as one columnar batch (one row per message) when each is
        a valid event and they are alike: :func:`~driftwarden.core.columnar.decode_rows` of them as an envelope's
        events. None otherwise: each is then decoded on its own (:meth:`decode`), giving the same rows.

        >>> event = {"event_id": "a", "model_id": "m", "model_version": "1", "ts": 1, "features": {"x": 2},
        ...          "prediction": "no"}
        >>> batch = PREDICTIONS.singles_as_columns([orjson.dumps(event), orjson.dumps(event | {"event_id": "b"})])
        >>> batch.event_ids, batch.features
        (['a', 'b'], {'x': array([2., 2.])})
        >>> PREDICTIONS.singles_as_columns([orjson.dumps(event), b"{oops"])  # (not valid JSON: one by one)
        """
        if self._columns_marker is None:  # (labels have no columnar batch)
            return None
        try:
            events = [orjson.loads(raw) for raw in raws]
        except orjson.JSONDecodeError:
            return None
        model_id = events[0].get("model_id") if events and type(events[0]) is dict else None
        return decode_rows({"schema": self.batch_schema, "model_id": model_id, "events": events})

    def _decode_columns(self, raw: bytes) -> Decoded[E] | None:
        """A columnar batch, or None when the message is not one (it may name the schema elsewhere)."""
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return Decoded(rejections=[Rejection(f"not valid JSON: {exc}", raw)])
        if not isinstance(document, dict) or document.get("schema") != self.columns_schema:
            return None
        decoded = decode_columns(document, raw)
        return Decoded(
            rejections=[Rejection(reason, payload, index) for index, reason, payload in decoded.rejections],
            columns=[] if decoded.batch is None else [decoded.batch],
        )

    def _decode_rows(self, raw: bytes) -> Decoded[E] | None:
        """A batch envelope: its valid, alike events as one columnar batch, else event by event from the
        same parsed document; None when the message is not a batch envelope (or not JSON to orjson)."""
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:  # (the usual path words the reason)
            return None
        if not isinstance(document, dict) or document.get("schema") != self.batch_schema:
            return None
        batch = decode_rows(document)
        return self._decode_batch(document, raw) if batch is None else Decoded(columns=[batch])

    def _decode_valid(self, raw: bytes) -> Decoded[E] | None:
        """The hot path: a valid message parsed and validated in one pass (pydantic-core, no dicts).

        None when anything is wrong; the slow path then finds out exactly what, event by event.
        """
        try:
            if self._batch_marker in raw:
                batch = cast(EventBatch, self._validate_batch(raw))
                events = cast(list[E], list(batch.events))
                if batch.schema_ == self.batch_schema and all(e.model_id == batch.model_id for e in events):
                    return Decoded(events=events)
                return None
            return Decoded(events=[cast(E, self._validate_event(raw))])
        except ValidationError:
            return None

    def _decode_batch(self, document: dict[str, Any], raw: bytes) -> Decoded[E]:
        try:
            events = cast(list[E], list(self.batch.model_validate(document).events))
            return self._check_model_ids(document["model_id"], events, list(range(len(events))), document)
        except ValidationError as exc:
            errors = exc.errors()
        per_event: dict[int, list[ErrorDetails]] = {}
        for error in errors:
            loc = error["loc"]
            if len(loc) < 2 or loc[0] != "events" or not isinstance(loc[1], int):
                return Decoded(rejections=[Rejection(f"invalid batch envelope: {describe(errors)}", raw)])
            per_event.setdefault(loc[1], []).append(error)
        items = document["events"]
        rejections = [
            Rejection(describe(errs, skip_loc=2), orjson.dumps(items[i]), batch_index=i)
            for i, errs in sorted(per_event.items())
        ]
        good = [i for i in range(len(items)) if i not in per_event]
        decoded = self._check_model_ids(
            document["model_id"], [self.event.model_validate(items[i]) for i in good], good, document
        )
        decoded.rejections = sorted(rejections + decoded.rejections, key=lambda r: r.batch_index or 0)
        return decoded

    def _check_model_ids(
        self, model_id: str, events: list[E], indexes: list[int], document: dict[str, Any]
    ) -> Decoded[E]:
        """Every event in an envelope must belong to the envelope's model (it is the Kafka key)."""
        decoded: Decoded[E] = Decoded()
        for event, index in zip(events, indexes, strict=True):
            if event.model_id == model_id:
                decoded.events.append(event)
            else:
                reason = f"model_id {event.model_id!r} differs from the envelope's {model_id!r}"
                decoded.rejections.append(Rejection(reason, orjson.dumps(document["events"][index]), index))
        return decoded


PREDICTIONS: Decoder[PredictionEvent] = Decoder(
    PredictionEvent, PredictionBatch, PREDICTION_BATCH_SCHEMA, PREDICTION_COLUMNS_SCHEMA
)
LABELS: Decoder[LabelEvent] = Decoder(LabelEvent, LabelBatch, LABEL_BATCH_SCHEMA)
