"""The loops that run once per value, compiled (numba): where numpy needed a dozen passes over arrays.

* :func:`lindley`: the rank CUSUMs' recursion over binned fixed-point increments (a model's ~20 streams, 33
  CUSUMs each, every value). In numpy it took a running sum, a crossing screen and a read-out of the CUSUMs, each
  an array of CUSUMs by values; here each CUSUM stays in a register. The sums are integers (fixed point), so any
  order gives the same CUSUMs, bit for bit.
* :func:`numeric_bins`: a numeric value's bins among the reference's edges (one binary search, the tie and range
  check, the continuous part's bin).
* :func:`cdf_gaps`: the two-sample distribution functions' gaps of a window test, by one merge of two sorted
  runs (numpy: a stable argsort, a cumulative sum and three passes).

Each gives what its numpy version gave, bit for bit (the same floating-point operations on the same values).
numba is imported and each loop compiled on its first call, or loaded from the cache next to this file (numba's
own cache directory when that is read-only; ``NUMBA_CACHE_DIR``): ~0.4 s of CPU once per process with the cache,
~1 s without; with no writable cache directory every process compiles. A CLI command or a worker that feeds no
stream does neither.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np


def _recursion(
    bins: np.ndarray,
    table: np.ndarray,
    part_bins: np.ndarray,
    part_table: np.ndarray,
    cusums: np.ndarray,
    last_zero: np.ndarray,
    limits: np.ndarray,
    start: int,
) -> int:
    def add(step: np.ndarray, first: int, taken: int) -> bool:  # one value's increments to CUSUMs first, ...
        crossed = False
        for j in range(first, first + step.shape[0]):
            c = cusums[j] + step[j - first]
            if c <= 0:
                c = 0
                last_zero[j] = taken
            cusums[j] = c
            crossed |= c >= limits[j]
        return crossed

    rows, part_rows = table.shape[1], part_table.shape[1]
    for i in range(start, bins.shape[0]):
        crossed = add(table[bins[i]], 0, i + 1)
        if part_rows:
            crossed |= add(part_table[part_bins[i]], rows, i + 1)
        if crossed:
            return i + 1
    return -1


def _numeric_bins(
    x: np.ndarray,
    merged: np.ndarray,
    quantiles_below: np.ndarray,
    q: np.ndarray,
    part_edges: np.ndarray,
    inside: np.ndarray,
    outside: int,
    z_bins: np.ndarray,
    part_bins: np.ndarray,
    lo: np.ndarray,
    apart: np.ndarray,
) -> int:
    def lower_bound(edges: np.ndarray, value: float) -> int:
        # np.searchsorted(edges, value, "left") by halving without a branch (a multiply, not an `if`: LLVM made
        # that a branch, mispredicted half the time; ~20 against ~40 ns a value among 2,000 edges)
        base, n = 0, edges.shape[0]
        while n > 1:
            half = n >> 1
            base += half * (edges[base + half - 1] < value)
            n -= half
        found: int = base + (edges[base] < value)
        return found

    k = q.shape[0]
    count = 0
    for i in range(x.shape[0]):
        v = x[i]
        below = lower_bound(merged, v)
        at = quantiles_below[below]
        lo[i] = at
        z_bins[i] = below - at
        if at == 0 or at == k or q[at] == v:  # a tie with a quantile, or outside the range: through ``u``
            apart[count] = i
            count += 1
        if part_edges.shape[0] and inside[0] < v < inside[1]:
            part_bins[i] = lower_bound(part_edges, v)
        else:
            part_bins[i] = outside
    return count


@cache
def _compiled(function: Callable[..., Any]) -> Callable[..., Any]:
    import numba  # (here: only the processes that feed streams import it)

    compiled: Callable[..., Any]
    try:
        compiled = numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # no writable cache directory (numba's message names it): compiled in each process
        compiled = numba.njit(nogil=True)(function)
    return compiled


def lindley(
    bins: tuple[np.ndarray, np.ndarray],
    tables: tuple[np.ndarray, np.ndarray],
    cusums: np.ndarray,
    last_zero: np.ndarray,
    limits: np.ndarray,
    start: int,
) -> int | None:
    """Lindley's recursion ``S = max(0, S + x)`` for every CUSUM from value ``start`` on, until some CUSUM reaches
    its limit: the number of values then taken (None: none did by the last value).

    The CUSUMs are ``tables[0].shape[1]`` rows whose increments for value ``i`` are ``tables[0][bins[0][i]]``, then
    ``tables[1].shape[1]`` rows whose increments are ``tables[1][bins[1][i]]`` (none: a table of no columns); all
    int64. ``cusums`` (in and out) holds them; ``last_zero[j]`` (in and out) becomes the number of values taken
    when CUSUM ``j`` was last 0, if it was 0 since ``start``.

    >>> table = np.array([[-2], [3]])  # bin 0 adds -2, bin 1 adds 3
    >>> cusums, last_zero = np.zeros(1, np.int64), np.full(1, -1)
    >>> bins, none = np.array([1, 1, 0, 0, 0, 1, 1, 1]), np.zeros((1, 0), np.int64)
    >>> lindley((bins, bins), (table, none), cusums, last_zero, np.array([7]), 0), cusums.tolist(), last_zero.tolist()
    (8, [9], [5])
    >>> lindley((bins, bins), (table, none), cusums, last_zero, np.array([99]), 8)  # (nothing left)
    """
    (z_bins, part_bins), (table, part_table) = bins, tables
    taken = int(_compiled(_recursion)(z_bins, table, part_bins, part_table, cusums, last_zero, limits, start))
    return None if taken < 0 else taken


#: What :func:`numeric_bins` searches: the quantiles and the bins' edges merged, how many of the first ``m`` merged
#: entries are quantiles, the quantiles, the continuous part's edges and the values between which a value is in it.
Edges = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def numeric_bins(x: np.ndarray, edges: Edges, outside: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The bins of finite values ``x`` among the bins' edges in ``x``, in one loop instead of a dozen numpy passes
    (:class:`~driftwarden.core.detectors.sequential.RankBins`): ``(z_bins, part_bins, lo, apart)``.

    ``edges`` is ``(merged, quantiles_below, q, part_edges, inside)``: ``merged`` holds the reference quantiles ``q``
    and the edges sorted together, ``quantiles_below[m]`` how many of its first ``m`` entries are quantiles, so a
    value's z bin is the number of edges below it. Its part bin is its place among ``part_edges`` when it lies
    strictly between ``inside[0]`` and ``inside[1]``, else ``outside``. ``lo`` is ``np.searchsorted(q, x)``;
    ``apart`` the indexes of the values ranked apart (equal to a quantile or outside the range), whose bins the
    caller finds from their ranks.

    >>> q, part_edges = np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.5])
    >>> merged = np.sort(np.concatenate([q, part_edges]))  # 0, 0.5, 1, 1.5, 2
    >>> edges = (merged, np.array([0, 1, 1, 2, 2, 3]), q, part_edges, np.array([0.6, 1.9]))
    >>> z, part, lo, apart = numeric_bins(np.array([0.7, 1.6, 1.0, 5.0]), edges, 9)
    >>> z.tolist(), part.tolist(), lo.tolist(), apart.tolist()
    ([1, 2, 1, 2], [1, 2, 1, 9], [1, 2, 1, 3], [2, 3])
    """
    n = len(x)
    z_bins, part_bins, lo, apart = (np.empty(n, np.int64) for _ in range(4))
    count = int(_compiled(_numeric_bins)(x, *edges, outside, z_bins, part_bins, lo, apart))
    return z_bins, part_bins, lo, apart[:count]


