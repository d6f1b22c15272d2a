"""Alternatives from the reference's own density, for a feature with several modes.

The bank of :data:`~driftwarden.core.detectors.sequential.BANK` states its alternatives on the normal scores
``z`` of the ranks: a location change there is a change of location for a one-mode feature, whatever its shape.
For a feature with two modes (two customer segments, two operating regimes) a shift of both modes together, or
each mode widening, is a saw-tooth on the rank scale, which no alternative of the bank matches: on issue 10's
shape corpus the bimodal feature's changes took 1.5-2.9 x Lorden's bound, its best CUSUM using 32-68 % of the
change's information (1.0-1.5 x with these). Here the alternatives are the reference's own density moved: shifted
by a share of its scale either way, and blurred (each mode wider, as added noise makes it), and its modes' weights
moving (the kernels of the quantiles above the density's lowest point between two modes weighted by an odds ratio
against those below: a mixture's weights changing), each a density of the ranks against the reference's:

``g(u) = f_alt(Q(u)) / f(Q(u))``, binned as the bank is (:data:`~driftwarden.core.detectors.sequential.U_EDGES`;
values beyond the reference's range share its tail bins as the detector ranks them), normalized so that its
mean under no change is exactly 1 on the detector's own rank scale, with ``f`` the reference's density smoothed
(a Gaussian kernel over the profile's quantiles, Silverman's bandwidth [1]_) and ``f_alt`` the same density
shifted or with a wider kernel. A one-mode reference gets none: there they are close to the bank's location and
spread alternatives and would only cost every threshold a little more (Bonferroni).

The alternative comes from the reference the ranks are taken against, so its own sampling error enters twice;
with the density smoothed more than an estimate would be (:data:`SMOOTHING`: a bandwidth of ~0.25 of the feature's
scale at 5,000 values) that correlation is small against the threshold's margin for the reference's sampling error
(:func:`~driftwarden.core.detectors.sequential.cusum_threshold`; the likelihood ratio bounded: ``sqrt(chi^2) / KL``
as the ends', times :data:`SPREAD`), and the false-alarm tests measure it (``tests/unit/test_rank_cusum.py``).

>>> rng = np.random.default_rng(0)
>>> two = np.where(rng.random(5_000) < 0.6, rng.normal(0, 1, 5_000), rng.normal(4, 1, 5_000))
>>> specs, table = shape_bank(ReferenceCdf(np.quantile(two, np.linspace(0, 1, 1_000)), 5_000), 5_000)
>>> [spec.name for spec in specs][:2], table.shape[1]
(['reference density shifted +0.2 of its scale', 'reference density shifted -0.2 of its scale'], 12)
>>> shape_bank(ReferenceCdf(np.quantile(rng.normal(0, 1, 5_000), np.linspace(0, 1, 1_000)), 5_000), 5_000)[0]
()

References
----------
.. [1] Silverman, B. W. (1986). Density Estimation for Statistics and Data Analysis. Chapman & Hall, 3.4.2.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.special import ndtr

from driftwarden.core.detectors.sequential import U_EDGES, RatioSpec, ReferenceCdf, bin_masses, fixed_point, ratio_spec
from driftwarden.core.stats import binary_exponent, moments

#: The shifts (either way) and the blurs (the kernel's added standard deviation), in shares of the reference's scale.
SHIFTS, BLURS = (0.2, 0.4), (0.35, 0.6)
#: The statistic of the modes' weights' CUSUMs.
MODES = "modes"
#: The odds of the values above a valley between two modes against those below, in the alternatives of the modes'
#: weights (a mixture's weights moving).
MODE_ODDS = (1.5, 2.0, 4.0, 0.67, 0.5, 0.25)
#: A mode counts when its smoothed density is at least this share of the highest one's, and two modes are two when
#: the density between them falls below ``DIP`` of the lower one.
MODE_HEIGHT, DIP = 0.1, 0.8
#: The kernel's bandwidth over Silverman's rule of thumb: smoother than the best estimate of the density, so that the
#: alternatives hardly follow the reference's own sampling error (over 100 two-mode references of 5,000 values the
#: mean of ``sqrt(n) (1 - theta)`` of the smallest blur was +13.6 at 1 x, a bias of 0.6 of its spread that raised the
#: false-alarm rate with the threshold; at 1.5 x every alternative's is within 0.12 of its spread).
SMOOTHING = 1.5
#: The reference spread (:func:`~driftwarden.core.detectors.sequential.cusum_threshold`) over the analytic
#: ``sqrt(chi^2) / KL``: the measured standard deviation of ``sqrt(n) (1 - theta)`` was 1.00-1.16 x the analytic one,
#: over 100 two-mode references of 5,000 and of 1,000 values, and its mean up to 0.12 of it (the bank's own
#: alternatives: 1.1-1.2 x, BANK's comment).
SPREAD = 1.25
#: The same for the modes' weights, whose alternatives reweight the reference's own kernels: the measured standard
#: deviation was 0.99 x the analytic one (100 references of 5,000 values), its mean within 0.2 of it.
WEIGHTS_SPREAD = 1.1
#: The cells the smoothed density is looked at in for its modes.
GRID = 512


def _scale(q: np.ndarray) -> float:
    """Silverman's robust scale of the reference: the smaller of its standard deviation and IQR / 1.349."""
    levels = np.linspace(0, 1, len(q))
    iqr = float(np.interp(0.75, levels, q) - np.interp(0.25, levels, q))
    std = moments(q)[1]
    return min(std, iqr / 1.349) if iqr > 0 else std


