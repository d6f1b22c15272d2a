"""Two-sample statistics of a current window against a reference, vectorized with numpy/scipy.

Every function takes plain arrays and returns plain numbers, so detectors stay small and testable.

>>> rng = np.random.default_rng(0)
>>> reference, same, shifted = rng.normal(0, 1, 5000), rng.normal(0, 1, 2000), rng.normal(0.5, 1, 2000)
>>> edges = quantile_edges(np.sort(reference), bins=10)
>>> psi(bin_proportions(reference, edges), bin_proportions(shifted, edges)) > 0.2
True
>>> statistic, p_value, wasserstein = compare_distributions(np.sort(reference), shifted, reference.std())
>>> round(wasserstein, 1), p_value < 1e-10, compare_distributions(np.sort(reference), same, 1.0)[1] > 0.01
(0.5, True, True)
>>> benjamini_hochberg(np.array([0.001, 0.2, 0.004, 0.9]), q=0.01).tolist()
[True, False, True, False]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache, cached_property

import numpy as np
from scipy import stats as scipy_stats
from scipy.spatial.distance import cdist, jensenshannon
from scipy.special import chdtrc, kolmogorov

from driftwarden.core.compiled import cdf_gaps

EPSILON = 1e-4  # floor for empty bins in PSI


def binary_exponent(values: np.ndarray) -> int:
    """The binary exponent of the largest magnitude among ``values`` (``frexp``'s; 0 when all are 0): where the
    arithmetic on a reference of extreme magnitude is done scaled by a power of two, exactly.

    >>> binary_exponent(np.array([0.5, -3.0])), binary_exponent(np.array([1e308])), binary_exponent(np.zeros(2))
    (2, 1024, 0)
    """
    return int(np.frexp(np.abs(values).max())[1])


def moments(values: np.ndarray) -> tuple[float, float]:
    """The mean and standard deviation of finite ``values`` (at least one), without overflow or underflow: values
    beyond ±2^480 (~3e144), or all within ±2^-480, are taken scaled by a power of two (exact), whose squares (and a
    feature near ±1e307's sums) overflowed: ``inf`` or NaN in a profile, its window tests' scale and alert texts (or
    underflowed to a spread of 0); any other, numpy's arithmetic as is.

    >>> moments(np.array([1.0, 3.0])), moments(np.array([-1e308, 1e308, 1e308, -1e308]))
    ((2.0, 1.0), (0.0, 1e+308))
    """
    exponent = binary_exponent(values)
    exponent = exponent if abs(exponent) > 480 else 0
    scaled = np.ldexp(values, -exponent) if exponent else values
    return math.ldexp(float(scaled.mean()), exponent), math.ldexp(float(scaled.std()), exponent)


#: A test run again and again against one reference keeps its level given that reference for this
#: share of references (the rank CUSUMs' thresholds too, :mod:`~driftwarden.core.detectors.sequential`).
REFERENCE_SHARE = 0.95

#: Draws of a reference's error that :class:`MmdReference` takes the :data:`REFERENCE_SHARE` quantile over.
REFERENCE_DRAWS = 200

#: :class:`MmdReference`'s p-value keeps the kernel spectrum's largest eigenvalues, this share of its
#: sum, and bounds the rest by runs within :data:`SPECTRUM_RATIO` (:func:`bounding_spectrum`).
SPECTRUM_EXACT_SHARE = 0.95
SPECTRUM_RATIO = 1.25
SPECTRUM_MOST_EXACT = 256


def quantile_edges(ordered: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the quantiles of the reference's values, sorted (duplicates dropped for discrete features)."""
    return np.unique(sorted_quantiles(ordered, np.linspace(0, 1, bins + 1)[1:-1]))


def sorted_quantiles(ordered: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """``np.quantile(values, levels)`` (its default method, "linear") of finite values already sorted: the same numbers,
    without the partial sort ``np.quantile`` does on each call (a 1,000-level summary of 5,000 values: ~0.5 ms).

    NumPy's steps, as ``numpy.lib._function_base_impl._quantile`` takes them: the virtual index ``(n - 1) q``, its floor
    and the next index (the last value at or beyond the end), and ``_lerp``'s two-sided interpolation.

    >>> values = np.random.default_rng(0).lognormal(size=1_001)
    >>> levels = np.linspace(0, 1, 97)
    >>> sorted_quantiles(np.sort(values), levels).tolist() == np.quantile(values, levels).tolist()
    True
    """
    n = len(ordered)
    virtual = (n - 1) * levels
    at_end = virtual >= n - 1
    previous = np.where(at_end, -1, np.floor(virtual)).astype(np.intp)
    following = np.where(at_end, -1, previous + 1)
    gamma = virtual - previous
    low, high = ordered[previous], ordered[following]
    difference = high - low
    result: np.ndarray = low + difference * gamma
    np.subtract(high, difference * (1 - gamma), out=result, where=gamma >= 0.5)
    return result


def bin_proportions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of ``values`` in each bin defined by ``edges`` (len(edges) + 1 bins)."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def sorted_bin_proportions(values_sorted: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """:func:`bin_proportions` of sorted values: each bin's count from where its edges fall among them (a search
    per edge, not per value).

    >>> values, edges = np.array([0.5, 3.0, 1.0, 2.0, 2.0, 9.0]), np.array([1.0, 2.0, 5.0])
    >>> sorted_bin_proportions(np.sort(values), edges).tolist() == bin_proportions(values, edges).tolist()
    True
    """
    n = len(values_sorted)
    below = np.concatenate([[0], np.searchsorted(values_sorted, edges, side="left"), [n]])  # values below each edge
    shares: np.ndarray = (below[1:] - below[:-1]) / max(n, 1)
    return shares


def psi(reference_props: np.ndarray, current_props: np.ndarray) -> float:
    """Population stability index; < 0.1 is commonly read as stable, > 0.25 as a major shift."""
    p = np.maximum(reference_props, EPSILON)
    q = np.maximum(current_props, EPSILON)
    return float(np.sum((q - p) * np.log(q / p)))


def compare_distributions(
    reference_sorted: np.ndarray, current: np.ndarray, reference_std: float, reference_n: int | None = None
) -> tuple[float, float, float]:
    """(KS statistic, KS asymptotic p-value, normed Wasserstein distance) from one sort of ``current``.

    ``reference_sorted`` may be a quantile summary of a larger reference; pass that reference's true
    size as ``reference_n`` only if the summary is exact, otherwise the summary's own length is used,
    which makes the p-value conservative. The Wasserstein (earth mover's) distance is expressed in
    reference standard deviations.
    """
    return compare_sorted(reference_sorted, np.sort(current), reference_std, reference_n)


def compare_sorted(
    reference_sorted: np.ndarray, current_sorted: np.ndarray, reference_std: float, reference_n: int | None = None
) -> tuple[float, float, float]:
    """:func:`compare_distributions` of a current sample already sorted (a caller that sorts it for more)."""
    gaps, steps = cdf_gaps(reference_sorted, current_sorted)
    ends = gaps[steps > 0]  # (the last point of each run of equal points but the last run, whose gap is 0)
    statistic = float(ends.max()) if len(ends) else 0.0
    n, m = reference_n or len(reference_sorted), len(current_sorted)
    p_value = float(kolmogorov(statistic * np.sqrt(n * m / (n + m))))  # kstwobign.sf without its overhead
    if reference_std <= 0:
        distance = 0.0 if np.allclose(current_sorted, reference_sorted[0]) else float("inf")
    else:
        distance = float(np.dot(gaps, steps) / reference_std)
    return statistic, p_value, distance


def category_test(
    reference_counts: np.ndarray, current_counts: np.ndarray, given_reference: bool = True
) -> tuple[float, float, float]:
    """Chi-square test of homogeneity and Jensen–Shannon distance of two category count vectors.

    Returns (chi-square statistic, p-value, JS distance in [0, 1]). Categories seen in neither sample
    are dropped; a single remaining category means no evidence of change. The p-value holds given the
    reference (:func:`p_value_given_reference`), as a monitor testing every window against the same
    reference needs; ``given_reference=False``: the plain two-sample p-value, for a one-off comparison.

    >>> reference, window = np.array([2_000.0, 1_300, 700, 600, 400]), np.array([700.0, 560, 300, 260, 180])
    >>> chi2, p_value, distance = category_test(reference, window, given_reference=False)
    >>> round(chi2, 1), round(p_value, 4), round(distance, 3)
    (15.3, 0.0041, 0.044)
    >>> round(category_test(reference, window)[1], 4)  # the reference's own error allowed for
    0.0143
    """
    keep = (reference_counts + current_counts) > 0
    ref, cur = reference_counts[keep], current_counts[keep]
    if len(ref) < 2 or cur.sum() == 0 or ref.sum() == 0:
        return 0.0, 1.0, 0.0
    # scipy's chi2_contingency (no continuity correction) term for term, without its ~0.2 ms of checks
    observed = np.vstack([ref, cur])
    expected = observed.sum(axis=1, keepdims=True) * observed.sum(axis=0, keepdims=True) / observed.sum()
    chi2 = ((observed - expected) ** 2 / expected).sum()
    dof = len(ref) - 1
    p_value = (
        p_value_given_reference(chi2, dof, int(ref.sum()), int(cur.sum())) if given_reference else chdtrc(dof, chi2)
    )
    distance = float(jensenshannon(ref / ref.sum(), cur / cur.sum(), base=2))
    return float(chi2), float(p_value), distance


def p_value_given_reference(statistic: float, df: int, reference_n: int, window_n: int) -> float:
    """The p-value of a two-sample quadratic statistic that holds given the reference, for 95 % of references.

    ``statistic`` is Pearson's chi-square of homogeneity or Hotelling's T² (``df`` degrees of freedom)
    of a window of ``window_n`` values against a reference of ``reference_n``. Its usual p-value
    (chi-square) averages over references. A monitor tests every window against the *same*
    reference, whose own sampling error ``R = reference_n · |reference - truth|²`` (chi-square with
    ``df`` degrees of freedom over references) is then shared by all windows: given it the statistic
    is ``reference_n / (reference_n + window_n)`` times a noncentral chi-square with ``df`` degrees
    of freedom and noncentrality ``(window_n / reference_n) · R``, so an unlucky reference raises the
    rate of every window. The p-value takes ``R`` at its :data:`REFERENCE_SHARE` quantile: the test
    keeps its level for 95 % of references (Gandy & Kvaløy 2013, as the rank CUSUMs' thresholds).
    The price is power, small for a reference much larger than the window (a profile from training
    data) and larger for a small one.

    >>> float(round(scipy_stats.chi2.sf(20.0, 4), 5)), round(p_value_given_reference(20.0, 4, 5_000, 2_000), 5)
    (0.0005, 0.00192)
    >>> round(p_value_given_reference(20.0, 4, 100_000, 2_000), 5)  # a large reference: nearly the plain one
    0.00062
    """
    if df < 1:
        return 1.0
    scale = (reference_n + window_n) / reference_n
    noncentrality = window_n / reference_n * _reference_error(df)
    return float(ncx2_sf(statistic * scale, df, noncentrality))


def _ncx2_sf() -> Callable[[float, float, float], float]:
    """``scipy.stats.ncx2.sf`` for a positive noncentrality: the ufunc it calls (~1 µs), not its generic
    distribution machinery (~60 µs a scalar call, a few per window test and window). SciPy's private name (1.17:
    ``scipy.special._ufuncs._ncx2_sf``); where a SciPy lacks it, the public call. ``tests/unit/test_stats.py``
    fails loudly when the two differ or the name is gone."""
    from scipy.special import _ufuncs

    ufunc: Callable[[float, float, float], float] | None = getattr(_ufuncs, "_ncx2_sf", None)
    return ufunc if ufunc is not None else scipy_stats.ncx2.sf


#: The survival function of the noncentral chi-square, noncentrality > 0 (:func:`_ncx2_sf`).
ncx2_sf = _ncx2_sf()


@cache
def _reference_error(df: int) -> float:
    """The :data:`REFERENCE_SHARE` quantile of chi-square with ``df`` degrees of freedom (once per ``df``)."""
    return float(scipy_stats.chi2.ppf(REFERENCE_SHARE, df))


def hotelling_t2(
    window_mean: np.ndarray,
    n: int,
    reference_mean: np.ndarray,
    reference_precision: np.ndarray,
    reference_n: int,
) -> tuple[float, float]:
    """Two-sample Hotelling's T² of a window mean against the reference mean (covariance inverse given).

    Under no drift T² follows (approximately, for large samples) a chi-square distribution with as
    many degrees of freedom as features, so a small shift spread over many features adds up even when
    no single feature stands out. Both means are estimates, hence the effective size n·m/(n+m). The
    p-value holds given the reference (:func:`p_value_given_reference`): every window is tested
    against the same reference mean.
    """
    diff = window_mean - reference_mean
    effective_n = n * reference_n / (n + reference_n)
    t2 = float(effective_n * diff @ reference_precision @ diff)
    return t2, p_value_given_reference(t2, len(diff), reference_n, n)


def two_proportion_z(reference_rate: float, reference_n: int, current_rate: float, current_n: int) -> float:
    """One-sided p-value that the current rate is larger than the reference rate."""
    pooled = (reference_rate * reference_n + current_rate * current_n) / (reference_n + current_n)
    variance = pooled * (1 - pooled) * (1 / reference_n + 1 / current_n)
    if variance <= 0:
        return 1.0 if current_rate <= reference_rate else 0.0
    z = (current_rate - reference_rate) / np.sqrt(variance)
    return float(scipy_stats.norm.sf(z))


def mean_increase_z(reference_mean: float, reference_std: float, reference_n: int, current: np.ndarray) -> float:
    """One-sided p-value that the mean of ``current`` is above the reference mean (Welch-style z)."""
    if len(current) < 2:
        return 1.0
    variance = reference_std**2 / reference_n + float(np.var(current, ddof=1)) / len(current)
    if variance <= 0:
        return 1.0 if float(np.mean(current)) <= reference_mean else 0.0
    z = (float(np.mean(current)) - reference_mean) / np.sqrt(variance)
    return float(scipy_stats.norm.sf(z))


def benjamini_hochberg(p_values: np.ndarray, q: float) -> np.ndarray:
    """Which hypotheses to reject at false discovery rate ``q`` (Benjamini–Hochberg step-up)."""
    m = len(p_values)
    if m == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(p_values)
    thresholds = q * np.arange(1, m + 1) / m
    passed = p_values[order] <= thresholds
    reject = np.zeros(m, dtype=bool)
    if passed.any():
        last = int(np.max(np.nonzero(passed)[0]))
        reject[order[: last + 1]] = True
    return reject


def quadratic_form_sf(
    x: float | np.ndarray, eigenvalues: np.ndarray, noncentralities: np.ndarray, degrees: np.ndarray | None = None
) -> np.ndarray:
    """P(Σ λ_i χ²_{d_i}(δ_i) > x) by the saddlepoint approximation (Lugannani–Rice; Kuonen 1999).

    ``eigenvalues`` are the λ_i (positive), ``degrees`` the d_i (1 each if not given); each row of
    ``noncentralities`` one set of δ_i, ``x`` one value or one per row (one answer per row). The
    saddlepoint keeps its relative accuracy far into the tail, where a few large weights decide
    (moment fits, a gamma or Liu, Tang & Zhang's four-cumulant chi-square, are there too light: 2e-6
    for a true 1e-5 on the load generator's embedding spectrum, against the saddlepoint's 1.0e-5).

    >>> float(quadratic_form_sf(10.83, np.array([1.0]), np.zeros((1, 1)))[0].round(4))  # one χ²_1: 0.001
    0.001
    >>> f"{quadratic_form_sf(40.0, np.ones(4), np.array([[0.0, 0.0, 0.0, 5.0]]))[0]:.3g}"
    '0.000106'
    >>> f"{quadratic_form_sf(40.0, np.ones(1), np.array([[5.0]]), np.array([4.0]))[0]:.3g}"  # the same, as one term
    '0.000106'
    >>> f"{scipy_stats.ncx2.sf(40.0, 4, 5.0):.3g}"  # exact
    '0.000106'

    References
    ----------
    .. [1] Kuonen, D. (1999). Saddlepoint approximations for distributions of quadratic forms in
       normal variables. Biometrika 86(4), 929-935.
    """
    weights, shifts = eigenvalues[None, :], np.atleast_2d(noncentralities)
    counts = np.ones_like(weights) if degrees is None else np.asarray(degrees, dtype=float)[None, :]
    x = np.broadcast_to(np.asarray(x, dtype=float), len(shifts))
    positive = x > 0
    x = np.where(positive, x, 1.0)  # P(Q > x ≤ 0) = 1

    def cumulants(s: np.ndarray, log: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """K(s) (if ``log``), K'(s), K''(s) of the quadratic form, at one s per row."""
        r = 1.0 / (1.0 - 2.0 * s[:, None] * weights)
        k0 = (0.5 * counts * np.log(r) + shifts * weights * s[:, None] * r).sum(axis=1) if log else s
        k1 = (weights * r * (counts + shifts * r)).sum(axis=1)
        k2 = (2.0 * weights**2 * r**2 * (counts + 2.0 * shifts * r)).sum(axis=1)
        return k0, k1, k2

    # The saddlepoint K'(s) = x, by Newton's method on y = 1 / (1 - 2 s max λ), kept in a bracket:
    # K' rises from 0 (s → -∞, y → 0; below x once -s > (Σd + Σδ) / 2x) to ∞ (s → 1 / 2 max λ,
    # y → ∞), near the pole about linearly in y.
    top = eigenvalues.max()
    low = 1.0 / (1.0 + top * (counts.sum() + shifts.sum(axis=1)) / x)
    high = np.full(len(shifts), np.inf)
    y = np.ones(len(shifts))
    for _ in range(100):
        s = (1.0 - 1.0 / y) / (2.0 * top)
        _, k1, k2 = cumulants(s, log=False)
        above = k1 > x
        high, low = np.where(above, y, high), np.where(above, low, y)
        if np.all(np.abs(k1 - x) <= 1e-6 * x):  # the tail is stationary in s there: ample
            break
        newton = y - (k1 - x) * 2.0 * top * y**2 / k2
        fallback = np.where(np.isinf(high), 2.0 * low, 0.5 * (low + high))
        y = np.where((newton > low) & (newton < high), newton, fallback)
    s = (1.0 - 1.0 / y) / (2.0 * top)
    k0, _, k2 = cumulants(s)
    w = np.sign(s) * np.sqrt(np.maximum(2.0 * (s * x - k0), 0.0))
    u = s * np.sqrt(k2)
    at_mean = np.abs(w) < 1e-4  # the formula's limit: one half less the skewness's share
    k3 = (8.0 * weights**3 * (counts + 3.0 * shifts)).sum(axis=1)
    k2_0 = (2.0 * weights**2 * (counts + 2.0 * shifts)).sum(axis=1)
    limit = 0.5 - k3 / (6.0 * np.sqrt(2.0 * np.pi) * k2_0**1.5)
    safe_w, safe_u = np.where(at_mean, 1.0, w), np.where(at_mean, 1.0, u)
    tail = scipy_stats.norm.sf(safe_w) + scipy_stats.norm.pdf(safe_w) * (1.0 / safe_u - 1.0 / safe_w)
    result: np.ndarray = np.where(positive, np.clip(np.where(at_mean, limit, tail), 0.0, 1.0), 1.0)
    return result


def bounding_spectrum(
    eigenvalues: np.ndarray, exact_share: float, ratio: float, most_exact: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fewer weights whose quadratic form's tail bounds the given one's from above: (starts, weights).

    The fewest largest eigenvalues that carry ``exact_share`` of their sum (at most ``most_exact``)
    stay as they are; the smaller ones are cut, largest first, into runs within ``ratio`` of their
    first, each raised to its first: at most ``most_exact`` + log(range) / log(``ratio``) weights.
    ``starts`` are the runs' first places in the eigenvalues sorted largest first (every leading one
    its own run, for ``np.add.reduceat``), ``weights`` those first eigenvalues; a run's degrees are
    its length. The direction is exact, not the approximation's: λ χ²_1(δ) grows stochastically
    with λ, so raising weights of independent terms can only raise P(Q > x), and the terms of a run,
    now of one weight, add up to one noncentral chi-square, ``weight · χ²_{length}(Σ δ)``. The bound
    is tight where the tail is decided, by the largest weights: the raised ones carry a small share.

    >>> eigenvalues = np.array([4.0, 2.0, 1.0, 0.5, 0.45, 0.4, 0.3, 0.1, 0.09])
    >>> starts, weights = bounding_spectrum(eigenvalues, 0.75, 1.5, 256)
    >>> starts.tolist(), weights.tolist()  # 4, 2, 1 exact (7 of 8.84); runs 0.5 0.45 0.4 | 0.3 | 0.1 0.09
    ([0, 1, 2, 3, 6, 7], [4.0, 2.0, 1.0, 0.5, 0.3, 0.1])
    >>> x, shifts = 12.0, np.full((1, 9), 0.2)
    >>> full = quadratic_form_sf(x, eigenvalues, shifts)
    >>> bound = quadratic_form_sf(x, weights, np.add.reduceat(shifts, starts, axis=1), np.diff([*starts, 9]))
    >>> bool(full < bound < 1.2 * full)
    True
    """
    ordered = np.sort(eigenvalues)[::-1]
    exact = min(int(np.searchsorted(np.cumsum(ordered), exact_share * ordered.sum())) + 1, most_exact)
    starts = list(range(min(exact + 1, len(ordered))))  # the first of the rest starts the first run
    for i in range(len(starts), len(ordered)):
        if ordered[i] * ratio < ordered[starts[-1]]:
            starts.append(i)
    first = np.array(starts, dtype=int)
    return first, ordered[first]


class MmdReference:
    """A kernel two-sample test (MMD) of windows against one fixed reference sample of vectors (rows).

    The kernel is Gaussian (RBF), its bandwidth the median distance between reference points (the
    median heuristic). The window's statistic is the biased MMD² to the whole reference.

    Its p-value holds given the reference, for :data:`REFERENCE_SHARE` of references, as
    :func:`p_value_given_reference` for the chi-square tests: a monitor tests every window against
    the same reference, whose own error (its mean embedding's distance to the population's) is shared
    by all windows. In the RKHS, with the kernel covariance's eigenvalues λ_i (estimated from the
    reference's doubly centred kernel matrix, once), ``n · MMD² = Σ λ_i (Z_i - √(n/m) W_i)²``, Z the
    window's error and W the reference's, both standard normal (Gretton et al. 2009's spectral null
    when W is random too). Given W it is a quadratic form in noncentral normals, whose tail
    :func:`quadratic_form_sf` approximates by the saddlepoint (Kuonen 1999), over fewer weights
    whose tail bounds it from above (:func:`bounding_spectrum`); the p-value is that tail at its
    :data:`REFERENCE_SHARE` quantile over :data:`REFERENCE_DRAWS` seeded draws of W (drawn once per
    window size ``n``), so for 95 % of references a window's rate is within the level (Gandy &
    Kvaløy 2013's guarantee for the rank CUSUMs' thresholds).

    ``given_reference=False`` (a one-off comparison, ``profile diff``): the null over ``draws`` seeded
    random splits of the reference into ``n`` points and the other ones (computed once per ``n``),
    fitted by the gamma distribution with its mean and variance (Gretton et al. 2009). A split holds
    both the reference's and the window's sampling noise (a permutation test conditional on a reused
    sample does not), so this p-value is calibrated averaged over references, not given one: on the
    load generator's embedding, 12 of 30 references put more than 1 % of their windows below 0.01
    (up to 4.4 %; given the reference none, at most 1.0 %; ``tests/unit/test_window_calibration.py``),
    and the gamma's tail is too light so far out as Benjamini–Hochberg over many tests looks. ``n``
    should be a small part of the reference.

    >>> rng = np.random.default_rng(0)
    >>> test = MmdReference(rng.normal(0, 1, (2_000, 16)))
    >>> mmd2, p_value = test(rng.normal(0, 1, (250, 16)))
    >>> abs(mmd2) < 0.005, p_value > 0.01, round(test.bandwidth, 1)  # √(2·16) = 5.7
    (True, True, 5.5)
    >>> mmd2, p_value = test(rng.normal(0.3, 1, (250, 16)))
    >>> mmd2 > 0.02, p_value < 1e-6
    (True, True)

    References
    ----------
    .. [1] Gretton, A., Fukumizu, K., Harchaoui, Z., Sriperumbudur, B. K. (2009). A fast, consistent
       kernel two-sample test. Advances in Neural Information Processing Systems 22.
    .. [2] Kuonen, D. (1999). Saddlepoint approximations for distributions of quadratic forms in
       normal variables. Biometrika 86(4), 929-935.
    .. [3] Gandy, A. & Kvaløy, J. T. (2013). Guaranteed conditional performance of control charts via
       bootstrap methods. Scandinavian Journal of Statistics 40(4), 647-668.
    """

    def __init__(self, reference: np.ndarray, draws: int = 400, seed: int = 0) -> None:
        self.reference = np.asarray(reference, dtype=float)
        self.m = len(self.reference)
        if self.m < 8:
            raise ValueError("the reference needs at least 8 vectors")
        self.draws = draws
        self.seed = seed
        pairs = self.reference[np.random.default_rng(seed).integers(0, self.m, (2, 20_000))]
        self.bandwidth = float(np.sqrt(np.median(((pairs[0] - pairs[1]) ** 2).sum(axis=1)))) or 1.0
        self.row_sums = np.concatenate(
            [self._kernel(self.reference[i : i + 500], self.reference).sum(axis=1) for i in range(0, self.m, 500)]
        )  # each reference point's kernel sum over the reference (its diagonal 1 included)
        self._null: dict[int, tuple[float, float]] = {}
        self._given: dict[int, np.ndarray] = {}

    def _kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        kernel: np.ndarray = cdist(a, b, "sqeuclidean")  # one thread, no a² + b² - 2ab cancellation
        kernel *= -0.5 / self.bandwidth**2
        np.exp(kernel, out=kernel)
        return kernel

    def __call__(self, window: np.ndarray, given_reference: bool = True) -> tuple[float, float]:
        """(unbiased MMD², p-value) of ``window`` (at most half the reference) against the reference.

        The p-value holds given the reference, for :data:`REFERENCE_SHARE` of references;
        ``given_reference=False``: the gamma fit of the split null, calibrated averaged over
        references, for a one-off comparison.
        """
        n = len(window)
        if not 2 <= n <= self.m // 2:
            raise ValueError(f"a window of 2 to {self.m // 2} vectors, not {n}")
        syy, sxy = self._kernel(window, window).sum(), self._kernel(window, self.reference).sum()
        sxx = self.row_sums.sum()
        biased = sxx / self.m**2 + syy / n**2 - 2.0 * sxy / (self.m * n)
        unbiased = (sxx - self.m) / (self.m * (self.m - 1)) + (syy - n) / (n * (n - 1)) - 2.0 * sxy / (self.m * n)
        return float(unbiased), self.p_value(float(biased), n, given_reference)

    def p_value(self, biased: float, n: int, given_reference: bool = True) -> float:
        """The p-value of a biased MMD² of a window of ``n`` vectors (see :meth:`__call__`)."""
        if given_reference:
            return self._p_value_given_reference(biased, n)
        mean, variance = self._null_moments(n)
        return float(scipy_stats.gamma.sf(biased, mean**2 / variance, scale=variance / mean)) if variance > 0 else 1.0

    @cached_property
    def eigenvalues(self) -> np.ndarray:
        """The kernel covariance's spectrum, estimated: eigenvalues of the doubly centred kernel matrix / ``m``."""
        mean = self.row_sums / self.m
        centred = self._kernel(self.reference, self.reference) - mean[:, None] - mean[None, :] + mean.mean()
        values: np.ndarray = np.linalg.eigvalsh(centred) / self.m
        kept: np.ndarray = values[values > 1e-9 * max(values.max(), 0.0)]
        return kept

    @cached_property
    def _spectrum(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The p-value's weights: where their runs start, their eigenvalues and degrees (:func:`bounding_spectrum`)."""
        starts, weights = bounding_spectrum(self.eigenvalues, SPECTRUM_EXACT_SHARE, SPECTRUM_RATIO, SPECTRUM_MOST_EXACT)
        return starts, weights, np.diff(np.append(starts, len(self.eigenvalues)))

    def _p_value_given_reference(self, biased: float, n: int) -> float:
        """P(biased MMD² ≥ ``biased`` | the reference), for :data:`REFERENCE_SHARE` of references.

        With the kernel covariance's eigenvalues λ_i, a window's error and the reference's are
        independent Gaussians in the RKHS, ``n · MMD² = Σ λ_i (Z_i - √(n/m) W_i)²``: given the
        reference (its W) a quadratic form in noncentral normals (:func:`quadratic_form_sf`). The
        p-value is its tail at the :data:`REFERENCE_SHARE` quantile over seeded draws of W, each tail
        bounded from above by fewer weights (:func:`bounding_spectrum`; ~140 of ~2,000 on the load
        generator's embedding, within 2 % of the full spectrum's p-value).
        """
        if not len(self.eigenvalues):
            return 1.0  # every reference vector the same
        starts, weights, degrees = self._spectrum
        if n not in self._given:
            rng = np.random.default_rng([self.seed, n, 1])
            shifts = n / self.m * rng.normal(0.0, 1.0, (REFERENCE_DRAWS, len(self.eigenvalues))) ** 2
            # a run's noncentrality: its terms' sum (the eigenvalues rise, the runs fall)
            self._given[n] = np.add.reduceat(shifts[:, ::-1], starts, axis=1)
        tails = quadratic_form_sf(n * biased, weights, self._given[n], degrees)
        return float(np.quantile(tails, REFERENCE_SHARE))

    def _null_moments(self, n: int) -> tuple[float, float]:
        """Mean and variance of the biased MMD² between ``n`` reference points and the other ones."""
        if n not in self._null:
            rng = np.random.default_rng([self.seed, n])
            rest, total = self.m - n, self.row_sums.sum()
            null = np.empty(self.draws)
            for d in range(self.draws):
                chosen = rng.choice(self.m, n, replace=False)
                points = self.reference[chosen]
                syy = self._kernel(points, points).sum()
                sxy = self.row_sums[chosen].sum() - syy  # chosen to the rest
                sxx = total - 2.0 * sxy - syy  # the rest to the rest
                null[d] = sxx / rest**2 + syy / n**2 - 2.0 * sxy / (rest * n)
            self._null[n] = float(null.mean()), float(null.var())
        return self._null[n]