def _gaps(reference: np.ndarray, current: np.ndarray, gaps: np.ndarray, steps: np.ndarray) -> None:
    n, m = reference.shape[0], current.shape[0]
    i = j = 0
    previous = 0.0
    for t in range(n + m):  # the merge of a stable sort of the two runs: on a tie the reference's value first
        if j == m or (i < n and reference[i] <= current[j]):
            point = reference[i]
            i += 1
        else:
            point = current[j]
            j += 1
        if t:
            steps[t - 1] = point - previous
        if t < n + m - 1:
            gaps[t] = abs(i / n - (t + 1 - i) / m)
        previous = point


def cdf_gaps(reference_sorted: np.ndarray, current_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``|F_reference - F_current|`` after each point of the merged sample but the last, and the steps between
    consecutive points (:func:`~driftwarden.core.stats.compare_sorted`), from one merge of the two sorted runs.

    At each point the count of the reference's values among the points so far. Where a run of equal points goes
    on (a step of 0) that count is partial, but only a point where a step follows, the last of its run, counts:
    ``max(gaps[steps > 0])`` and ``gaps @ steps`` are exactly those of the gaps at every point
    (``searchsorted(..., side="right")`` of each). The same floats as numpy's ``argsort(kind="stable")`` of the
    two runs concatenated, a cumulative sum of the reference's and ``abs(below / n - (arange(1, n + m) - below) /
    m)``.

    >>> gaps, steps = cdf_gaps(np.array([1.0, 2.0, 4.0]), np.array([2.0, 3.0]))  # merged: 1, 2, 2, 3, 4
    >>> [round(g, 3) for g in gaps.tolist()], steps.tolist()
    ([0.333, 0.667, 0.167, 0.333], [1.0, 0.0, 1.0, 1.0])
    """
    size = len(reference_sorted) + len(current_sorted) - 1
    gaps, steps = np.empty(size), np.empty(size)
    _compiled(_gaps)(reference_sorted, current_sorted, gaps, steps)
    return gaps, steps


def load() -> None:
    """Import numba and compile, or load from the cache, every loop here for the argument types the hot path passes:
    what a process's first fed stream would do (a benchmark does it before its clock starts, as its peers import
    their libraries first)."""
    ints, floats, none = np.zeros(1, np.int64), np.zeros(1), np.zeros((1, 0), np.int64)
    lindley((ints, ints), (np.zeros((1, 1), np.int64), none), np.zeros(1, np.int64), np.full(1, -1), ints + 1, 0)
    numeric_bins(floats, (floats, np.zeros(2, np.int64), floats, np.empty(0), np.zeros(2)), 0)
    cdf_gaps(floats, floats)
