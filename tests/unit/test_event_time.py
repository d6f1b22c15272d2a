"""Event time and identity in the monitor core: a robust clock, implausible timestamps, duplicate event ids."""

from __future__ import annotations

import uuid

import numpy as np
import orjson
import pytest

from driftwarden.core.config import ModelMonitorConfig, MonitoringConfig
from driftwarden.core.event_time import RecentIds, Watermark
from driftwarden.core.events import LabelEvent, PredictionEvent
from driftwarden.core.monitor import STATE_FORMAT, STATE_VERSION, Monitor
from driftwarden.core.state import StateError, StateReader, decode

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
    assert with_copies.models["m"].versions["1"].state() == without.models["m"].versions["1"].state()


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
    assert (document["format"], document["version"]) == (STATE_FORMAT, STATE_VERSION) == (STATE_FORMAT, 3)
    document["version"] = 2
    with pytest.raises(StateError, match="version 2 is not supported"):
        Monitor(config()).restore(orjson.dumps(document))
    decode(monitor.export(["m"]), STATE_FORMAT, 3)  # the current version reads
