"""The rank CUSUMs on a categorical feature's frequency ranks: exact ranks, the budget, delays, replays."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from driftwarden.bench.detection_shapes import category_probabilities, category_theta_for, lorden_bound
from driftwarden.core.columnar import PredictionColumns
from driftwarden.core.config import ModelMonitorConfig
from driftwarden.core.detectors.sequential import ReferenceCdf, frequency_ranks
from driftwarden.core.monitor import (
    CATEGORIES,
    DRIFT_KINDS,
    MAX_UNSEEN_SHARE,
    ModelMonitor,
    category_detector,
    category_ranking,
    category_ranks,
)
from driftwarden.core.profile import CategoricalProfile, ReferenceProfile
from driftwarden.core.state import decode, encode


def zipf(levels: int, power: float = 1.0) -> np.ndarray:
    p = 1 / np.arange(1, levels + 1) ** power
    return p / p.sum()


def categories(rng: np.random.Generator, p: np.ndarray, n: int) -> list[str]:
    return [f"c{k:04d}" for k in rng.choice(len(p), size=n, p=p)]


def profile_of(reference: list[str]) -> ReferenceProfile:
    counts = CategoricalProfile(dict(Counter(reference)), 0.0)
    return ReferenceProfile("m", "1", len(reference), "regression", None, {}, {"x": counts}, None, None)


def alerts(monitor: ModelMonitor, values: list[str], first: int = 0) -> list[tuple[int, str, str]]:
    n = len(values)
    batch = PredictionColumns("m", "1", [str(first + i) for i in range(n)], np.arange(first, first + n, dtype=float),
                              {"x": values}, [0.0] * n)  # fmt: skip
    return [(int(a.trigger_event_id or ""), a.detector, a.summary) for a in monitor.observe(batch, now=0.0).alerts
            if a.state == "firing" and a.kind in DRIFT_KINDS]  # fmt: skip


def test_the_ranks_of_a_discrete_reference_are_exactly_uniform():
    rng = np.random.default_rng(1)
    p = zipf(40)
    cdf = ReferenceCdf(range(len(p)), 10**9, masses=p)  # the true shares: what the ranks are uniform against
    u = cdf.transform(rng.choice(len(p), size=50_000, p=p).astype(float), first=0, seed=3)
    assert stats.kstest(u, "uniform").pvalue > 0.01  # ties randomized over each rank's exact share
    # the detector's shares are the counting half's counts, exactly: no quantile summary rounds them
    reference = Counter(categories(rng, p, 5_000))
    ranked, counts = frequency_ranks(reference)
    codes, counts = category_ranking(CategoricalProfile(dict(reference), 0.0))
    detector = category_detector(counts, 1e6, 0)
    assert list(codes) == ranked and ranked[:3] == ["c0000", "c0001", "c0002"]  # the most common first
    assert np.allclose(np.diff(detector.cdf.above, prepend=0.0), np.array(counts) / sum(counts), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("levels", "power"), [(12, 1.0), (300, 0.5), (300, 1.0)])
def test_a_stable_stream_of_many_levels_and_a_new_category_keeps_the_per_detector_budget(levels, power):
    """At an ARL of 5,000 values over 200,000: ~40 false alarms allowed. With the categories ranked and
    counted by the same reference values, 300 levels gave ~5 times that (the over-counted ones rank first)."""
    budget_arl, alarms, values = 5_000.0, 0, 0
    for seed in range(4):
        rng = np.random.default_rng([seed, levels])
        p = zipf(levels, power)
        codes, counts = category_ranking(CategoricalProfile(dict(Counter(categories(rng, p, 5_000))), 0.0))
        detector = category_detector(counts, budget_arl, seed)
        stream = categories(rng, p, 50_000)
        stream = ["brand new" if r < 1e-3 else c for c, r in zip(stream, rng.random(len(stream)), strict=True)]
        found: list[int] = []
        x = category_ranks(stream, codes)
        for start in range(0, len(x), 1_000):
            detector.update_many(x[start : start + 1_000], found.append)
        alarms, values = alarms + len(found), values + len(x)
    assert alarms / values <= 1.25 / budget_arl


@pytest.mark.parametrize(("power", "size", "watched"), [(1.6, 5_000, False), (1.6, 40_000, False), (2.0, 10_000, True)])
def test_many_heavy_tailed_levels_get_rank_cusums_only_where_the_unseen_share_keeps_the_budget(power, size, watched):
    """10,000 Zipf levels: the rare categories' reference shares are biased up (a category the sample saw once is, on
    average, rarer than one in the sample), which the CUSUMs read as a change. Found by hostile data, through the
    gate of 5 % then: exponent 1.6 in 5,000 values (3-3.5 % unseen) raised 2.5-4 x the budget; 1.5 % unseen still
    0.7-1.13 x. At ~1 % (exponent 2, 10,000 values) each reference keeps the budget; above, the window tests watch."""
    rng = np.random.default_rng([round(power * 10), size])
    p = zipf(10_000, power)
    profile = profile_of(categories(rng, p, size))
    codes, counts = category_ranking(profile.categorical["x"])
    assert (counts[-1] / sum(counts) < MAX_UNSEEN_SHARE) == watched, counts[-1] / sum(counts)
    assert (CATEGORIES + "x" in ModelMonitor("m", "1", ModelMonitorConfig(), profile).streaming) == watched
    if watched:
        budget_arl, found = 1e4, []
        detector = category_detector(counts, budget_arl, 0)
        x = category_ranks(categories(rng, p, 300_000), codes)
        for start in range(0, len(x), 5_000):
            detector.update_many(x[start : start + 5_000], found.append)
        assert len(found) <= len(x) / budget_arl


def test_the_monitor_finds_a_category_mix_change_within_lordens_scale():
    # The shape corpus's categorical change (mass moving to the reversed mix) at KL 0.05, after the early
    # looks: the window tests would see it at the next full window (4,000), the rank CUSUMs well before.
    config = ModelMonitorConfig()
    before, after = category_probabilities(0.0), category_probabilities(category_theta_for(0.05))
    bound = lorden_bound(0.05, 1e6 / config.false_alarms_per_million)  # ~276 values
    onset, delays = 2_100, []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        monitor = ModelMonitor("m", "1", config, profile_of(categories(rng, before, 5_000)))
        found = alerts(monitor, categories(rng, before, onset) + categories(rng, after, 1_900))
        assert found, "no alarm"
        at, detector, summary = found[0]
        assert at >= onset and detector == "rank_cusum"
        assert summary.startswith("x category mix changed over the last")
        assert "category mix: c00" in summary  # the category that moved most, its share before and since
        delays.append(at - onset + 1)
    assert np.median(delays) <= 2 * bound  # (the window tests alone: 1,900 or more)


def test_a_replay_raises_the_same_alarms_and_a_restored_monitor_continues_them():
    rng = np.random.default_rng(5)
    before, after = zipf(20), zipf(20)[::-1]
    reference = categories(rng, before, 5_000)
    stream = categories(rng, before, 3_500) + categories(rng, 0.8 * before + 0.2 * after, 2_500)
    first = alerts(ModelMonitor("m", "1", ModelMonitorConfig(), profile_of(reference)), stream)
    again = alerts(ModelMonitor("m", "1", ModelMonitorConfig(), profile_of(reference)), stream)
    assert first == again and first[0][1] == "rank_cusum" and 3_560 < first[0][0] < 3_999
    one = ModelMonitor("m", "1", ModelMonitorConfig(), profile_of(reference))
    split = alerts(one, stream[:3_560])  # a restart within the change: the CUSUMs' state carries over
    restored = ModelMonitor.from_state(decode(encode("t", 1, one.state()), "t", 1))  # (through JSON bytes)
    split += alerts(restored, stream[3_560:], first=3_560)
    assert split == first  # the same alarms, described alike (from the values the detector keeps)


def test_the_budget_counts_the_categorical_detectors():
    rng = np.random.default_rng(0)
    counts = {name: CategoricalProfile(dict(Counter(categories(rng, zipf(5), 2_000))), 0.0) for name in "ab"}
    ids = CategoricalProfile({f"id{i}": 1 for i in range(2_000)}, 0.0)  # all new: left to the window tests
    profile = ReferenceProfile("m", "1", 2_000, "regression", None, {}, counts | {"ids": ids}, None, None)
    monitor = ModelMonitor("m", "1", ModelMonitorConfig(), profile)
    assert sorted(monitor.streaming) == ["\0categories:a", "\0categories:b"]
    assert {d.arl for d in monitor.streaming.values()} == {ModelMonitorConfig().streaming_arl(2)}


COUNTRIES = ["NL", "DE", "BE", "LU", "PL"]
BEFORE = [0.5, 0.3, 0.15, 0.05, 0.0]


@pytest.mark.parametrize(
    ("after", "moved", "named", "severity"),
    [
        ([0.1, 0.1, 0.1, 0.7, 0.0], "LU", "LU", "critical"),  # the mixes' JS distance: 0.62
        ([0.4, 0.3, 0.2, 0.1, 0.0], "NL", "NL", "warning"),  # 0.11
        ([0.35, 0.25, 0.1, 0.0, 0.3], "PL", "new or rare categories (PL)", "critical"),  # a new category (0.44)
    ],
)
def test_a_category_mix_alarm_gives_the_categories_shares_and_is_as_severe_as_its_js_distance(
    after, moved, named, severity
):
    """An SRE reads categories, not rank codes: the shares of the categories that moved most, before and
    since the change point, the total variation and JS distances; critical by the window test's JS floor."""
    rng = np.random.default_rng(0)
    reference = list(rng.choice(COUNTRIES, size=5_000, p=BEFORE))
    monitor = ModelMonitor("m", "1", ModelMonitorConfig(), profile_of(reference))
    values = list(rng.choice(COUNTRIES, size=1_000, p=BEFORE)) + list(rng.choice(COUNTRIES, size=3_000, p=after))
    batch = PredictionColumns("m", "1", [str(i) for i in range(len(values))], np.arange(len(values), dtype=float),
                              {"x": values}, [0.0] * len(values))  # fmt: skip
    alert = next(a for a in monitor.observe(batch, now=0.0).alerts if a.state == "firing" and a.kind == "data_drift")
    e = alert.evidence
    assert (alert.subject, alert.detector) == ("x", "rank_cusum") and int(alert.trigger_event_id or "") >= 1_000
    assert not {"shift_sigma", "reference_median", "current_median", "spread_ratio", "statistic"} & set(e)  # ranks'
    assert (e["top_category"], e["change"], e["change_size"]) == (named, "category_mix", e["total_variation"])
    assert e["reference_share"] == Counter(reference)[moved] / 5_000  # (PL: none)
    since = e["recent_share"] - e["reference_share"]
    k = COUNTRIES.index(moved)
    assert abs(e["recent_share"] - after[k]) < 0.2 and since * (after[k] - BEFORE[k]) > 0  # (a few hundred values)
    shares = f"{named} {e['reference_share']:.1%} -> {e['recent_share']:.1%}"
    assert str(e["categories_moved"]).startswith(shares) and len(str(e["categories_moved"]).split(", ")) == 3
    assert alert.summary.startswith(f"x category mix changed over the last {e['values_since_change']} values")
    assert f"category mix: {shares}" in alert.summary and f"JS distance {e['js_distance']:.3f}" in alert.summary
    critical = e["js_distance"] >= ModelMonitorConfig().critical_js
    assert alert.severity == severity == ("critical" if critical else "warning")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.sampled_from(["a", "b", "c", "z", ""]), st.text(max_size=3)), max_size=60),
    st.lists(st.text(max_size=3), unique=True, max_size=6),
)
def test_a_columns_codes_are_a_lookup_per_value(column, categories):
    """Missing: NaN; a category of the reference: its code; any other value: the last rank."""
    codes = {c: code for code, c in enumerate(categories)}
    expected = [math.nan if v is None else float(codes.get(v, len(codes))) for v in column]
    assert np.array_equal(category_ranks(column, codes), np.array(expected, dtype=float), equal_nan=True)
