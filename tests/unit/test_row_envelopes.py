"""Row envelopes (``prediction-batch.v1``) decoded straight into columns (``rows_as_columns``, the monitor's
path) give exactly what decoding them event by event gives: the same rows, the same rejections (reasons,
bytes, indexes), the same columns as the same rows sent as a columnar batch, and through the monitor the
same alerts, dead letters, joins, counts and checkpoint state."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftwarden.core.columnar import PredictionColumns
from driftwarden.core.config import ModelMonitorConfig, MonitoringConfig
from driftwarden.core.decoding import LABELS, PREDICTIONS, Decoded
from driftwarden.core.events import LabelEvent
from driftwarden.core.monitor import Monitor
from driftwarden.core.profile import Columns, infer_schema, to_columns
from driftwarden_load.scenarios import Scenario, generate

FEATURES = ["x", "c", "b", "n", "v"]
OPTIONAL = ["scores", "segment", "latency_ms", "cost"]

any_json = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=4),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=6,
)  # fmt: skip
numbers = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**64 - 1)
non_negative = st.floats(min_value=0, allow_infinity=False) | st.integers(0, 2**64 - 1) | st.just(-0.0)
probabilities = st.floats(0, 1) | st.integers(0, 1)
texts = st.text(max_size=4)
#: Valid values of each field (in the order of a prediction event) and, for hostile envelopes, wrong ones too.
VALID = {
    "event_id": st.text(min_size=1, max_size=3) | st.just("e" * 128),
    "model_version": st.just("1"),
    "ts": non_negative,
    "prediction": numbers | texts,
    "scores": probabilities,
    "segment": texts,
    "latency_ms": st.none() | non_negative,
    "cost": st.none() | non_negative,
}
HOSTILE = {
    "event_id": st.sampled_from(["", "e" * 129, 7, None]),
    "model_version": st.sampled_from(["2", "bad version", 1]),
    "ts": st.sampled_from([-1, -1e-300, True, "1", None]),
    "prediction": st.sampled_from([True, None, [1]]),
    "scores": st.sampled_from([1.5, -0.1, 2, True, None, "0.5"]),
    "segment": st.sampled_from([None, 1, True]),
    "latency_ms": st.sampled_from([-1, -0.5, True, "1"]),
    "cost": st.sampled_from([-1, False, [1.0]]),
}
#: A feature column's kind (a vector is valid in an event, not in a columnar batch).
FEATURE_VALUES = {
    "number": numbers,
    "mixed": st.none() | numbers | texts | st.booleans(),
    "vector": st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=3) | st.none(),
}


@st.composite
def row_envelopes(draw: st.DrawFn, hostile: bool) -> bytes:
    """An envelope of 1-6 valid events of one shape (features, optional fields, score classes, segment
    keys), some made irregular (keys in another order, a feature dropped or added, a field null, another
    model version); a hostile envelope then gets one or two faults: a wrong value in a field (nested ones
    too), any JSON in a feature or any field, a field dropped, or a wrong envelope."""
    kinds = draw(st.dictionaries(st.sampled_from(FEATURES), st.sampled_from(list(FEATURE_VALUES)), max_size=4))
    optional = draw(st.lists(st.sampled_from(OPTIONAL), unique=True))
    nested = {"scores": draw(st.lists(st.sampled_from(["0", "1", "2"]), unique=True, max_size=3)),
              "segment": draw(st.lists(st.sampled_from(["region", "tier"]), unique=True, max_size=2))}  # fmt: skip
    events = []
    for _ in range(draw(st.integers(1, 6))):
        event: dict[str, Any] = {
            "event_id": draw(VALID["event_id"]), "model_id": "m", "model_version": "1", "ts": draw(VALID["ts"]),
            "features": {name: draw(FEATURE_VALUES[kind]) for name, kind in kinds.items()},
            "prediction": draw(VALID["prediction"]),
        }  # fmt: skip
        for field in optional:
            event[field] = {k: draw(VALID[field]) for k in nested[field]} if field in nested else draw(VALID[field])
        if draw(st.integers(0, 5)) == 0:  # irregular, still valid
            how = draw(st.sampled_from(["reorder", "drop", "add", "null", "version"]))
            if how == "reorder":
                event["features"] = dict(reversed(event["features"].items()))
            elif how == "drop" and event["features"]:
                del event["features"][next(iter(event["features"]))]
            elif how == "add":
                event["features"]["extra"] = 1.0
            elif how == "null" and optional:
                event[draw(st.sampled_from(optional))] = None
            elif how == "version":
                event["model_version"] = "2"
        events.append(event)
    envelope: dict[str, Any] = {"schema": "prediction-batch.v1", "model_id": "m", "events": events}
    for _ in range(draw(st.integers(1, 2)) if hostile else 0):
        event = draw(st.sampled_from(events))
        how = draw(st.sampled_from(["value", "value", "value", "feature", "any", "drop", "envelope"]))
        field = draw(st.sampled_from(list(HOSTILE)))
        if how == "value" and field in nested and isinstance(event.get(field), dict) and event[field]:
            event[field][draw(st.sampled_from(list(event[field])))] = draw(HOSTILE[field])
        elif how == "value":
            event[field] = draw(HOSTILE[field])
        elif how == "feature":
            event["features"][draw(st.sampled_from([*event["features"], "new"]))] = draw(any_json)
        elif how == "any":
            event[draw(st.sampled_from([*event, "unknown"]))] = draw(any_json)
        elif how == "drop":
            event.pop(draw(st.sampled_from(list(event))))
        else:
            envelope[draw(st.sampled_from(["schema", "model_id", "events", "extra"]))] = draw(any_json)
    return orjson.dumps(envelope)


def rows(decoded: Decoded[Any]) -> list[bytes]:
    """The accepted rows, as their events' bytes."""
    return [e.to_json() for e in decoded.events] + [e.to_json() for b in decoded.columns for e in b.events()]


