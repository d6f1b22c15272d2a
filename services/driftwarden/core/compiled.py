"""The loops that run once per value, compiled (numba): where numpy needed a dozen passes over arrays.

* :func:`lindley`: the rank CUSUMs' recursion over binned fixed-point increments (a model's ~20 streams, 33
  CUSUMs each, every value). In numpy it took a running sum, a crossing screen and a read-out of the CUSUMs, each
  an array of CUSUMs by values; here each CUSUM stays in a register. The sums are integers (fixed point), so any
  order gives the same CUSUMs, bit for bit.
* :func:`numeric_bins`: a numeric value's bins among the reference's edges (one binary search among the quantiles
  and both kinds of edges, the tie and range check).
* :func:`apart_bins`: the bins of values ranked apart (every value of a categorical feature, ties with a reference
  quantile, values beyond its range): the rank, its uniform draw and its place among the edges' images, where numpy
  took a hash, ``Phi^-1`` and a search, each a pass.
* :func:`cdf_gaps`: the two-sample distribution functions' gaps of a window test, by one merge of two sorted
  runs (numpy: a stable argsort, a cumulative sum and three passes).

Each gives what its numpy version gave, bit for bit (the same floating-point operations on the same values;
:func:`apart_bins` leaves the ranks within rounding of an edge to its caller, which takes them through numpy).
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

#: SplitMix64's constants (Steele, Lea & Flood 2014): the draws ``V`` of ranked-apart values, here and in
#: :func:`~driftwarden.core.detectors.sequential.position_uniforms`.
GAMMA, MIX1, MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
S11, S27, S30, S31 = np.uint64(11), np.uint64(27), np.uint64(30), np.uint64(31)


def _recursion(
    bins: np.ndarray,
    table: np.ndarray,
    part_bins: np.ndarray,
    part_table: np.ndarray,
    class_table: np.ndarray,
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

    rows, part_rows, class_rows = table.shape[1], part_table.shape[1], class_table.shape[1]
    outside = part_table.shape[0] - 2  # (the part bin of a value below the part; one above it: outside + 1)
    for i in range(start, bins.shape[0]):
        crossed = add(table[bins[i]], 0, i + 1)
        if part_rows:
            crossed |= add(part_table[part_bins[i]], rows, i + 1)
        if class_rows:  # the value's class: inside the part (0), below it (1), above it (2)
            b = part_bins[i]
            crossed |= add(class_table[0 if b < outside else b - outside + 1], rows + part_rows, i + 1)
        if crossed:
            return i + 1
    return -1


def _numeric_bins(
    x: np.ndarray,
    merged: np.ndarray,
    quantiles_below: np.ndarray,
    parts_below: np.ndarray,
    q: np.ndarray,
    inside: np.ndarray,
    outside: int,
    z_bins: np.ndarray,
    part_bins: np.ndarray,
    lo: np.ndarray,
    apart: np.ndarray,
) -> int:
    # A value's place among all the edges, ``np.searchsorted(merged, v, "left")``, by halving without a branch (a
    # multiply, not an `if`: LLVM made that a branch, mispredicted half the time; ~20 against ~40 ns a value among
    # 2,000 entries); of the entries below it, how many are quantiles and how many the continuous part's edges: the
    # rest are the z bins' edges.
    size, k, with_part = merged.shape[0], q.shape[0], parts_below[merged.shape[0]] > 0
    count = 0
    for i in range(x.shape[0]):
        v, below, m = x[i], 0, size
        while m > 1:
            half = m >> 1
            below += half * (merged[below + half - 1] < v)
            m -= half
        below += merged[below] < v
        at, parts = quantiles_below[below], parts_below[below]
        lo[i] = at
        z_bins[i] = below - at - parts
        if at == 0 or at == k or q[at] == v:  # a tie with a quantile, or outside the range: through ``u``
            apart[count] = i
            count += 1
        if with_part and inside[0] < v < inside[1]:
            part_bins[i] = parts
        else:  # below the part (or no part), or above it
            part_bins[i] = outside + 1 if with_part and v >= inside[1] else outside
    return count


def _apart_bins(
    x: np.ndarray,
    lo: np.ndarray,
    positions: np.ndarray,
    seed: np.uint64,
    q: np.ndarray,
    run_end: np.ndarray,
    below: np.ndarray,
    above: np.ndarray,
    tail: float,
    part: np.ndarray,
    u_edges: np.ndarray,
    near: np.ndarray,
    outside: int,
    z_bins: np.ndarray,
    part_bins: np.ndarray,
    unsure: np.ndarray,
) -> int:
    def left(edges: np.ndarray, value: float) -> int:  # np.searchsorted(edges, value, "left"), as in _numeric_bins
        b, m = 0, edges.shape[0]
        while m > 1:
            half = m >> 1
            b += half * (edges[b + half - 1] < value)
            m -= half
        found: int = b + (edges[b] < value)
        return found

    def close(b: int, value: float) -> bool:  # within rounding of the edge below or above the place it found
        below = b > 0 and value - u_edges[b - 1] <= near[b - 1]
        above = b < u_edges.shape[0] and u_edges[b] - value <= near[b]
        return bool(below or above)

    k, count = q.shape[0], 0
    for i in range(x.shape[0]):
        # u: ReferenceCdf.apart's arithmetic, the draw V from position_uniforms (SplitMix64), the same operations
        low = lo[i]  # np.searchsorted(q, x, "left"); "right" from it: past the run of quantiles equal to x, if any
        high = run_end[low] if low < k and q[low] == x[i] else low
        z = np.uint64(positions[i]) + seed + GAMMA
        z = (z ^ (z >> S30)) * MIX1
        z = (z ^ (z >> S27)) * MIX2
        z = z ^ (z >> S31)
        v = (float(z >> S11) + 0.5) / 2.0**53
        lower = below[min(low, k - 1)]
        upper = above[max(high - 1, 0)] if high > low else lower
        if high > 0 and low < k:
            u = tail + (1 - 2 * tail) * (lower + v * (upper - lower))
        elif high == 0:
            u = tail * v
        else:
            u = 1 - tail * v
        # its bins: Phi^-1(u) among the z edges is u among their images Phi(edge), unless u is within rounding
        # of one (then the caller finds the bin through Phi^-1, as :func:`bins` does)
        b = left(u_edges, u)
        z_bins[i] = b
        part_bins[i] = outside + 1 if part.shape[0] and u >= part[1] else outside
        sure = not close(b, u)
        if part.shape[0] and part[0] < u < part[1]:
            w = (u - part[0]) / (part[1] - part[0])
            c = left(u_edges, w)
            part_bins[i] = c
            sure = sure and not close(c, w)
        if not sure:
            unsure[count] = i
            count += 1
    return count


@cache
def _compiled(function: Callable[..., Any]) -> Callable[..., Any]:
    import numba  # (here: only the processes that feed streams import it)

    # The loops keep the GIL (no ``nogil``): each is a few µs to a ms, and a thread that let the GIL go for one waits
    # to take it back while the event loop's thread holds it (up to the 5 ms switch interval), call after call: with
    # the rank CUSUMs' ~1,000 calls a batch of the latency run, p99 event -> alert 0.74-1.59 s against 0.76-0.86 s
    # keeping it (docs/benchmarks.md, "Values ranked apart compiled").
    compiled: Callable[..., Any]
    try:
        compiled = numba.njit(cache=True)(function)
    except RuntimeError:  # no writable cache directory (numba's message names it): compiled in each process
        compiled = numba.njit()(function)
    return compiled


def lindley(
    bins: tuple[np.ndarray, np.ndarray],
    tables: tuple[np.ndarray, np.ndarray, np.ndarray],
    cusums: np.ndarray,
    last_zero: np.ndarray,
    limits: np.ndarray,
    start: int,
) -> int | None:
    """Lindley's recursion ``S = max(0, S + x)`` for every CUSUM from value ``start`` on, until some CUSUM reaches
    its limit: the number of values then taken (None: none did by the last value).

    The CUSUMs are ``tables[0].shape[1]`` rows whose increments for value ``i`` are ``tables[0][bins[0][i]]``, then
    ``tables[1].shape[1]`` rows whose increments are ``tables[1][bins[1][i]]``, then ``tables[2].shape[1]`` rows
    whose increments are ``tables[2][k]``, ``k`` the class of part bin ``b = bins[1][i]``: 0 for ``b < outside``,
    1 for ``outside`` (below the part), 2 for ``outside + 1`` (above it), with ``outside = tables[1].shape[0] - 2``
    (none: a table of no columns; a class table needs a part table of that many rows, of no columns if need be).
    All int64. ``cusums`` (in and out) holds them; ``last_zero[j]`` (in and out) becomes the number of values taken
    when CUSUM ``j`` was last 0, if it was 0 since ``start``.

    >>> table = np.array([[-2], [3]])  # bin 0 adds -2, bin 1 adds 3
    >>> cusums, last_zero = np.zeros(1, np.int64), np.full(1, -1)
    >>> bins, none = np.array([1, 1, 0, 0, 0, 1, 1, 1]), np.zeros((1, 0), np.int64)
    >>> tables = (table, none, none)
    >>> lindley((bins, bins), tables, cusums, last_zero, np.array([7]), 0), cusums.tolist(), last_zero.tolist()
    (8, [9], [5])
    >>> lindley((bins, bins), tables, cusums, last_zero, np.array([99]), 8)  # (nothing left)
    >>> classes = np.array([[1], [-1], [5]])  # inside the part +1, below it -1, above it +5 (outside = 2)
    >>> cusums, part_bins = np.zeros(2, np.int64), np.array([0, 1, 2, 3, 3])
    >>> lindley((bins[:5], part_bins), (table, np.zeros((4, 0), np.int64), classes), cusums, np.full(2, -1),
    ...         np.array([99, 99]), 0), cusums.tolist()  # fmt: skip
    (None, [0, 11])
    """
    (z_bins, part_bins), (table, part_table, class_table) = bins, tables
    taken = int(_compiled(_recursion)(z_bins, table, part_bins, part_table, class_table, cusums, last_zero, limits,
                                      start))  # fmt: skip
    return None if taken < 0 else taken


#: What :func:`numeric_bins` searches (:func:`search_edges`).
Edges = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def search_edges(q: np.ndarray, z_edges: np.ndarray, part_edges: np.ndarray, inside: np.ndarray) -> Edges:
    """What :func:`numeric_bins` searches, once per reference: the quantiles ``q``, the z bins' edges and the
    continuous part's edges sorted together (one binary search gives a value's place among each), how many of the
    first ``m`` merged entries are quantiles and how many the part's edges, ``q``, and ``inside``: the values
    strictly between which a value is in the continuous part (no part: no edges)."""
    merged = np.concatenate([q, z_edges, part_edges])
    order = np.argsort(merged, kind="stable")
    quantiles_below = np.concatenate([[0], np.cumsum(order < len(q))])
    parts_below = np.concatenate([[0], np.cumsum(order >= len(q) + len(z_edges))])
    return merged[order], quantiles_below, parts_below, q, inside


def numeric_bins(x: np.ndarray, edges: Edges, outside: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The bins of finite values ``x`` among the bins' edges in ``x``, in one loop instead of a dozen numpy passes
    (:class:`~driftwarden.core.detectors.sequential.RankBins`): ``(z_bins, part_bins, lo, apart)``.

    ``edges`` is :func:`search_edges`'s. A value's z bin is the number of z edges below it; its part bin the number
    of the part's edges below it when it lies strictly between ``inside[0]`` and ``inside[1]``, else ``outside``
    (below; ``outside + 1`` at or above ``inside[1]``).
    ``lo`` is ``np.searchsorted(q, x)``; ``apart`` lists the values ranked apart (equal to a quantile or outside
    the range), whose bins the caller finds from their ranks (:func:`apart_bins`).

    >>> q, z_edges, part_edges = np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.5]), np.array([0.8, 1.2])
    >>> edges = search_edges(q, z_edges, part_edges, inside=np.array([0.6, 1.9]))
    >>> z, part, lo, apart = numeric_bins(np.array([0.7, 1.6, 1.0, 5.0, 0.1]), edges, 9)
    >>> z.tolist(), part.tolist(), lo.tolist(), apart.tolist()
    ([1, 2, 1, 2, 0], [0, 2, 1, 10, 9], [1, 2, 1, 3, 1], [2, 3])
    """
    n = len(x)
    z_bins, part_bins, lo, apart = (np.empty(n, np.int64) for _ in range(4))
    count = int(_compiled(_numeric_bins)(x, *edges, outside, z_bins, part_bins, lo, apart))
    return z_bins, part_bins, lo, apart[:count]


