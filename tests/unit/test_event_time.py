"""Event time and identity in the monitor core: a robust clock, implausible timestamps, duplicate event ids."""

from __future__ import annotations

import uuid

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftwarden.core.config import ModelMonitorConfig, MonitoringConfig
from driftwarden.core.decoding import PREDICTIONS
from driftwarden.core.event_time import RecentIds, Watermark
from driftwarden.core.events import LabelEvent, PredictionEvent
from driftwarden.core.monitor import STATE_FORMAT, STATE_VERSION, Monitor
from driftwarden.core.state import StateError, StateReader, decode
from driftwarden_load.scenarios import Scenario, generate

START = 1_764_000_000.0  # seconds since the epoch (2025-11-24)


def events(n: int, seed: int = 0, start: float = START) -> list[PredictionEvent]:
    rng = np.random.default_rng(seed)
    return [
        PredictionEvent(
            event_id=str(uuid.UUID(int=seed * 2**64 + i, version=4)), model_id="m", model_version="1",
            ts=start + i, features={"x": float(rng.normal()), "c": str(rng.choice(["a", "b"]))},
            prediction=float(rng.integers(0, 2)),
        )
        for i in range(n)
    ]  # fmt: skip


def label(event: PredictionEvent) -> LabelEvent:
    return LabelEvent(event_id=event.event_id, model_id="m", ts=event.ts, label=event.prediction)


def batch_envelope(events: list[dict]) -> bytes:
    return orjson.dumps({"schema": "prediction-batch.v1", "model_id": events[0]["model_id"], "events": events})


def config(**overrides: object) -> MonitoringConfig:
    base = {"reference_size": 1_000, "window_size": 1_000, "label_ttl_s": 600.0}
    return MonitoringConfig(defaults=ModelMonitorConfig(**(base | overrides)))


def test_one_timestamp_in_milliseconds_among_10000_events_keeps_every_label_joined():
    """Fed straight to the core (no screen): the clock ignores the outlier, so nothing expires early."""
    stream = events(10_000)
    stream[3_000] = stream[3_000].model_copy(update={"ts": stream[3_000].ts * 1000})  # milliseconds
    monitor = Monitor(config())
    for i in range(0, 10_000, 100):  # labels come 200 events (200 s) after their predictions, TTL 600 s
        monitor.observe(stream[i : i + 100], now=START + i)
        monitor.observe_labels([label(e) for e in stream[max(0, i - 200) : max(0, i - 100)]], now=START + i)
    monitor.observe_labels([label(e) for e in stream[9_800:]], now=START + 10_000)
    joins = monitor.status("m", 0).label_joins
    assert joins["joined"] == 10_000  # 100 %
    assert joins["expired_predictions"] == joins["pending_labels"] == 0
    assert monitor.models["m"].clock.value == START + 9_993  # 8th largest: the outlier holds one place


def test_the_screen_refuses_milliseconds_the_far_future_and_times_older_than_the_label_ttl():
    monitor = Monitor(config(future_tolerance_s=60.0))
    monitor.observe(events(20), now=START + 20)  # the model's clock is now near START + 19
    good, *bad = events(5, seed=1, start=START + 20)
    bad = [
        bad[0].model_copy(update={"ts": (START + 21) * 1000}),
        bad[1].model_copy(update={"ts": (START + 21) * 1e6}),
        bad[2].model_copy(update={"ts": START + 20 + 3600}),  # an hour ahead of the monitor's clock
        bad[3].model_copy(update={"ts": START - 3600}),  # an hour behind the model, TTL is 10 minutes
    ]
    accepted, rejected = monitor.screen([good, *bad], now=START + 20)
    assert accepted == [good]
    assert [r.event for r in rejected] == bad
    reasons = [r.reason for r in rejected]
    assert "looks like milliseconds" in reasons[0] and "looks like microseconds" in reasons[1]
    assert reasons[2] == "ts 1.764e+09 is 3600 s ahead of the monitor clock (tolerance 60 s)"
    assert "behind the model's event time, older than label_ttl_s=600" in reasons[3]
    # A model never seen has no event time yet: only the unit and the future are judged.
    fresh = bad[3].model_copy(update={"model_id": "other"})
    assert monitor.screen([fresh], now=START + 20)[0] == [fresh]


