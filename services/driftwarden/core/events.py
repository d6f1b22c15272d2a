"""Event contracts: pydantic mirrors of the JSON Schemas in ``schemas/``.

The JSON Schemas are the source of truth; ``tests/unit/test_schemas.py`` feeds one corpus of valid and
invalid documents to both and asserts identical verdicts. Models are strict (no coercion of ``"1"`` to
``1``) and forbid unknown fields, exactly like the schemas' ``additionalProperties: false``.

>>> event = PredictionEvent.model_validate_json(
...     b'{"event_id": "6f1c2a7e-0d9b-4a57-9a43-5f0f3c1d2b11", "model_id": "fraud", '
...     b'"model_version": "1", "ts": 1700000000.5, "features": {"amount": 12.5}, "prediction": 1}'
... )
>>> event.features["amount"]
12.5
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
ModelId = Annotated[str, Field(pattern=MODEL_ID_PATTERN)]
# The producer's own id of a prediction: any non-empty string up to EVENT_ID_MAX_LENGTH characters
# (UUIDs, ULIDs, request ids, numbers as strings). Ids driftwarden mints itself are UUIDs.
EVENT_ID_MAX_LENGTH = 128
EventId = Annotated[str, Field(min_length=1, max_length=EVENT_ID_MAX_LENGTH)]
Uuid = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
Timestamp = Annotated[float, Field(ge=0)]
NonNegative = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
# Strict types: each JSON value can match one member only, so trying them in order (commonest
# first) gives the same result as pydantic's "smart" union at a fraction of the cost.
#: The longest array a feature may hold (an embedding of up to this many numbers).
VECTOR_MAX_LENGTH = 4096
Vector = Annotated[list[float], Field(min_length=1, max_length=VECTOR_MAX_LENGTH)]
FeatureValue = Annotated[float | str | bool | Vector | None, Field(union_mode="left_to_right")]
#: A feature value that is not an array: of a columnar batch's feature column (which refuses arrays;
#: send events) and of an inference request (the served models take no arrays).
ScalarFeatureValue = Annotated[float | str | bool | None, Field(union_mode="left_to_right")]
Scalar = bool | int | float | str | None
T = TypeVar("T")

PREDICTION_BATCH_SCHEMA = "prediction-batch.v1"
PREDICTION_COLUMNS_SCHEMA = "prediction-columns.v1"
LABEL_BATCH_SCHEMA = "label-batch.v1"
MONITOR_STATUS_SCHEMA = "monitor-status.v2"


class Event(BaseModel):
    """Base of every contract: strict types, no unknown fields, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    def to_json(self) -> bytes:
        """Serialize without ``None`` fields (optional fields are absent, never ``null``), under the
        contract's names (``schema``, not ``schema_``)."""
        return self.__pydantic_serializer__.to_json(self, exclude_none=True, by_alias=True)


class KeyedEvent(Event):
    """An event about one model; ``model_id`` is its Kafka key."""

    event_id: EventId
    model_id: ModelId


class PredictionEvent(KeyedEvent):
    """One model prediction (``schemas/prediction.v1.json``)."""

    model_version: ModelId
    ts: Timestamp
    features: dict[str, FeatureValue]
    prediction: float | str
    scores: dict[str, Probability] | None = None
    segment: dict[str, str] | None = None
    latency_ms: NonNegative | None = None
    cost: NonNegative | None = None


class LabelEvent(KeyedEvent):
    """Ground truth for a prediction (``schemas/label.v1.json``)."""

    ts: Timestamp
    label: float | str


class EventBatch(Event):
    """A batch envelope: many events of one model in one Kafka message."""

    schema_: str = Field(alias="schema")
    model_id: ModelId
    events: Sequence[KeyedEvent]


class PredictionBatch(EventBatch):
    """Many predictions of one model in one Kafka message (``schemas/prediction-batch.v1.json``)."""

    schema_: Literal["prediction-batch.v1"] = Field(alias="schema")
    model_id: ModelId
    events: Annotated[list[PredictionEvent], Field(min_length=1, max_length=100_000)]


Column = Annotated[list[T], Field(min_length=1, max_length=100_000)]


class PredictionColumnBatch(Event):
    """Many predictions of one model version as columns (``schemas/prediction-columns.v1.json``).

    Every column holds one value per ``event_id``; the decoder (:mod:`driftwarden.core.columnar`)
    checks the lengths and validates column by column.
    """

    schema_: Literal["prediction-columns.v1"] = Field(alias="schema")
    model_id: ModelId
    model_version: ModelId
    event_id: Column[EventId]
    ts: Column[Timestamp]
    features: dict[str, Column[ScalarFeatureValue]]
    prediction: Column[float | str]
    scores: dict[str, Column[Probability]] | None = None
    segment: dict[str, Column[str | None]] | None = None
    latency_ms: Column[NonNegative | None] | None = None
    cost: Column[NonNegative | None] | None = None


