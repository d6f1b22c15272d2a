"""The label error stream's Bernoulli CUSUMs: exact run lengths, a budget that holds given the reference,
delay near the information limit, and the performance monitor's use of them (alerts, a re-taken reference).

Seconds-long: run lengths are checked by simulation at a few thousand labels, where the count is large
enough to compare; at the default budget they come from the same exact Markov chain.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from driftwarden.core.config import ModelMonitorConfig
from driftwarden.core.detectors import BernoulliCusumDetector
from driftwarden.core.detectors.error_rate import (
    ODDS_RATIOS,
    lattice,
    lattice_threshold,
    run_length,
)
from driftwarden.core.joins import Joined
from driftwarden.core.performance import PerformanceMonitor


def simulated_run_lengths(p: float, k: int, m: int, h: int, runs: int, rng: np.random.Generator) -> np.ndarray:
    """Labels to the first alarm of ``runs`` independent integer CUSUMs (vectorized over the runs)."""
    s = np.zeros(runs, dtype=np.int64)
    lengths = np.zeros(runs, dtype=np.int64)
    alive = np.ones(runs, dtype=bool)
    t = 0
    while alive.any():
        t += 1
        errors = rng.random(runs) < p
        s = np.where(alive, np.maximum(s + np.where(errors, m - k, -k), 0), s)
        alarmed = alive & (s >= h)
        lengths[alarmed] = t
        alive &= ~alarmed
    return lengths


@pytest.mark.parametrize(("p0", "odds"), [(0.003, 1.5), (0.05, 2.5), (0.3, 1.5), (0.3, 5.0), (0.6, 2.5)])
def test_the_markov_chain_run_length_is_what_simulation_measures(p0, odds):
    k, m = lattice(p0, odds)
    h = lattice_threshold(p0, k, m, arl=2_000)
    exact = run_length(p0, k, m, h)
    assert run_length(p0, k, m, h - 1) < 2_000 <= exact  # the smallest integer threshold reaching the target
    measured = simulated_run_lengths(p0, k, m, h, 3_000, np.random.default_rng(int(p0 * 1e4) + m))
    # run lengths are nearly geometric (sd ~ mean): the mean of 3,000 is within 4 standard errors
    assert abs(measured.mean() / exact - 1) < 4 / math.sqrt(3_000)


def test_the_reference_value_is_rounded_up_and_above_the_reference_rate():
    for p0 in (1e-4, 0.003, 0.02, 0.1, 0.3, 0.5, 0.8, 0.95, 0.99, 0.9995):
        for odds in ODDS_RATIOS:
            shape = lattice(p0, odds)
            gamma = math.log1p((odds - 1) * p0) / math.log(odds)
            if shape is None:  # gamma within 1/256 of 1: nothing to see
                assert p0 > 0.99 and 1 - gamma < 1 / 256
                continue
            k, m = shape
            assert p0 < gamma <= k / m < 1 and m <= 256
            assert k / m < 1.06 * gamma or m == 256  # (at most 6 % above, but for the coarsest lattice)
    off = BernoulliCusumDetector(999, 1_000)  # a reference rate near 1: no rise left to see, no CUSUM
    off.update(1.0)
    assert off.lattices == [] and not off.drift_detected


@pytest.mark.slow
def test_the_budget_holds_given_the_reference_for_95_percent_of_references():
    """The CUSUMs are built on the Clopper-Pearson upper bound of the reference's rate: given the reference,
    the bank's false-alarm rate at the true rate is within budget unless the bound missed it (5 %)."""
    rng = np.random.default_rng(11)
    arl, n = 5e4, 1_000
    for p in (0.02, 0.1, 0.35):
        within = []
        for errors in rng.binomial(n, p, 200):
            detector = BernoulliCusumDetector(int(errors), n, arl)
            rate = sum(
                1 / run_length(p, k, m, h) for (k, m), h in zip(detector.lattices, detector.thresholds, strict=True)
            )
            within.append(rate <= 1 / arl)
        assert np.mean(within) >= 0.93, p  # (the binomial's discreteness makes the bound cover a little more)
        # ...and the price: the plain estimate as the reference rate would keep the budget about half the time
        plain = [
            sum(1 / run_length(p, *lattice(q, o), lattice_threshold(q, *lattice(q, o), 3 * arl)) for o in ODDS_RATIOS)
            <= 1 / arl
            for q in rng.binomial(n, p, 20) / n
        ]
        assert np.mean(plain) < 0.85, p