def test_duplicate_event_ids_are_counted_once_and_detectors_and_joins_see_one():
    unique = events(3_000, seed=2)
    tripled = [copy for e in unique for copy in (e, e, e.model_copy(update={"ts": e.ts + 0.5}))]
    with_copies, without = Monitor(config(label_ttl_s=86_400.0)), Monitor(config(label_ttl_s=86_400.0))
    for monitor, stream, batch in ((with_copies, tripled, 750), (without, unique, 250)):  # the same 250 unique
        for i in range(0, len(stream), batch):
            monitor.observe(stream[i : i + batch], now=START)
        monitor.observe_labels([label(e) for e in unique] + [label(e) for e in unique[:10]], now=START)
    status = with_copies.status("m", 0)
    assert status.events_processed == 3_000
    assert status.label_joins["duplicate_predictions"] == 6_000
    assert status.label_joins["joined"] == 3_000 and status.label_joins["duplicate_labels"] == 10
    # Every detector saw exactly what it sees without the copies.
    assert orjson.dumps(with_copies.models["m"].versions["1"].state()) == orjson.dumps(
        without.models["m"].versions["1"].state()
    )


def test_the_dedupe_horizon_is_bounded_and_survives_a_checkpoint():
    monitor = Monitor(config(dedupe_horizon=500))
    stream = events(2_000, seed=3)
    monitor.observe(stream, now=START)
    assert len(monitor.models["m"].ids) == 500  # memory bounded: only the last 500 ids are kept
    restored = Monitor(config(dedupe_horizon=500))
    restored.restore(monitor.export(["m"]))
    restored.observe(stream[-500:] + stream[:10], now=START)  # the last 500 are repeats; the first 10 left the horizon
    counters = restored.models["m"].counters
    assert (counters.duplicates, counters.processed) == (500, 2_010)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12), st.lists(st.lists(st.integers(0, 40), max_size=30), max_size=8))
def test_ids_added_as_a_batch_are_those_added_one_at_a_time(horizon, batches):
    """``add_many`` (a columnar batch) against ``add`` per id: the same answers, ring and state, batches all new
    (taken at once, wrapping round the ring) or not."""
    batch_ids, single_ids = RecentIds(horizon), RecentIds(horizon)
    for batch in batches:
        ids = [str(i) for i in batch]
        assert batch_ids.add_many(ids).tolist() == [single_ids.add(i) for i in ids]
        assert (batch_ids._ring, batch_ids._next, batch_ids._seen) == (single_ids._ring, single_ids._next,
                                                                        single_ids._seen)  # fmt: skip
        assert batch_ids.state() == single_ids.state()


def test_recent_ids_and_watermark_round_trip_in_order():
    ids = RecentIds(horizon=3)
    for event_id in "abcde":
        ids.add(event_id)
    copy = RecentIds.from_state(StateReader(orjson.loads(orjson.dumps(ids.state())), "ids"))
    assert [copy.add(x) for x in "cdeb"] == [False, False, False, True]  # b was the oldest: forgotten
    assert [ids.add(x) for x in "cdeb"] == [False, False, False, True]
    clock = Watermark(quorum=2)
    for ts in (5.0, 1e12, 6.0):
        clock.observe(ts)
    again = Watermark.from_state(StateReader(orjson.loads(orjson.dumps(clock.state())), "clock"))
    again.observe(7.0)
    assert (clock.value, again.value) == (6.0, 7.0)


