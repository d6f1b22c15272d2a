"""The alert lifecycle on real streams through the monitor core: no drift hidden by a cooldown or an early resolve."""

from __future__ import annotations

import re
import uuid

import numpy as np

from driftwarden.core.alerting import AlertBook, Finding
from driftwarden.core.columnar import PredictionColumns
from driftwarden.core.config import ModelMonitorConfig, MonitoringConfig
from driftwarden.core.events import PredictionEvent
from driftwarden.core.monitor import Monitor
from driftwarden.core.profile import build_profile


def stream(n: int, feature, seed: int) -> list[PredictionEvent]:
    """``n`` events one second apart; ``feature(rng, i)`` gives each event's features."""
    rng = np.random.default_rng(seed)
    return [
        PredictionEvent(
            event_id=str(uuid.UUID(int=seed * 2**64 + i, version=4)), model_id="m", model_version="1",
            ts=1_764_000_000.0 + i, features=feature(rng, i), prediction=float(rng.integers(0, 2)),
        )
        for i in range(n)
    ]  # fmt: skip


def run(events: list[PredictionEvent], monitor: Monitor) -> list:
    alerts = []
    for i in range(0, len(events), 250):
        alerts += monitor.observe(events[i : i + 250], now=1.0).alerts
    return alerts


def monitor(**overrides: object) -> Monitor:
    config = {"reference_size": 1_000, "min_reference_size": 500, "window_size": 500} | overrides  # cooldown: 1 h
    return Monitor(MonitoringConfig(defaults=ModelMonitorConfig(**config)))


def states(alerts, kind="data_drift", subject="x"):
    return [a.state for a in alerts if (a.kind, a.subject) == (kind, subject)]


def burst_then(later_mean: float, later_from: int):
    """x ~ N(0, 1) with a short burst at +3 σ (events 2000-2150), then a mean of ``later_mean`` from ``later_from``."""

    def feature(rng, i):
        mean = 3.0 if 2_000 <= i < 2_150 else (later_mean if i >= later_from else 0.0)
        return {"x": float(rng.normal(mean, 1.0))}

    return feature


def test_a_real_change_after_a_resolved_alert_on_the_same_feature_fires_within_the_cooldown():
    for seed in (0, 1, 3):
        events = stream(9_000, burst_then(0.6, 6_500), seed)
        book_alerts = run(events, m := monitor())  # cooldown: an hour of event time (events 1 s apart)
        assert states(book_alerts) == ["firing", "resolved", "firing"], seed
        burst, resolved, real = [a for a in book_alerts if a.subject == "x"]
        index = {e.event_id: i for i, e in enumerate(events)}
        assert 2_000 <= index[burst.trigger_event_id] < 2_500
        assert index[resolved.trigger_event_id] < 6_500  # resolved before the real change started
        assert 6_500 <= index[real.trigger_event_id] < 7_000
        assert events[index[real.trigger_event_id]].ts - events[index[resolved.trigger_event_id]].ts < 3_600
        assert real.evidence["change"] == "location" and real.evidence["change_direction"] == "up"
        assert m.status("m", 0).alerts_suppressed > 0  # the burst's further detections stayed one alert


def test_a_repeat_of_the_resolved_finding_within_the_cooldown_is_suppressed_and_counted():
    def twice(rng, i):  # the same spread change, twice, each exactly one window long
        burst = 2_000 <= i < 2_500 or 4_500 <= i < 5_000
        return {"x": float(rng.normal(0.0, 3.0 if burst else 1.0))}

    # A streaming alarm sizes its change from the few values since the change point (here x2.25 and
    # x1.48 for the same change): a tolerance of 1.0 (sizes within a factor 2) calls them one finding;
    # the default 0.5 fires again, erring towards alerting.
    m = monitor(repeat_tolerance=1.0)
    alerts = [a for a in run(stream(6_000, twice, 3), m) if a.subject == "x"]
    assert [a.state for a in alerts] == ["firing", "resolved", "firing"]
    assert alerts[0].evidence["change"] == "spread" and alerts[0].detector == "rank_cusum"
    assert m.status("m", 0).alerts_suppressed >= 1
    # The streaming detector's repeat was suppressed; the window test, another detector, fires it again
    # at the end of the second burst's window (a finding of another detector counts as new: known gap).
    assert alerts[2].detector != "rank_cusum"
    # Without a cooldown the streaming detector's repeat itself fires, within the burst's window.
    again = [a for a in run(stream(6_000, twice, 3), monitor(cooldown_s=0.0)) if a.subject == "x"]
    assert [a.state for a in again] == ["firing", "resolved", "firing"] and again[2].detector == "rank_cusum"