def _kernel_cdf(x: np.ndarray, q: np.ndarray, bandwidth: float) -> np.ndarray:
    """The distribution function of the Gaussian kernel mixture over the quantiles ``q`` at the points ``x``."""
    out = np.empty(len(x))
    for start in range(0, len(x), 256):  # (a block of points by all quantiles at a time)
        block = x[start : start + 256]
        out[start : start + 256] = ndtr((block[:, None] - q[None, :]) / bandwidth).mean(axis=1)
    return out


def _valleys(q: np.ndarray, bandwidth: float) -> list[float]:
    """Where the smoothed density is lowest between two of its modes (:data:`MODE_HEIGHT`, :data:`DIP`): none for a
    density with one mode."""
    # (binned: the quantiles counted on the grid, then the kernel sampled on it; the exact mixture at every grid point
    # cost ~10 ms a stream, a sixth of the core's CPU on the peers rows, for the one-mode references that are most)
    # (a reference beyond ±2^1000 is looked at scaled down by a power of two, exactly: the grid spanning ±1e308 would
    # be infinitely wide)
    exponent = max(0, binary_exponent(q) - 1000)
    if exponent:
        return [math.ldexp(v, exponent) for v in _valleys(np.ldexp(q, -exponent), math.ldexp(bandwidth, -exponent))]
    grid = np.linspace(q[0] - 3 * bandwidth, q[-1] + 3 * bandwidth, GRID + 1)
    step = grid[1] - grid[0]
    reach = min(math.ceil(4 * bandwidth / step), GRID // 2)  # (beyond 4 bandwidths, or the grid, nothing counts)
    offsets = np.minimum(np.abs(np.arange(-reach, reach + 1) * step / bandwidth), 40.0)  # (a cell of 1e305 bandwidths)
    density = np.convolve(np.histogram(q, grid)[0].astype(float), np.exp(-0.5 * offsets**2), "same")
    peaks = [i for i in range(1, len(density) - 1) if density[i - 1] < density[i] >= density[i + 1]]
    peaks = [i for i in peaks if density[i] >= MODE_HEIGHT * density.max()]
    kept = peaks[:1]
    for i in peaks[1:]:
        last = kept[-1]
        if density[last:i].min() <= DIP * min(density[last], density[i]):
            kept.append(i)
        elif density[i] > density[last]:
            kept[-1] = i
    middle = (grid[1:] + grid[:-1]) / 2  # (where each of the density's steps is)
    return [float(middle[a + int(np.argmin(density[a:b]))]) for a, b in itertools.pairwise(kept)]


def shape_bank(cdf: ReferenceCdf, reference_n: int) -> tuple[tuple[RatioSpec, ...], np.ndarray]:
    """The CUSUMs of a reference with several modes and no ties, and their increments (fixed point) by the bank's
    bins of ``u`` (rows) and CUSUM (columns); none, and a table of no columns, for any other reference."""
    q = cdf.q
    empty = ((), np.zeros((len(U_EDGES) + 1, 0), np.int64))
    if cdf.discrete or len(q) < 3 or np.any(np.diff(q) <= 0):
        return empty
    scale = _scale(q)
    bandwidth = SMOOTHING * 0.9 * scale * reference_n ** (-0.2)
    valleys = _valleys(q, bandwidth) if bandwidth > 0 else []
    if not valleys:
        return empty
    null = np.diff(np.concatenate([[0.0], U_EDGES, [1.0]]))  # the detector's: u uniform

    def masses(points: np.ndarray, kernel: float, shift: float = 0.0) -> np.ndarray:
        """The bins' masses of the kernel mixture over ``points`` (moved by ``shift``), as a share of all quantiles."""
        return bin_masses(cdf, lambda x: _kernel_cdf(x - shift, points, kernel)) * (len(points) / len(q))

    base = np.maximum(masses(q, bandwidth), 1e-12)
    # (name, statistic, direction, the alternative's density of u by bin over the null's, the valley it is about)
    ratios: list[tuple[str, str, str, np.ndarray, float | None]] = []
    for share, sign in itertools.product(SHIFTS, (1, -1)):
        moved = np.maximum(masses(q, bandwidth, sign * share * scale), 1e-12)
        name = f"reference density shifted {sign * share:+g} of its scale"
        ratios.append((name, "location", "up" if sign > 0 else "down", moved / base, None))
    for share in BLURS:
        blurred = np.maximum(masses(q, math.hypot(bandwidth, share * scale)), 1e-12)
        ratios.append((f"reference density blurred by {share:g} of its scale", "spread", "up", blurred / base, None))
    for valley in valleys:  # the modes' weights: the kernels of the quantiles above a valley against those below
        upper = masses(q[q > valley], bandwidth)
        lower = np.maximum(base - upper, 0.0)
        for odds in MODE_ODDS:
            ratios.append((f"weight above {valley:.4g} odds x{odds:g}", MODES, "up" if odds > 1 else "down",
                           np.maximum(lower + odds * upper, 1e-12) / base, valley))  # fmt: skip
    specs, columns = [], []
    for name, statistic, direction, ratio, about in ratios:
        spread = WEIGHTS_SPREAD if statistic == MODES else SPREAD
        spec, steps = ratio_spec(name, statistic, direction, null, ratio, spread, about)
        specs.append(spec)
        columns.append(fixed_point(steps))
    return tuple(specs), np.ascontiguousarray(np.array(columns).T)