def test_a_checkpoint_of_the_previous_state_version_is_refused_not_misread():
    monitor = Monitor(config())
    monitor.observe(events(10), now=START)
    document = orjson.loads(monitor.export(["m"]))
    assert (document["format"], document["version"]) == (STATE_FORMAT, STATE_VERSION) == (STATE_FORMAT, 13)
    document["version"] = 12  # streams beside an end atom had fewer CUSUMs
    with pytest.raises(StateError, match=r"version 12 is not supported \(this build reads version 13\)"):
        Monitor(config()).restore(orjson.dumps(document))
    decode(monitor.export(["m"]), STATE_FORMAT, 13)  # the current version reads


def test_a_columnar_batch_is_screened_and_deduplicated_row_by_row_exactly_as_its_rows_as_events():
    """The same predictions as columnar batches and as row envelopes, with duplicate ids (within a
    batch, across batches, in the reference phase) and bad event times (milliseconds, the future,
    older than the label TTL): the same dead letters, alerts, joins, counts and state."""
    scenario = Scenario(name="abrupt-shift", n_events=6_000, onset=4_000, drift_features=("num_03",))
    chunks = list(generate(scenario, chunk_size=1_000))
    documents = []
    for k, chunk in enumerate(chunks):
        document = chunk.prediction_columns()
        document["segment"] = {"region": [("eu", "us")[i % 2] for i in range(len(chunk))]}
        ids, ts = document["event_id"], document["ts"]
        ids[10] = ids[3]  # a duplicate within the batch
        if k > 0:
            ids[20] = documents[-1]["event_id"][500]  # a duplicate of the previous batch's row
        ts[30] *= 1_000  # milliseconds
        ts[40] += 3_600  # an hour ahead of the monitor's clock
        if k > 0:
            ts[50] -= 7_200  # older than the model's event time minus the label TTL
        documents.append(document)
    monitors = {"columns": Monitor(config(label_ttl_s=600.0)), "rows": Monitor(config(label_ttl_s=600.0))}
    seen: dict[str, list] = {"columns": [], "rows": []}
    for document, chunk in zip(documents, chunks, strict=True):
        now = float(chunk.ts[-1]) + 60  # a minute after the chunk's last event
        rows = [
            {"event_id": event_id, "model_id": document["model_id"], "model_version": document["model_version"],
             "ts": document["ts"][i], "features": {n: v[i] for n, v in document["features"].items()},
             "prediction": document["prediction"][i], "scores": {c: v[i] for c, v in document["scores"].items()},
             "segment": {"region": document["segment"]["region"][i]}}
            for i, event_id in enumerate(document["event_id"])
        ]  # fmt: skip
        labels = [LabelEvent.model_validate(e) for e in chunk.label_events()]
        for way, raw in (("columns", orjson.dumps(document)), ("rows", batch_envelope(rows))):
            decoded = PREDICTIONS.decode(raw)
            assert not decoded.rejections and len(decoded) == len(rows)
            assert (decoded.columns != []) == (way == "columns")
            accepted, rejected = monitors[way].screen([*decoded.events, *decoded.columns], now)
            outputs = monitors[way].observe(accepted, now)
            outputs += monitors[way].observe_labels(labels, now)
            seen[way].append((rejected, outputs))
    assert seen["columns"] == seen["rows"]
    rejected = [r for chunk_seen, _ in seen["rows"] for r in chunk_seen]
    assert "like milliseconds" in rejected[0].reason and "ahead of the monitor clock" in rejected[1].reason
    assert len(rejected) == 2 + 5 * 3 and "older than label_ttl_s" in rejected[-1].reason
    alerts = [a for _, outputs in seen["rows"] for a in outputs.alerts]
    assert ("data_drift", "num_03") in {(a.kind, a.subject) for a in alerts}
    status = {way: monitor.status(scenario.model_id, 0) for way, monitor in monitors.items()}
    assert status["columns"] == status["rows"] and status["rows"].label_joins["joined"] > 5_000
    assert status["rows"].events_processed == 6_000 - 11 - 17  # 1 + 5 x 2 duplicates, 2 + 5 x 3 bad times
    assert status["rows"].label_joins["duplicate_predictions"] == 11
    assert monitors["columns"].export([scenario.model_id]) == monitors["rows"].export([scenario.model_id])