def test_an_alert_does_not_resolve_while_the_shift_persists():
    """A small joint shift over many features: the multivariate alert stays open to the end.

    Its window p-values wander between 1e-7 and 0.05 (most windows would not reject at the firing
    threshold: two such windows resolved it before), never clearing the margin three windows running.
    """
    names = [f"f{j}" for j in range(10)]

    def subtle(rng, i):
        return {name: float(rng.normal(0.08 if i >= 3_000 else 0.0, 1.0)) for name in names}

    for seed in (4, 5):
        alerts = run(stream(30_000, subtle, seed), monitor(window_size=1_000))
        joint = states(alerts, "multivariate_drift", "numeric_features")
        assert joint == ["firing"], (seed, joint)


def test_counting_a_finding_on_an_open_alert_needs_no_evidence_and_does_what_report_does():
    """The monitor skips a streaming alarm's evidence while its subject's alert is open (a change that
    persists alarms every few dozen values): the book ends as if each finding had been reported."""
    drifted = Finding("data_drift", "x", "rank_cusum", True, {"change": "location"}, "x moved")
    settled = Finding("data_drift", "x", "ks_psi_wasserstein", False, {"p_value": 0.9}, "", settled=True)
    books = [AlertBook("m", "1"), AlertBook("m", "1")]
    for book in books:
        assert not book.counted_while_open("data_drift", "x")  # nothing open: the finding must be reported
        assert book.report(drifted, "e1", 1.0, 1.0) is not None
        assert book.report(settled, "e2", 2.0, 1.0) is None
    assert books[0].report(drifted, "e3", 3.0, 1.0) is None
    assert books[1].counted_while_open("data_drift", "x")
    assert books[0].state() == books[1].state() and books[0].settled_streak[("data_drift", "x")] == 0


def test_summaries_say_what_changed():
    reference = stream(3_000, lambda r, i: {"x": float(r.normal()), "y": float(r.normal()), "c": "a"}, 6)
    profile = build_profile("m", "1", reference)

    def changed(r, i):
        return {
            "x": float(r.normal(0.0, 2.0)),  # spread only
            "y": float(r.normal(1.0, 1.0)),  # location only
            "c": str(r.choice(["a", "b"])),  # category mix
        }

    m = Monitor(load_profile=lambda *_: profile)  # default settings
    alerts = [a for a in run(stream(2_000, changed, 7), m) if a.state == "firing"]
    by_subject = {(a.kind, a.subject): a for a in alerts}
    x = by_subject["data_drift", "x"]
    assert (x.evidence["change"], x.evidence["change_direction"]) == ("spread", "wider"), x.summary
    assert "spread wider" in x.summary
    y = by_subject["data_drift", "y"]
    assert (y.evidence["change"], y.evidence["change_direction"]) == ("location", "up"), y.summary
    c = by_subject["data_drift", "c"]
    # (the rank CUSUMs find it within tens of values, where a and b moved by the same share: either names it)
    assert c.evidence["change"] == "category_mix" and "c category mix changed" in c.summary
    assert "b 0.0% -> " in c.summary or "a 100.0% -> " in c.summary
    # Streaming alerts name the size of the reference they compare with (never 0).
    assert {a.evidence["reference_size"] for a in alerts} == {3_000}


def test_a_rise_of_the_zero_share_is_summarised_as_such():
    """A zero-inflated amount (40 % zeros) whose zeros become 60 %, the amounts above them unchanged: the alert says
    the share of values at the minimum rose, from the reference's share to the recent one."""
    reference = stream(5_000, lambda r, i: {"amount": float(0.0 if r.random() < 0.4 else r.gamma(2.0, 10.0))}, 12)
    profile = build_profile("m", "1", reference)

    def more_zeros(r, i):
        return {"amount": float(0.0 if r.random() < (0.6 if i >= 3_000 else 0.4) else r.gamma(2.0, 10.0))}

    alerts = [a for a in run(stream(6_000, more_zeros, 13), Monitor(load_profile=lambda *_: profile))
              if a.state == "firing" and a.subject == "amount"]  # fmt: skip
    assert alerts, "no alert"
    first = alerts[0]
    assert (first.evidence["change"], first.evidence["change_direction"]) == ("atom_share", "up"), first.summary
    assert first.evidence["statistic"] == "lower_atom" and first.evidence["atom_values"] == "0"
    assert re.search(r"share of values at the minimum \(0\) rose: (39|40|41)\.\d% -> [5-9]\d\.\d%", first.summary)
    assert 0.5 < first.evidence["recent_share"] < 0.75 and abs(first.evidence["reference_share"] - 0.4) < 0.02