#: What :func:`apart_bins` ranks by (:func:`ranks_of`).
Ranks = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]


def ranks_of(q: np.ndarray, below: np.ndarray, above: np.ndarray, tail: float) -> Ranks:
    """A reference's quantiles, where each one's run of equal quantiles ends (``searchsorted(q, q, "right")``, once
    per reference: a tie's "right" place without a search), the shares below and above each, and the mass beyond
    either end (:class:`~driftwarden.core.detectors.sequential.ReferenceCdf`'s ``q``, ``below``, ``above``,
    ``tail``)."""
    return q, np.searchsorted(q, q, "right"), below, above, tail


def apart_bins(
    x: np.ndarray, lo: np.ndarray, positions: np.ndarray, seed: int, ranks: Ranks, part: tuple[float, float] | None,
    u_edges: tuple[np.ndarray, np.ndarray], outside: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The bins of values ranked apart (:meth:`~driftwarden.core.detectors.sequential.ReferenceCdf.apart`, ``V``
    by ``position_uniforms(positions, seed)``) in one loop: ``(z_bins, part_bins, unsure)``.

    A rank ``u``'s z bin is the number of the z edges below ``Phi^-1(u)``: here the number of their images
    ``u_edges[0] = Phi(edges)`` below ``u``, the same unless ``u`` is within ``u_edges[1]`` of an image (rounding
    of ``Phi`` and ``Phi^-1``, ~1e-16 against margins of 1e-9 of the smaller tail): ``unsure`` lists those values
    (almost never any), whose bins the caller takes from :func:`~driftwarden.core.detectors.sequential.bins`.
    The continuous part ``part`` as there: a rank strictly inside is rescaled to it, the rest take ``outside``
    (below it) or ``outside + 1`` (above).

    >>> from driftwarden.core.detectors.sequential import U_EDGES, ReferenceCdf, bins, position_uniforms
    >>> from driftwarden.core.detectors.sequential import OUTSIDE, ROUNDING
    >>> cdf, x = ReferenceCdf([0.0, 1.0, 2.0], 1_000, masses=[0.5, 0.3, 0.2]), np.array([1.0, 0.0, 2.0, 7.0, -1.0])
    >>> positions = np.arange(5)
    >>> ranks, lo = ranks_of(cdf.q, cdf.below, cdf.above, cdf.tail), np.searchsorted(cdf.q, x)
    >>> z, part, unsure = apart_bins(x, lo, positions, 3, ranks, (0.5, 0.8), (U_EDGES, ROUNDING), OUTSIDE)
    >>> exact = bins(cdf.apart(x, np.searchsorted(cdf.q, x), position_uniforms(positions, 3)), (0.5, 0.8))
    >>> z.tolist() == exact[0].tolist(), part.tolist() == exact[1].tolist(), unsure.tolist()
    (True, True, [])
    """
    n = len(x)
    z_bins, part_bins, unsure = (np.empty(n, np.int64) for _ in range(3))
    mix = np.uint64((seed * 0x632BE59BD9B4E019) & ((1 << 64) - 1))
    bounds = np.empty(0) if part is None else np.asarray(part, float)
    count = int(_compiled(_apart_bins)(x, lo, positions, mix, *ranks, bounds,
                                       *u_edges, outside, z_bins, part_bins, unsure))  # fmt: skip
    return z_bins, part_bins, unsure[:count]


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
    lindley((ints, ints), (np.zeros((1, 1), np.int64), none, none), np.zeros(1, np.int64), np.full(1, -1), ints + 1, 0)
    numeric_bins(floats, search_edges(floats, np.empty(0), np.empty(0), np.zeros(2)), 0)
    apart_bins(floats, ints, ints, 0, ranks_of(floats, floats, floats, 0.5), None, (floats, floats), 0)
    cdf_gaps(floats, floats)