def as_columns_message(raw: bytes) -> bytes:
    """The envelope's events as one ``prediction-columns.v1`` message (the envelope must be alike)."""
    events = orjson.loads(raw)["events"]
    first = events[0]
    document = {"schema": "prediction-columns.v1", "model_id": first["model_id"],
                "model_version": first["model_version"]}  # fmt: skip
    for field in first:
        if field in ("features", "scores", "segment"):
            document[field] = None if first[field] is None else {k: [e[field][k] for e in events] for k in first[field]}
        elif field not in ("model_id", "model_version"):
            document[field] = [e[field] for e in events]
    return orjson.dumps(document)


def same_values(x: Any, y: Any) -> bool:
    """Bit for bit (any NaN the same), a float array where the other has one."""
    if isinstance(x, list) and isinstance(y, list) and x and isinstance(x[0], np.ndarray):
        return len(x) == len(y) and all(map(same_values, x, y))
    if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
        if not (type(x) is type(y) and x.dtype == y.dtype and x.shape == y.shape):
            return False
        if x.dtype.kind != "f":
            return bool(x.tobytes() == y.tobytes())
        return bool(np.where(np.isnan(x), np.nan, x).tobytes() == np.where(np.isnan(y), np.nan, y).tobytes())
    return orjson.dumps(x) == orjson.dumps(y) and [type(v) for v in x or ()] == [type(v) for v in y or ()]


def same_batch(a: PredictionColumns, b: PredictionColumns) -> bool:
    """Field by field, a float array where the other has one, the same values bit for bit."""

    def same(x: Any, y: Any) -> bool:
        if isinstance(x, dict) or isinstance(y, dict):
            return isinstance(x, dict) and isinstance(y, dict) and list(x) == list(y) and all(
                same(x[k], y[k]) for k in x)  # fmt: skip
        return same_values(x, y)

    return all(same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)


def check(raw: bytes, seen: dict[str, int]) -> None:
    before, after = PREDICTIONS.decode(raw), PREDICTIONS.decode(raw, rows_as_columns=True)
    assert after.rejections == before.rejections  # reasons, bytes and indexes
    assert rows(after) == rows(before)
    assert [e for b in after.columns for e in b.events()] + after.events == before.events
    if after.columns:
        (batch,) = after.columns
        columnar = PREDICTIONS.decode(as_columns_message(raw))
        assert not columnar.rejections and same_batch(batch, columnar.columns[0])
        schema = infer_schema(before.events, {}, [])  # and the detectors' columns of the events
        assert batch.schema({}, []) == schema
        ours, theirs = batch.columns(schema), to_columns(before.events, schema)
        for name in (f.name for f in fields(Columns) if f.compare):
            assert same_values(getattr(ours, name), getattr(theirs, name)), name
    seen["columns" if after.columns else "events"] += 1
    seen["rejections"] += bool(after.rejections)