class LabelBatch(EventBatch):
    """Many labels of one model in one Kafka message (``schemas/label-batch.v1.json``)."""

    schema_: Literal["label-batch.v1"] = Field(alias="schema")
    model_id: ModelId
    events: Annotated[list[LabelEvent], Field(min_length=1, max_length=100_000)]


AlertKind = Literal[
    "data_drift",
    "prediction_drift",
    "multivariate_drift",
    "performance_drift",
    "estimated_performance",
    "segment_performance",
    "data_quality",
    "latency",
    "cost",
]


def is_model_id(text: str) -> bool:
    """Whether ``text`` is a valid model id (safe as a Kafka key, metric label and directory name).

    >>> is_model_id("fraud-v2"), is_model_id("../etc")
    (True, False)
    """
    return re.fullmatch(MODEL_ID_PATTERN, text) is not None


def alert_fingerprint(model_id: str, model_version: str, kind: str, subject: str, detector: str) -> str:
    """Stable 16-hex-digit identity of "the same problem", used to dedupe alerts.

    >>> alert_fingerprint("fraud", "1", "data_drift", "amount", "adwin")
    '3290ba51e8a1b8a5'
    """
    text = "\x1f".join((model_id, model_version, kind, subject, detector))
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class Alert(Event):
    """A monitoring finding (``schemas/alert.v1.json``)."""

    alert_id: Uuid
    fingerprint: Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
    state: Literal["firing", "resolved"]
    severity: Literal["info", "warning", "critical"]
    kind: AlertKind
    model_id: ModelId
    model_version: ModelId
    subject: Annotated[str, Field(min_length=1)]
    detector: Annotated[str, Field(min_length=1)]
    ts: Timestamp
    summary: str
    trigger_event_id: EventId | None = None
    evidence: dict[str, Scalar]


