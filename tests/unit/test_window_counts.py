"""The window tests of a categorical feature share one count of its values per window: the same results as
rating value by value."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from driftwarden.core.detectors.checks import MissingRateCheck, OutOfRangeCheck, TypeViolationCheck, UnseenCategoryCheck
from driftwarden.core.detectors.window import CategoricalDriftDetector
from driftwarden.core.profile import CategoricalProfile, Columns

KNOWN = ["a", "b", "c"]
VALUES = st.one_of(st.none(), st.sampled_from([*KNOWN, "new", "other", ""]))


@settings(max_examples=150, deadline=None)
@given(st.lists(VALUES, min_size=1, max_size=120), st.integers(0, 2**32 - 1))
def test_rates_and_category_counts_are_those_of_the_values_one_by_one(column, seed):
    rng = np.random.default_rng(seed)
    n = len(column)
    numeric = np.where(rng.random((n, 1)) < 0.2, np.nan, rng.normal(0, 2, (n, 1)))
    window = Columns.of_rows(numeric, np.isnan(numeric), [column], rng.random((n, 1)) < 0.1)
    present = [v for v in column if v is not None]
    finite = numeric[np.isfinite(numeric)]
    expected = {
        MissingRateCheck("x", 0, 0.1, categorical=True, min_values=1): np.array([v is None for v in column]),
        UnseenCategoryCheck("x", 0, 0.1, KNOWN, min_values=1): np.array([v not in KNOWN for v in present], bool),
        MissingRateCheck("y", 0, 0.1, min_values=1): np.isnan(numeric[:, 0]),
        OutOfRangeCheck("y", 0, 0.1, -1.0, 1.0, min_values=1): (finite < -1.0) | (finite > 1.0),
        TypeViolationCheck("y", 0, 0.1, min_values=1): window.type_violations[:, 0],
    }
    for check, flags in expected.items():
        assert check.update(window) == (len(flags) > 0)
        if len(flags):
            assert check.evidence()["rate"] == float(flags.mean())  # exactly: the same count over the same number
    profile = CategoricalProfile({"a": 50, "b": 30, "c": 20}, 0.0)
    shared, alone = (CategoricalDriftDetector("x", 0, profile, min_values=1) for _ in range(2))
    assert shared.update(window) == (len(present) > 0)
    if present:
        alone._record(alone._counts_test(Counter(present), given_reference=True))
        assert shared.evidence() == alone.evidence() and shared.p_value == alone.p_value
    assert window.category_counts(0) == Counter(column)  # (unchanged by the tests that read it)