def checked(hostile: bool) -> dict[str, int]:
    """How many generated envelopes went each way, every one checked."""
    seen = {"columns": 0, "events": 0, "rejections": 0}

    @settings(max_examples=400, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(row_envelopes(hostile))
    def holds(raw: bytes) -> None:
        check(raw, seen)

    holds()
    return seen


def test_valid_envelopes_decode_to_the_same_rows_as_columns_as_event_by_event() -> None:
    seen = checked(hostile=False)
    assert seen["columns"] >= 150 and seen["events"] >= 100 and seen["rejections"] == 0, seen


@pytest.mark.slow
def test_hostile_envelopes_are_refused_alike_and_their_good_rows_kept_alike() -> None:
    seen = checked(hostile=True)
    assert seen["rejections"] >= 250, seen


def checked_singles(hostile: bool) -> dict[str, int]:
    """The events of generated envelopes sent as single-event messages: decoded together
    (``singles_as_columns``, the worker's path for a batch of them) they are the rows each gives decoded alone,
    bit for bit; together they are refused (None: the worker decodes them one by one) whenever one is."""
    seen = {"columns": 0, "one by one": 0, "rejections": 0}

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(row_envelopes(hostile))
    def holds(raw: bytes) -> None:
        events = orjson.loads(raw).get("events")
        if not isinstance(events, list) or not events:
            return
        singles = [orjson.dumps(event) for event in events]
        alone = [PREDICTIONS.decode(single) for single in singles]
        together = PREDICTIONS.singles_as_columns(singles)
        if together is None:
            seen["one by one"] += 1
            seen["rejections"] += any(d.rejections for d in alone)
            return
        assert not any(d.rejections for d in alone)
        assert together.events() == [event for d in alone for event in d.events]
        assert [e.to_json() for e in together.events()] == [row for d in alone for row in rows(d)]
        seen["columns"] += 1

    holds()
    return seen


def test_single_event_messages_decoded_together_give_the_rows_each_gives_alone() -> None:
    seen = checked_singles(hostile=False)
    assert seen["columns"] >= 100 and seen["one by one"] >= 50 and seen["rejections"] == 0, seen
    hostile = checked_singles(hostile=True)
    assert hostile["rejections"] >= 100, hostile
    assert PREDICTIONS.singles_as_columns([]) is None and LABELS.singles_as_columns([b"{}"]) is None


def test_the_monitor_gives_the_same_results_from_row_envelopes_as_columns_as_from_their_events() -> None:
    """Row envelopes with duplicate ids, bad event times and a drift, through the whole monitor (time screen,
    dedupe, detectors, label joiner): the same dead letters, alerts, joins, counts and checkpoint state."""
    scenario = Scenario(name="abrupt-shift", n_events=6_000, onset=4_000, drift_features=("num_03", "num_07"))
    config = MonitoringConfig(defaults=ModelMonitorConfig(reference_size=1_000, window_size=700, label_ttl_s=600.0))
    monitors = {way: Monitor(config) for way in (False, True)}
    seen_by: dict[bool, list[Any]] = {False: [], True: []}
    for k, chunk in enumerate(generate(scenario, chunk_size=500)):
        events = chunk.prediction_events()
        events[10]["event_id"] = events[3]["event_id"]  # a duplicate id
        events[30]["ts"] *= 1_000  # milliseconds: refused by the time screen
        events[40]["ts"] += 3_600 * (k % 2)  # an hour ahead (every other chunk)
        for i, event in enumerate(events):
            event["segment"] = {"region": ("eu", "us")[i % 2]}
        raw = orjson.dumps({"schema": "prediction-batch.v1", "model_id": scenario.model_id, "events": events})
        labels = [LabelEvent.model_validate(e) for e in chunk.label_events()]
        now = float(chunk.ts[-1]) + 60
        for way, monitor in monitors.items():
            decoded = PREDICTIONS.decode(raw, rows_as_columns=way)
            assert bool(decoded.columns) == way and not decoded.rejections
            accepted, rejected = monitor.screen([*decoded.events, *decoded.columns], now)
            outputs = monitor.observe(accepted, now)
            outputs += monitor.observe_labels(labels, now)
            seen_by[way].append(([(r.reason, r.event.to_json()) for r in rejected], outputs))
    assert seen_by[True] == seen_by[False]
    alerts = [a for _, outputs in seen_by[True] for a in outputs.alerts]
    assert {("data_drift", "num_03"), ("data_drift", "num_07")} <= {(a.kind, a.subject) for a in alerts}
    assert sum(len(r) for r, _ in seen_by[True]) == 12 + 6
    status = {way: monitor.status(scenario.model_id, 0) for way, monitor in monitors.items()}
    assert status[True] == status[False] and status[True].label_joins["joined"] > 5_000
    assert monitors[True].export([scenario.model_id]) == monitors[False].export([scenario.model_id])


def test_a_kafka_batch_of_many_models_envelopes_and_labels_makes_one_detector_update_per_model(monkeypatch) -> None:
    """The worker feeds a batch's predictions, then its labels (monitor/service.py). Row envelopes of three
    models interleaved message by message, each model's labels between them, one model drifting: fed 60
    messages at a time, the same alerts, joins, counts and checkpoint state as message by message in
    stream order (the state: as message by message in the interleaving the batches stand for), and each
    model's detectors updated once a batch, not once a message."""
    from driftwarden.core.monitor import ModelMonitor

    config = MonitoringConfig(defaults=ModelMonitorConfig(reference_size=1_000, window_size=500, label_ttl_s=600.0))
    streams = {
        f"model-{k}": [e for c in generate(Scenario(name=name, n_events=4_000, onset=2_500, seed=k,
                                                    model_id=f"model-{k}", drift_features=("num_02",)))
                       for e in c.prediction_events()]
        for k, name in enumerate(("abrupt-shift", "stable", "stable"))
    }  # fmt: skip
    messages: list[tuple[str, bytes]] = []  # (topic, value) in stream order
    for start in range(0, 4_000, 10):
        for model_id, events in streams.items():
            envelope = {"schema": "prediction-batch.v1", "model_id": model_id, "events": events[start : start + 10]}
            messages.append(("predictions", orjson.dumps(envelope)))
            if start >= 300:  # each prediction's label 30 messages of its model later
                labelled = events[start - 300 : start - 290]
                labels = [
                    {"event_id": e["event_id"], "model_id": model_id, "ts": e["ts"] + 1, "label": e["prediction"]}
                    for e in labelled
                ]
                messages.append(("labels", orjson.dumps({"schema": "label-batch.v1", "model_id": model_id,
                                                         "events": labels})))  # fmt: skip
    updates: list[str] = []
    original = ModelMonitor.observe
    monkeypatch.setattr(ModelMonitor, "observe", lambda self, *a: updates.append(self.model_id) or original(self, *a))

    def run(stream: list[tuple[str, bytes]], batch: int) -> tuple[list[str], list[Any], bytes, int]:
        monitor, alerts = Monitor(config), []
        updates.clear()
        for start in range(0, len(stream), batch):
            chunk = stream[start : start + batch]
            predictions = [c for topic, raw in chunk if topic == "predictions"
                           for c in PREDICTIONS.decode(raw, rows_as_columns=True).columns]  # fmt: skip
            labels = [e for topic, raw in chunk if topic == "labels" for e in LABELS.decode(raw).events]
            alerts += monitor.observe(predictions, now=2e9).alerts
            alerts += monitor.observe_labels(labels, now=2e9).alerts
        statuses = [monitor.status(m, 0) for m in streams]
        return sorted(a.to_json().decode() for a in alerts), statuses, monitor.export(streams), len(updates)

    alerts, statuses, state, one_by_one_updates = run(messages, 1)
    assert ("data_drift", "num_02") in {(a["kind"], a["subject"]) for a in map(orjson.loads, alerts)}
    assert all(s.label_joins["joined"] == 3_700 and s.events_processed == 4_000 for s in statuses)
    batched = run(messages, 60)
    assert batched[:2] == (alerts, statuses)
    # The state is that of the interleaving the batches stand for, message by message: each batch's
    # predictions, then its labels (here the reference completes before the labels of its batch, and
    # the performance monitor, made with the reference, sees 40 more of them than in stream order).
    interleaving = [m for i in range(0, len(messages), 60) for t in ("predictions", "labels")
                    for m in messages[i : i + 60] if m[0] == t]  # fmt: skip
    assert batched[2] == run(interleaving, 1)[2] != state
    assert one_by_one_updates == 3 * 400  # one update a message ...
    assert batched[3] <= 3 * -(-len(messages) // 60)  # ... and at most one per model a batch