def format_alert(alert: Alert) -> str:
    """One readable line per alert, for terminals and chat.

    >>> print(format_alert(Alert(alert_id="6f1c2a7e-0d9b-4a57-9a43-5f0f3c1d2b11",
    ...     fingerprint="0123456789abcdef", state="firing", severity="warning", kind="data_drift",
    ...     model_id="fraud", model_version="3", subject="amount", detector="adwin", ts=1767225600.0,
    ...     summary="amount mean moved from 1 to 2", evidence={})))
    2026-01-01T00:00:00Z FIRING  warning  data_drift [adwin] amount mean moved from 1 to 2
    """
    when = datetime.fromtimestamp(alert.ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{when} {alert.state.upper():<7} {alert.severity:<8} {alert.kind} [{alert.detector}] {alert.summary}"


class TrainingWindow(Event):
    """The span of labelled data a retrain should use."""

    start_ts: Timestamp
    end_ts: Timestamp


class RetrainCommand(Event):
    """Asks the trainer for a challenger (``schemas/retrain-command.v1.json``)."""

    command_id: Uuid
    idempotency_key: Annotated[str, Field(min_length=1, max_length=200)]
    model_id: ModelId
    model_version: ModelId
    ts: Timestamp
    reasons: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    window: TrainingWindow


class ModelPublished(Event):
    """The trainer's verdict on a challenger (``schemas/model-published.v1.json``)."""

    model_id: ModelId
    model_version: ModelId
    status: Literal["promoted", "canary", "shadow", "rejected"]
    ts: Timestamp
    command_id: Uuid
    reason: str | None = None
    artifact_uri: str | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    parent_version: ModelId | None = None
    traffic_fraction: Probability | None = None
    metrics: dict[str, float]


class DeadLetter(Event):
    """An input that could not be processed, kept whole (``schemas/dead-letter.v1.json``)."""

    ts: Timestamp
    source_topic: Annotated[str, Field(min_length=1)]
    source_partition: Annotated[int, Field(ge=0)]
    source_offset: Annotated[int, Field(ge=0)]
    batch_index: Annotated[int, Field(ge=0)] | None = None
    key: str | None = None
    reason: Annotated[str, Field(min_length=1)]
    payload_b64: str


class MonitorStatusV1(Event):
    """Cumulative per-model counters (``schemas/monitor-status.v1.json``): what the monitor core counts,
    and what a monitor published before ``monitor-status.v2`` (keyed by the model id, naming no group)."""

    model_id: ModelId
    ts: Timestamp
    model_version: ModelId | None = None
    events_processed: Annotated[int, Field(ge=0)]
    events_dead_lettered: Annotated[int, Field(ge=0)]
    alerts_fired: Annotated[int, Field(ge=0)]
    labels_received: Annotated[int, Field(ge=0)] | None = None
    retrain_commands: Annotated[int, Field(ge=0)] | None = None
    performance: dict[str, float | None] | None = None
    label_joins: dict[str, Annotated[int, Field(ge=0)]] | None = None
    alerts_suppressed: Annotated[int, Field(ge=0)] | None = None
    window_statistics: list[tuple[str, str, str, float]] | None = None

    @property
    def published_by(self) -> str | None:
        """The monitor group that published the status (``None``: a v1 status, which does not say)."""
        return None

    def published(self, group: str, worker: str) -> MonitorStatus:
        """These counters as worker ``worker`` of monitor group ``group`` publishes them."""
        return MonitorStatus.model_validate({**dict(self), "schema": MONITOR_STATUS_SCHEMA, "group": group,
                                             "worker": worker})  # fmt: skip


class MonitorStatus(MonitorStatusV1):
    """A model's counters as one monitor group publishes them (``schemas/monitor-status.v2.json``): v1's
    fields and the consumer group (``DRIFTWARDEN_MONITOR_GROUP``) and worker that published them, keyed
    :func:`status_key`, so every group reading the same predictions keeps a status of its own."""

    schema_: Literal["monitor-status.v2"] = Field(alias="schema")
    group: Annotated[str, Field(min_length=1, max_length=255)]
    worker: Annotated[str, Field(min_length=1, max_length=255)]

    @property
    def published_by(self) -> str | None:
        return self.group


def status_key(model_id: str, group: str) -> str:
    """The key of ``group``'s status of ``model_id`` on the compacted status topic (as the checkpoints'
    ``group/partition``; a model id has no ``/``).

    >>> status_key("fraud", "driftwarden-monitor")
    'driftwarden-monitor/fraud'
    """
    return f"{group}/{model_id}"


#: Either version of a status, as read from the status topic (v2 first: what monitors publish now).
ANY_STATUS: TypeAdapter[MonitorStatus | MonitorStatusV1] = TypeAdapter(
    Annotated[MonitorStatus | MonitorStatusV1, Field(union_mode="left_to_right")]
)


def read_status(raw: bytes) -> MonitorStatusV1:
    """A status of either version from its JSON; :class:`pydantic.ValidationError` if it is neither.

    >>> read_status(b'{"model_id": "fraud", "ts": 1, "events_processed": 5, "events_dead_lettered": 0, '
    ...             b'"alerts_fired": 0}').published_by is None
    True
    """
    return ANY_STATUS.validate_json(raw)


NonNegativeInt = Annotated[int, Field(ge=0)]


class NumericSummary(Event):
    """A numeric feature in one bucket of one shard: counts of its ranks per equal-probability bin of the
    reference, missing values, and the sum and sum of squares of the values present."""

    bins: Annotated[list[NonNegativeInt], Field(min_length=2, max_length=1000)]
    missing: NonNegativeInt
    sum: float
    sum_squares: NonNegative


class CategoricalSummary(Event):
    """A categorical feature in one bucket of one shard: counts per category, and missing values."""

    counts: dict[str, NonNegativeInt]
    missing: NonNegativeInt


class WindowSummary(Event):
    """One shard's mergeable summary of one event-time bucket of a sharded model
    (``schemas/window-summary.v1.json``; :mod:`driftwarden.core.shards`)."""

    schema_: Literal["window-summary.v1"] = Field(alias="schema")
    model_id: ModelId
    model_version: ModelId
    shard: NonNegativeInt
    shards: Annotated[int, Field(ge=1)]
    bucket: NonNegativeInt
    bucket_seconds: Annotated[float, Field(gt=0)]
    events: NonNegativeInt
    late_events: NonNegativeInt
    group: str
    input_topic: str
    input_partition: NonNegativeInt
    input_origin: NonNegativeInt
    seq: NonNegativeInt
    numeric: dict[str, NumericSummary]
    categorical: dict[str, CategoricalSummary]


class InferenceInstance(Event):
    features: dict[str, ScalarFeatureValue]
    event_id: EventId | None = None


class InferenceRequest(Event):
    """A stream-mode scoring request (``schemas/inference-request.v1.json``)."""

    request_id: Annotated[str, Field(min_length=1, max_length=200)]
    model_id: ModelId
    instances: Annotated[list[InferenceInstance], Field(min_length=1, max_length=10_000)]


class ServedPrediction(Event):
    event_id: EventId
    label: str
    scores: dict[str, Probability]


class InferenceResponse(Event):
    """The answer to an inference request (``schemas/inference-response.v1.json``)."""

    request_id: Annotated[str, Field(min_length=1, max_length=200)]
    model_id: ModelId
    ts: Timestamp
    model_version: ModelId | None = None
    error: str | None = None
    predictions: list[ServedPrediction] | None = None


#: Schema file name -> the model that mirrors it.
CONTRACTS: dict[str, type[Event]] = {
    "prediction.v1.json": PredictionEvent,
    "label.v1.json": LabelEvent,
    "prediction-batch.v1.json": PredictionBatch,
    "prediction-columns.v1.json": PredictionColumnBatch,
    "label-batch.v1.json": LabelBatch,
    "alert.v1.json": Alert,
    "retrain-command.v1.json": RetrainCommand,
    "model-published.v1.json": ModelPublished,
    "dead-letter.v1.json": DeadLetter,
    "monitor-status.v1.json": MonitorStatusV1,
    "monitor-status.v2.json": MonitorStatus,
    "inference-request.v1.json": InferenceRequest,
    "inference-response.v1.json": InferenceResponse,
    "window-summary.v1.json": WindowSummary,
}