def test_a_variance_only_change_is_not_summarised_as_a_mean_shift():
    names = [f"f{j}" for j in range(8)]

    def wider(rng, i):
        return {name: float(rng.normal(0.0, 1.6 if i >= 2_000 and j < 3 else 1.0)) for j, name in enumerate(names)}

    alerts = [a for a in run(stream(6_000, wider, 8), monitor()) if a.state == "firing"]
    joint = [a for a in alerts if a.kind == "multivariate_drift"]
    for alert in joint:
        assert alert.evidence["change"] == "spread" and "joint mean" not in alert.summary, alert.summary
    spread = [a for a in alerts if a.kind == "data_drift"]
    assert spread and all(a.evidence["change"] == "spread" for a in spread if a.detector != "adwin")


def test_a_short_stream_with_a_profile_is_tested_from_its_first_events():
    """300 events, default settings: the early looks at the first window (125, 250 events) catch a change."""
    profile = build_profile("m", "1", stream(3_000, lambda r, i: {"x": float(r.normal()), "z": float(r.normal())}, 9))
    for seed, onset in ((10, 0), (11, 100)):

        def shifted(rng, i, onset=onset):
            return {"x": float(rng.normal(1.0 if i >= onset else 0.0, 1.0)), "z": float(rng.normal())}

        events = stream(300, shifted, seed)
        alerts = run(events, Monitor(load_profile=lambda *_: profile))
        fired = {(a.kind, a.subject) for a in alerts if a.state == "firing"}
        assert ("data_drift", "x") in fired and ("data_drift", "z") not in fired, (onset, fired)
        assert all(a.evidence["reference_size"] == 3_000 for a in alerts)
        # The same stream without the change raises nothing.
        calm = stream(300, lambda rng, i: {"x": float(rng.normal()), "z": float(rng.normal())}, seed)
        assert run(calm, Monitor(load_profile=lambda *_: profile)) == []


def test_without_a_profile_the_reference_grows_from_a_small_minimum_and_is_reported():
    def shifted(rng, i):
        return {"x": float(rng.normal(1.0 if i >= 1_500 else 0.0, 1.0))}

    m = monitor(reference_size=5_000, window_size=2_000)  # detection from 500 events, doubling to 5,000
    alerts = run(stream(3_000, shifted, 12), m)
    (alert,) = [a for a in alerts if (a.kind, a.subject, a.state) == ("data_drift", "x", "firing")]
    assert alert.evidence["reference_size"] == 1_000  # grown 500 -> 1,000 on clean events before the change
    version = m.models["m"].versions["1"]
    assert version.profile.n_events == 1_000 and version.reference_events == []  # frozen by the drift alert
    # Without a drift the reference grows to reference_size and stops there.
    calm = monitor(reference_size=5_000, window_size=2_000)
    run(stream(9_000, lambda rng, i: {"x": float(rng.normal())}, 13), calm)
    assert calm.models["m"].versions["1"].profile.n_events == 5_000


def test_a_feature_the_reference_lacks_is_told_once_and_ignoring_it_silences_it():
    """Found in a new user's session: a profile whose features are named otherwise than the events' (built from a
    training set), or a feature a model server adds later, went unwatched without a word. One data-quality alert per
    such feature, on row events and on a columnar batch alike; it stays open (not repeated); the config's
    ignore_features silences it; the reference's own features raise nothing."""
    profile = build_profile("m", "1", stream(3_000, lambda r, i: {"x": float(r.normal())}, 12))
    carried = lambda r, i: {"x": float(r.normal()), "amount": float(r.normal()), "note": "a"}  # noqa: E731
    events = stream(2_000, carried, 13)
    watched = Monitor(load_profile=lambda *_: profile)
    alerts = run(events, watched)
    assert watched.models["m"].versions["1"].book.suppressed == 0  # (open, not a repeat counted each batch)
    assert sorted((a.kind, a.subject, a.state) for a in alerts) == [
        ("data_quality", "amount/unprofiled", "firing"), ("data_quality", "note/unprofiled", "firing")]  # fmt: skip
    assert alerts[0].trigger_event_id == events[0].event_id and "nothing watches it" in alerts[0].summary
    columnar = Monitor(load_profile=lambda *_: profile)
    rows = events[:500]
    batch = PredictionColumns("m", "1", [e.event_id for e in rows], np.array([e.ts for e in rows]),
                              {"x": np.array([e.features["x"] for e in rows]),
                               "amount": np.array([e.features["amount"] for e in rows]), "note": ["a"] * len(rows)},
                              [e.prediction for e in rows])  # fmt: skip
    assert {a.subject for a in columnar.observe([batch], now=1.0).alerts} == {"amount/unprofiled", "note/unprofiled"}
    ignoring = Monitor(MonitoringConfig(defaults=ModelMonitorConfig(ignore_features=["amount", "note"])),
                       load_profile=lambda *_: profile)  # fmt: skip
    assert run(events, ignoring) == []
