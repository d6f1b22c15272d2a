"""A numeric window test sorts its values once and computes the KS merge and the PSI bins from that sort: the
same numbers, bit for bit, as searching value by value (ties between the samples and within them included). A
numeric profile's quantile summary and PSI edges come from one sort too: the numbers ``np.quantile`` gives."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from driftwarden.core.profile import PSI_BINS, QUANTILE_POINTS, NumericProfile
from driftwarden.core.stats import bin_proportions, compare_distributions, sorted_bin_proportions, sorted_quantiles

# Few distinct values, so that ties within and between the samples are common.
VALUES = st.lists(st.integers(-6, 6).map(lambda v: v / 4), min_size=1, max_size=80)
# Ties, and values far apart in magnitude (a heavy tail).
FINITE = st.lists(st.one_of(st.integers(-6, 6).map(lambda v: v / 4), st.floats(-1e12, 1e12)), min_size=1, max_size=300)


def searched(reference_sorted: np.ndarray, current: np.ndarray, reference_std: float) -> tuple[float, float]:
    """The KS statistic and normed Wasserstein distance straight from the definition: both distribution
    functions at every point of the merged sample (a binary search each), then the gaps between them."""
    current_sorted = np.sort(current)
    grid = np.sort(np.concatenate([reference_sorted, current_sorted]))
    cdf_reference = np.searchsorted(reference_sorted, grid[:-1], side="right") / len(reference_sorted)
    cdf_current = np.searchsorted(current_sorted, grid[:-1], side="right") / len(current_sorted)
    gaps = np.abs(cdf_reference - cdf_current)
    return float(gaps.max()) if len(gaps) else 0.0, float(np.dot(gaps, np.diff(grid)) / reference_std)


@settings(max_examples=300, deadline=None)
@given(VALUES, VALUES, st.floats(0.1, 10.0))
def test_the_ks_merge_gives_the_searched_statistic_and_distance_exactly(reference, current, reference_std):
    reference_sorted, values = np.sort(np.array(reference)), np.array(current)
    statistic, _, distance = compare_distributions(reference_sorted, values, reference_std)
    assert (statistic, distance) == searched(reference_sorted, values, reference_std)


def test_the_ks_merge_on_continuous_samples_of_the_window_size():
    rng = np.random.default_rng(12)
    for shift in (0.0, 0.05, 0.5):
        reference_sorted = np.round(np.quantile(rng.lognormal(0, 1, 10_000), np.linspace(0, 1, 1_000)), 4)
        current = np.round(rng.lognormal(shift, 1, 2_000), 4)
        statistic, _, distance = compare_distributions(reference_sorted, current, 1.3)
        assert (statistic, distance) == searched(reference_sorted, current, 1.3)


@settings(max_examples=300, deadline=None)
@given(VALUES, st.lists(st.integers(-8, 8).map(lambda v: v / 4), max_size=12))
def test_bin_shares_from_the_sorted_values_are_those_of_each_value_searched(values, edges):
    inner = np.unique(np.array(edges, dtype=float))  # (as quantile_edges makes them: increasing, no repeats)
    shares = sorted_bin_proportions(np.sort(np.array(values)), inner)
    assert shares.tolist() == bin_proportions(np.array(values), inner).tolist()


@settings(max_examples=300, deadline=None)
@given(FINITE, st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40))
def test_quantiles_of_sorted_values_are_numpys_bit_for_bit(values, levels):
    x, q = np.array(values), np.array([0.0, 1.0, *levels])
    assert sorted_quantiles(np.sort(x), q).tolist() == np.quantile(x, q).tolist()


@settings(max_examples=200, deadline=None)
@given(FINITE)
def test_a_numeric_profile_is_what_numpys_quantiles_make(values):
    x = np.array(values)
    profile = NumericProfile.of(np.concatenate([x, [np.nan]]), 0.0)  # (a missing value is left out)
    assert profile.quantiles == np.quantile(x, np.linspace(0, 1, min(QUANTILE_POINTS, len(x)))).tolist()
    edges = np.unique(np.quantile(x, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
    assert profile.edges == edges.tolist()
    assert profile.proportions == bin_proportions(x, edges).tolist()