def test_a_rise_is_found_near_the_information_limit():
    """Lorden: delay ~ ln(ARL) / KL. A 10 % error rate rising to 20 %, at the default budget."""
    rng = np.random.default_rng(5)
    arl = ModelMonitorConfig().label_arl
    p0, p1 = 0.10, 0.20
    kl = p1 * math.log(p1 / p0) + (1 - p1) * math.log((1 - p1) / (1 - p0))
    delays = []
    for _ in range(20):
        detector = BernoulliCusumDetector(int(rng.binomial(1_000, p0)), 1_000, arl)
        stream = (rng.random(20_000) < p1).astype(float)
        alarms: list[int] = []
        detector.update_many(stream, alarms.append)
        delays.append(alarms[0])
    bound = math.log(arl) / kl
    # the reference is a sample of 1,000 labels (its upper bound costs delay) and the bank splits the budget
    assert bound < np.median(delays) < 1.5 * bound, (np.median(delays), bound)  # measured: 381 vs 318


def joined(errors: np.ndarray) -> list[Joined]:
    return [Joined(str(i), float(i), "1", int(e), 0, math.nan, ()) for i, e in enumerate(errors)]


def test_the_performance_monitor_alerts_a_rise_with_its_evidence():
    rng = np.random.default_rng(1)
    errors = np.r_[rng.random(20_000) < 0.08, rng.random(3_000) < 0.16]
    monitor = PerformanceMonitor("classification", None, ModelMonitorConfig())
    fired = [(f, item) for f, item in monitor.update(joined(errors)) if f.drifted]
    finding, item = fired[0]
    assert (finding.kind, finding.subject, finding.detector) == ("performance_drift", "accuracy", "bernoulli_cusum")
    assert 20_000 <= int(item.event_id) < 21_000
    e = finding.evidence
    assert abs(e["reference_error"] - 0.08) < 0.02 and e["reference_labels"] == 1_000
    assert 0.12 < e["recent_error"] < 0.3 and e["window_start_ts"] >= 19_000
    assert finding.summary.startswith("accuracy fell from 0.9")


def test_a_stable_error_stream_raises_nothing():
    rng = np.random.default_rng(2)
    monitor = PerformanceMonitor("classification", None, ModelMonitorConfig())
    findings = monitor.update(joined(rng.random(100_000) < 0.2))
    assert not any(f.drifted for f, _ in findings)


def test_a_version_that_improves_re_takes_its_reference_and_a_later_rise_is_found():
    """An online learner (or a hard first period): 30 % errors in the first labels, then 5 %, then 12 %.
    Against the first labels 12 % is an improvement; against the re-taken reference it is a rise."""
    rng = np.random.default_rng(3)
    errors = np.r_[rng.random(1_000) < 0.3, rng.random(9_000) < 0.05, rng.random(4_000) < 0.12]
    monitor = PerformanceMonitor("classification", None, ModelMonitorConfig())
    fired = [int(item.event_id) for f, item in monitor.update(joined(errors)) if f.drifted]
    assert fired and 10_000 <= fired[0] < 12_000
    assert monitor.reference is not None and monitor.reference["error"] < 0.1
    restored = PerformanceMonitor.from_bytes(monitor.to_bytes())
    assert restored.state() == monitor.state()


def test_a_rise_during_a_re_take_does_not_become_the_reference():
    """The fall is confirmed by a fresh sample: a re-take that caught a rise (300 labels at 2 %, then 45 %)
    keeps the old reference, and the rise is alerted against it."""
    rng = np.random.default_rng(4)
    errors = np.r_[rng.random(1_000) < 0.3, rng.random(300) < 0.02, rng.random(3_000) < 0.45]
    monitor = PerformanceMonitor("classification", None, ModelMonitorConfig())
    items = joined(errors)
    findings = monitor.update(items[:1_300])
    assert monitor.retake is not None  # the fall was seen: a re-take began
    findings += monitor.update(items[1_300:])
    first_reference = float(errors[:1_000].mean())
    assert monitor.reference is not None and monitor.reference["error"] == first_reference
    assert any(f.drifted and f.detector == "bernoulli_cusum" and int(item.event_id) >= 1_300 for f, item in findings)


