"""The compiled loops (core/compiled.py): where they are compiled and cached."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba.core import caching

from driftwarden.core import compiled as module
from driftwarden.core.compiled import cdf_gaps, lindley
from driftwarden.core.detectors import RankCusumDetector
from driftwarden.core.detectors.sequential import NO_PART
from driftwarden.core.stats import compare_sorted


def run() -> tuple[int | None, list[int]]:
    table, cusums = np.array([[-2], [3]]), np.zeros(1, np.int64)
    bins = np.array([1, 1, 0, 1])
    return lindley((bins, bins), (table, NO_PART), cusums, np.full(1, -1), np.array([5]), 0), cusums.tolist()


def test_with_no_writable_cache_directory_the_loop_is_compiled_in_the_process(monkeypatch):
    # numba (0.68) finds no place for its cache when none of its locators can write (a read-only install run by a
    # user without a home directory): it refuses `cache=True`. The loop is then compiled without a cache.
    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])
    module._compiled.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="no locator available"):  # (what numba does: the fallback's cause)
            caching.FunctionCache(module._recursion)
        assert run() == (2, [6])
        assert module._compiled(module._recursion)._cache.__class__.__name__ == "NullCache"
    finally:
        module._compiled.cache_clear()
    assert run() == (2, [6])


def numpy_cdf_gaps(reference_sorted: np.ndarray, current_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What ``compare_sorted`` computed before ``cdf_gaps``: a stable argsort of the two runs, a cumulative sum."""
    n, m = len(reference_sorted), len(current_sorted)
    merged = np.concatenate([reference_sorted, current_sorted])
    order = np.argsort(merged, kind="stable")
    below = np.cumsum(order < n)[:-1]
    return np.abs(below / n - (np.arange(1, n + m) - below) / m), np.diff(merged[order])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(-4, 4), min_size=1, max_size=40),
    st.lists(st.integers(-4, 4), min_size=1, max_size=40),
    st.sampled_from([0.25, 1.0, 1e-3]),
)
def test_the_merge_gives_the_stable_sorts_gaps_and_steps_bit_for_bit(reference, current, scale):
    # few distinct values: ties within and between the samples, -0.0 and 0.0 among them
    a, b = np.sort(np.array(reference) * scale), np.sort(np.array(current) * -scale)
    for mine, theirs in zip(cdf_gaps(a, b), numpy_cdf_gaps(a, b), strict=True):
        assert mine.tobytes() == theirs.tobytes()


def test_the_merge_on_a_window_test_s_sizes_gives_the_same_bits():
    rng = np.random.default_rng(4)
    reference, current = (
        np.sort(np.round(rng.lognormal(0, 1, 1_000), 2)),
        np.sort(np.round(rng.lognormal(0.1, 1, 2_000), 2)),
    )
    for mine, theirs in zip(cdf_gaps(reference, current), numpy_cdf_gaps(reference, current), strict=True):
        assert mine.tobytes() == theirs.tobytes()


def test_load_compiles_each_loop_for_the_types_the_hot_path_passes():
    # a benchmark calls load() before its clock: the detectors' and window tests' first calls then compile nothing
    module.load()
    kernels = [module._compiled(f) for f in (module._recursion, module._numeric_bins, module._gaps)]
    before = [list(k.signatures) for k in kernels]
    assert all(len(s) == 1 for s in before)
    rng = np.random.default_rng(0)
    reference = rng.lognormal(0, 1, 5_000)
    zeros = np.where(rng.random(5_000) < 0.4, 0.0, reference)  # (a continuous part)
    for sample in (reference, zeros):
        detector = RankCusumDetector(np.quantile(sample, np.linspace(0, 1, 1_000)), 5_000)
        detector.update_many(np.concatenate([sample[:300], [np.nan], sample[300:600] * 3]))
    compare_sorted(np.sort(reference[:1_000]), np.sort(rng.lognormal(0, 1, 2_000)), 1.0)
    assert [list(k.signatures) for k in kernels] == before
