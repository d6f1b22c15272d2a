"""The compiled loops (core/compiled.py): where they are compiled and cached."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba.core import caching

from driftwarden.core import compiled as module
from driftwarden.core.compiled import apart_bins, cdf_gaps, lindley, numeric_bins, ranks_of, search_edges
from driftwarden.core.detectors import RankCusumDetector, sequential
from driftwarden.core.detectors.sequential import (
    NO_PART,
    OUTSIDE,
    ROUNDING,
    U_EDGES,
    RankBins,
    ReferenceCdf,
    bins,
    position_uniforms,
)
from driftwarden.core.stats import compare_sorted


def run() -> tuple[int | None, list[int]]:
    table, cusums = np.array([[-2], [3]]), np.zeros(1, np.int64)
    bins = np.array([1, 1, 0, 1])
    return lindley((bins, bins), (table, NO_PART, NO_PART), cusums, np.full(1, -1), np.array([5]), 0), cusums.tolist()


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
    kernels = [module._compiled(f) for f in (module._recursion, module._numeric_bins, module._apart_bins, module._gaps)]
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


def numpy_numeric_bins(x: np.ndarray, q: np.ndarray, z_edges: np.ndarray, part_edges: np.ndarray,
                       inside: np.ndarray, outside: int) -> tuple[np.ndarray, ...]:  # fmt: skip
    """What ``numeric_bins`` gives, each part by its own ``np.searchsorted``."""
    lo = np.searchsorted(q, x, "left")
    tied = (lo < len(q)) & (q[np.minimum(lo, len(q) - 1)] == x)
    in_part = (inside[0] < x) & (x < inside[1]) if len(part_edges) else np.zeros(len(x), bool)
    above = (x >= inside[1]) if len(part_edges) else np.zeros(len(x), bool)
    part_bins = np.where(in_part, np.searchsorted(part_edges, x, "left"), outside + above)
    return np.searchsorted(z_edges, x, "left"), part_bins, lo, np.flatnonzero((lo == 0) | (lo == len(q)) | tied)


grid = st.lists(st.integers(-40, 40), min_size=1, max_size=60).map(lambda v: np.sort(np.asarray(v) / 4.0))
ends = st.tuples(st.integers(-44, 44), st.integers(-44, 44))


@settings(max_examples=300, deadline=None)
@given(q=grid, z_edges=grid, part_edges=st.one_of(st.just(np.empty(0)), grid), ends=ends,
       x=st.lists(st.integers(-44, 44), max_size=41))  # fmt: skip
def test_a_value_s_bins_are_its_places_among_each_kind_of_edge(q, z_edges, part_edges, ends, x):
    """One search among the quantiles and both kinds of edges merged (ties within and across them, values on an
    edge, outside every range): each part is what its own ``np.searchsorted`` gives."""
    inside, values = np.sort(np.asarray(ends) / 4.0), np.asarray(x, float) / 4.0
    mine = numeric_bins(values, search_edges(q, z_edges, part_edges, inside), 99)
    theirs = numpy_numeric_bins(values, q, z_edges, part_edges, inside, 99)
    assert [a.tolist() for a in mine] == [b.tolist() for b in theirs]


@settings(max_examples=200, deadline=None)
@given(atoms=st.lists(st.integers(-20, 20), min_size=1, max_size=30), masses=st.data(),
       x=st.lists(st.integers(-24, 24), min_size=1, max_size=300), first=st.integers(0, 2**40),
       seed=st.integers(0, 2**31), part=st.sampled_from([None, (0.3, 1.0), (0.0, 0.55), (0.1, 0.9)]))  # fmt: skip
def test_the_bins_of_values_ranked_apart_are_those_of_their_ranks_scores(atoms, masses, x, first, seed, part):
    """Discrete references (every value ranked apart) and summaries with runs of equal quantiles, values on an atom,
    between two and beyond either end, any position and seed, with and without a continuous part: the bins
    ``apart_bins`` finds by ranks among the edges' images are those :func:`bins` finds through ``Phi^-1``, but for
    the ranks within rounding of an image (``unsure``: e.g. a value midway between two atoms, ranked at 1/2,
    exactly on the edge at z = 0), which must be near one."""
    q = np.asarray(sorted(atoms), float)
    if masses.draw(st.booleans()) and len(set(atoms)) == len(atoms):
        cdf = ReferenceCdf(q, 1_000, masses=masses.draw(st.lists(st.integers(1, 9), min_size=len(q), max_size=len(q))))
    else:
        cdf = ReferenceCdf(q, 1_000)
    values, positions = np.asarray(x, float) / 2.0, first + np.arange(len(x))
    ranks, lo = ranks_of(cdf.q, cdf.below, cdf.above, cdf.tail), np.searchsorted(cdf.q, values)
    z_bins, part_bins, unsure = apart_bins(values, lo, positions, seed, ranks, part, (U_EDGES, ROUNDING), OUTSIDE)
    exact = bins(cdf.apart(values, np.searchsorted(cdf.q, values), position_uniforms(positions, seed)), part)
    u = cdf.apart(values, np.searchsorted(cdf.q, values), position_uniforms(positions, seed))
    sure = np.setdiff1d(np.arange(len(values)), unsure)
    w = u if part is None else (u - part[0]) / (part[1] - part[0])  # (a rank within the part: rescaled to it)
    assert all(min(np.abs(U_EDGES - u[i]).min(), np.abs(U_EDGES - w[i]).min()) < 1e-6 for i in unsure)
    assert z_bins[sure].tolist() == exact[0][sure].tolist() and part_bins[sure].tolist() == exact[1][sure].tolist()


def test_a_rank_within_rounding_of_an_edge_s_image_is_unsure_and_then_binned_through_the_exact_path(monkeypatch):
    """A rank on an edge's image or one unit in the last place from it is ``unsure``, one 1e-6 away is not; and
    :class:`RankBins` takes an unsure value's bins from :func:`bins` (every value unsure under a huge margin: the
    same bins, discrete and numeric references alike)."""
    cdf = ReferenceCdf(np.array([0.0, 1.0, 2.0]), 1_000, masses=[5, 3, 2])
    ranks, x, positions = ranks_of(cdf.q, cdf.below, cdf.above, cdf.tail), np.array([1.0]), np.array([17])
    (u,) = cdf.apart(x, np.searchsorted(cdf.q, x), position_uniforms(positions, 4))
    w = (u - 0.1) / (0.95 - 0.1)  # its rank within a continuous part (0.1, 0.95)
    for part, at in ((None, u), ((0.1, 0.95), w)):
        for image, unsure in ((at, 1), (np.nextafter(at, 1.0), 1), (np.nextafter(at, 0.0), 1), (at + 1e-6, 0)):
            u_edges = np.sort(np.concatenate([U_EDGES, [image]]))
            near = 1e-9 * np.minimum(u_edges, 1 - u_edges) + 4 * np.spacing(u_edges)
            assert len(apart_bins(x, np.ones(1, int), positions, 4, ranks, part, (u_edges, near), OUTSIDE)[2]) == unsure
    rng = np.random.default_rng(3)
    numeric = ReferenceCdf(np.quantile(np.round(rng.lognormal(0, 1, 5_000), 1), np.linspace(0, 1, 1_000)), 5_000)
    for reference, values in (
        (cdf, rng.integers(-1, 4, 500).astype(float)),
        (numeric, np.round(rng.lognormal(0, 1, 500), 1)),
    ):
        part = (0.2, 0.9)
        expected = bins(reference.transform(values, 10, 4), part)
        monkeypatch.setattr(sequential, "ROUNDING", np.ones(len(U_EDGES)))  # every rank apart unsure
        everything_unsure = RankBins(reference, part)(values, 10, 4)
        monkeypatch.undo()
        for found in (everything_unsure, RankBins(reference, part)(values, 10, 4)):
            assert found[0].tolist() == expected[0].tolist() and found[1].tolist() == expected[1].tolist()