def alarms_of(detector: BernoulliCusumDetector, values: np.ndarray) -> list[tuple[int, dict]]:
    """``detector.update_many(values)``'s alarms, each with its evidence then."""
    said: list[tuple[int, dict]] = []
    detector.update_many(values, lambda i: said.append((i, detector.evidence())))
    return said


def test_the_cusums_fed_in_pieces_alarm_and_end_as_one_label_at_a_time():
    """``update_many`` in closed form (runs of integer steps) against ``update`` per label, over rates from near
    0 to near 1, rises that alarm again and again, NaN and non-0/1 values, and pieces of every size."""
    rng = np.random.default_rng(11)
    alarms = 0
    for p0 in (0.002, 0.05, 0.3, 0.9, 0.997):
        reference_errors = round(p0 * 1_000)
        pieces, one_by_one = (BernoulliCusumDetector(reference_errors, 1_000, arl=500.0) for _ in range(2))
        rates = np.repeat([p0, min(1.0, 3 * p0), p0], 1_500)
        values = (rng.random(len(rates)) < rates).astype(float)
        values[rng.random(len(values)) < 0.03] = np.nan
        values[rng.random(len(values)) < 0.03] = 0.7  # (counts as an error)
        start = 0
        while start < len(values):
            piece = values[start : start + int(rng.choice([1, 7, 300, 2_000]))]
            said = alarms_of(pieces, piece)
            looped: list[tuple[int, dict]] = []
            for i, x in enumerate(piece.tolist()):
                if x == x:
                    one_by_one.update(x)
                    if one_by_one.drift_detected:
                        looped.append((i, one_by_one.evidence()))
            assert said == looped
            assert pieces.state() == one_by_one.state()
            alarms += len(said)
            start += len(piece)
    assert alarms > 20


def test_the_performance_monitor_fed_in_runs_says_and_keeps_what_it_does_one_label_at_a_time():
    """Runs of labels (:meth:`PerformanceMonitor.update` cuts them where a window closes, a re-take completes or
    the improvement CUSUM alarms) against one label a call: the same findings, triggers and state, through a
    reference, a fall (a re-take), a rise (alarms), window and segment findings, with labels that match
    predictions of other types (1.0 and "1")."""
    rng = np.random.default_rng(12)
    rates = np.repeat([0.3, 0.04, 0.04, 0.25, 0.1], 1_500)
    region = rng.integers(0, 3, len(rates))
    wrong = rng.random(len(rates)) < rates * np.where(region == 2, 1.5, 0.75)
    label = np.where(rng.random(len(rates)) < 0.3, "yes", "no")
    predicted = [
        ("1" if w else 1.0) if y == "yes" else ("yes" if w else "no") for w, y in zip(wrong, label, strict=True)
    ]
    items = [
        Joined(str(i), float(i), "1", predicted[i], 1.0 if label[i] == "yes" else "no", 0.5, (("region", str(r)),))
        for i, r in enumerate(region)
    ]
    config = ModelMonitorConfig(label_window=400, segment_min_labels=50)
    runs, one_by_one = (PerformanceMonitor("classification", "1", config) for _ in range(2))
    said: tuple[list[tuple[str, str, str, bool, dict, str, str]], ...] = ([], [])
    references, start = set(), 0
    while start < len(items):
        piece = items[start : start + int(rng.choice([1, 50, 399, 1_300]))]
        for monitor, out in ((runs, said[0]), (one_by_one, said[1])):
            calls = [piece] if monitor is runs else [[item] for item in piece]
            for call in calls:
                out += [(f.kind, f.subject, f.detector, f.drifted, f.evidence, f.summary, j.event_id)
                        for f, j in monitor.update(call)]  # fmt: skip
        assert runs.state() == one_by_one.state()
        references.add(None if runs.reference is None else runs.reference["error"])
        start += len(piece)
    assert said[0] == said[1]
    kinds = {(kind, detector) for kind, _, detector, drifted, *_ in said[0] if drifted}
    assert len(references - {None}) == 2  # the first reference, and the one re-taken after the fall
    assert {("performance_drift", "bernoulli_cusum"), ("segment_performance", "two_proportion_z")} <= kinds
