"""Distribution-free sequential tests: ranks against the reference, then CUSUMs with calibrated thresholds.

Numpy, no state of its own; :class:`~driftwarden.core.detectors.streaming.RankCusumDetector`
holds the state. Three steps per value ``x``:

1. **Randomized probability integral transform** against the reference's quantile summary
   (:class:`ReferenceCdf`): ``u = F(x-) + V (F(x) - F(x-))`` with ``V`` uniform, so ``u`` is
   uniform on (0, 1) under no change whatever the feature's shape, ties (counts, zero inflation,
   clipping) included [1]_. ``V`` is a counter-based hash (splitmix64) of the value's position and a
   seed: reproducible, and a restored detector draws the same numbers.
2. **Normal scores** ``z = Φ⁻¹(u)``: exactly N(0, 1) under no change.
3. **A bank of CUSUMs** [2]_ (:data:`BANK`), each the log-likelihood ratio of one explicit
   alternative density of ``z`` against N(0, 1): location up/down at two sizes, spread up/down,
   a heavier upper tail, a heavier lower tail, a small component beyond either side (a share of the
   scores from a normal further out); and piecewise-constant densities of ``u`` at the ends
   of the rank scale: an end emptied (a support shift: no values below a new minimum), more mass in
   the last 2 % or 6 % (a small far-away mixture component), both ends heavier or lighter; and smooth tilts
   of ``u``'s density moving mass between the middle of the rank scale and both ends. A
   location change of a lognormal amount, a count rate change, a mixture weight moving, a tail
   growing: each is a change of ``u``'s density, and the CUSUM whose alternative is closest (in
   Kullback–Leibler divergence) finds it at nearly the optimal delay ``h / KL`` (Lorden [3]_).
   Where the reference has an atom at an end of its range (zero inflation, clipping), the location
   and spread CUSUMs also run on the ranks within the rest (:func:`continuous_part`): a change of the
   continuous part alone (the spread of the amounts above the zeros) is a location or spread change
   there, and diluted by the atom's randomized ranks in ``z``.

   The increments are binned (:data:`BY_BIN`, :func:`bins`): each CUSUM's increment on a bin of ``z`` (1/64 σ,
   split where an increment jumps) is the mean of its log-likelihood ratio over the bin under no
   change, so the null drift is exact and ``E[e^X] <= 1`` (no false-alarm rate rises; the drift under
   each alternative is at most 0.01 % smaller). The bins' edges map back to edges in ``x`` once per
   reference (:class:`RankBins`), so the hot path is a binary search, then a table lookup and the
   CUSUMs in fixed point in one compiled loop (:func:`~driftwarden.core.compiled.lindley`).

Thresholds follow from a false-alarm budget (:func:`cusum_threshold`): for a mean number of values
between false alarms ``arl``, Siegmund's corrected approximation for the location CUSUMs [4]_
(exact for Gaussian increments, which ``z`` gives), and the same form with a measured overshoot for
the others; plus a margin for the reference being a finite sample (its own sampling error acts
like a small change: for a reference of ``n`` values the threshold grows until the false-alarm rate
is within budget for 95 % of references, i.e. given the reference the monitor has).

>>> cdf = ReferenceCdf([0.0, 0.0, 0.0, 1.0, 2.0, 3.0], reference_n=1_000)
>>> u = cdf.transform(np.array([0.0, 0.0, 0.0, 2.5, -1.0]), first=0, seed=1)
>>> bool(np.all(u[:3] <= 0.5)), round(float(u[3]), 2), bool(u[4] < 0.001)
(True, 0.9, True)
>>> [spec.name for spec in BANK][:3]
['location+0.25', 'location-0.25', 'location+0.7']
>>> round(cusum_threshold(BANK[0], arl=1e6, reference_n=5_000), 1)
12.5
>>> cusum_threshold(BANK[0], arl=1e6, reference_n=100)  # too small a reference for 0.25σ at this rate
inf

References
----------
.. [1] Brockwell, A. E. (2007). Universal residuals: a multivariate transformation. Statistics &
   Probability Letters 77(14), 1473-1478 (the randomized probability integral transform).
.. [2] Page, E. S. (1954). Continuous inspection schemes. Biometrika 41(1/2), 100-115.
.. [3] Lorden, G. (1971). Procedures for reacting to a change in distribution. Annals of
   Mathematical Statistics 42(6), 1897-1908.
.. [4] Siegmund, D. (1985). Sequential Analysis: Tests and Confidence Intervals. Springer, ch. X.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Protocol

import numpy as np
from scipy.optimize import brentq
from scipy.special import ndtr, ndtri

from driftwarden.core.compiled import (
    GAMMA,
    MIX1,
    MIX2,
    S11,
    S27,
    S30,
    S31,
    apart_bins,
    numeric_bins,
    ranks_of,
    search_edges,
)
from driftwarden.core.stats import REFERENCE_SHARE, binary_exponent

_MASK64 = (1 << 64) - 1


#: The heavy-tail alternative: a share ``w`` of values from N(0, s^2) (a scale mixture, like Student's t).
TAILS_SHARE, TAILS_SCALE = 0.1, 2.0


def _tails_score(z: np.ndarray) -> np.ndarray:
    """log(1 - w + (w / s) exp(z^2 (1 - s^-2) / 2)): heavier tails on both sides, the centre kept."""
    w, s = TAILS_SHARE, TAILS_SCALE
    score: np.ndarray = np.log1p(-w + (w / s) * np.exp(np.minimum(z * z * (1 - s**-2) / 2, 700.0)))
    return score


class Alternative(Hashable, Protocol):
    """What a CUSUM's threshold needs of its alternative (:func:`cusum_threshold`; hashable: thresholds are cached)."""

    @property
    def name(self) -> str: ...
    @property
    def statistic(self) -> str: ...
    @property
    def direction(self) -> str: ...
    @property
    def kl(self) -> float: ...
    @property
    def overshoot(self) -> float: ...
    @property
    def reference_spread(self) -> float: ...


@dataclass(frozen=True)
class CusumSpec:
    """One CUSUM: the log-likelihood ratio ``c . features(z)`` (:func:`features`).

    ``overshoot`` (rho) enters the threshold approximation ``ARL = (e^(h+rho) - h - rho - 1) / KL``.
    ``reference_spread`` (s): how much a reference of ``n`` values moves this CUSUM's false-alarm rate.
    Given a reference, the rate is ``e^(-theta (h + rho))`` up to a constant, ``theta`` the root of
    ``E[e^(theta X)] = 1`` for the increments ``X`` under that reference (1 for the true distribution);
    over references, ``sqrt(n) (1 - theta)`` has standard deviation ``s``.
    """

    name: str
    statistic: str  # location, spread, upper_tail, lower_tail, tails
    direction: str  # up or down
    coefficients: tuple[float, ...]  # one per row of :func:`features`
    overshoot: float
    reference_spread: float

    @property
    def kl(self) -> float:
        """KL divergence of the null from the alternative: minus the null mean of the increment."""
        return -float(np.dot(self.coefficients, _MEANS))


def _means() -> np.ndarray:
    """E[f] for f = features(z), z ~ N(0, 1), by quadrature."""
    grid = np.linspace(-12, 12, 480_001)
    weight = np.exp(-grid * grid / 2) / math.sqrt(2 * math.pi) * (grid[1] - grid[0])
    means: np.ndarray = features(grid) @ weight
    return means


def _location(delta: float, sign: int, reference_spread: float) -> CusumSpec:
    # z ~ N(+-delta, 1): delta z - delta^2/2; Siegmund's overshoot correction 2 x 0.583 delta.
    return CusumSpec(f"location{'+' if sign > 0 else '-'}{delta:g}", "location", "up" if sign > 0 else "down",
                     _padded(-delta * delta / 2, 0, 0, sign * delta, 0, 0, 0), siegmund_overshoot(delta * delta / 2),
                     reference_spread)  # fmt: skip


def _spread(sigma: float, reference_spread: float) -> CusumSpec:
    # z ~ N(0, sigma^2): -ln sigma + z^2 (1 - sigma^-2) / 2.
    a = (1 - sigma**-2) / 2
    kl = (sigma**2 - 1) / 2 - math.log(sigma)
    coefficients = _padded(-math.log(sigma), 0, 0, 0, a, a, 0)
    return CusumSpec(f"spread x{sigma:g}", "spread", "up" if sigma > 1 else "down", coefficients,
                     1.3 * siegmund_overshoot(kl), reference_spread)  # fmt: skip


def _tail(sigma: float, upper: bool, reference_spread: float) -> CusumSpec:
    # One half of N(0, 1) stretched by sigma (a proper density: each half keeps mass 1/2).
    a = (1 - sigma**-2) / 2
    c = -math.log(sigma)
    coefficients = _padded(0, c, 0, 0, a, 0, 0) if upper else _padded(0, 0, c, 0, 0, a, 0)
    side = "upper" if upper else "lower"
    kl = ((sigma**2 - 1) / 2 - math.log(sigma)) / 2
    return CusumSpec(f"{side}_tail x{sigma:g}", f"{side}_tail", "up", coefficients, 1.5 * siegmund_overshoot(kl),
                     reference_spread)  # fmt: skip


def _ends(share: float, ratio: float, side: str, overshoot: float) -> CusumSpec:
    """The density of ``u`` times ``ratio`` on the end(s) of total mass ``share`` (``side``: lower, upper or
    both, half the share each), the rest renormalized: ``ln ratio`` there, ``ln((1 - share ratio) / (1 - share))``
    elsewhere. Bounded likelihood ratio: the reference spread is sqrt(chi^2) / KL of the alternative."""
    inside, outside = math.log(ratio), math.log((1 - share * ratio) / (1 - share))
    lower = END_SHARES.index(share / 2 if side == "both" else share)
    indicators = [0.0] * (2 * len(END_SHARES))
    for end in {"lower": (lower,), "upper": (len(END_SHARES) + lower,), "both": (lower, len(END_SHARES) + lower)}[side]:
        indicators[end] = inside - outside
    rest = (1 - share * ratio) / (1 - share)
    chi2 = share * ratio * ratio + (1 - share) * rest * rest - 1
    kl = share * ratio * inside + (1 - share) * rest * outside
    statistic = "ends" if side == "both" else f"{side}_end"
    name = f"{statistic} {share:g} x{ratio:g}"
    return CusumSpec(name, statistic, "up" if ratio > 1 else "down", _padded(outside, 0, 0, 0, 0, 0, 0, *indicators),
                     overshoot, math.sqrt(chi2) / kl)  # fmt: skip


def _component(shift: float, share: float, overshoot: float, reference_spread: float) -> CusumSpec:
    """A share of the values from N(shift, 1) in normal scores (:data:`COMPONENTS`): a small component away
    from the bulk, as a mixture weight moving towards a far mode does; its log-likelihood ratio is the
    component's row of :func:`features`."""
    side = "upper" if shift > 0 else "lower"
    row = _FIRST_COMPONENT + COMPONENTS.index((shift, share))
    return CusumSpec(f"{side}_tail component {share:g} at {shift:+g}σ", f"{side}_tail", "up",
                     _padded(*[0.0] * row, 1.0), overshoot, reference_spread)  # fmt: skip


def _rank_tilt(theta: float, overshoot: float) -> CusumSpec:
    """The density of ``u`` tilted by ``theta P2(2u - 1)``, ``P2(t) = (3 t^2 - 1) / 2``, normalized: ``theta > 0``
    moves mass smoothly from the middle of the rank scale to both ends, ``theta < 0`` from both ends to the middle
    (Neyman's smooth test's second direction [6]_). Bounded likelihood ratio: the reference spread is
    sqrt(chi^2) / KL of the alternative (both by 64-point Gauss-Legendre quadrature over ``u``).

    .. [6] Neyman, J. (1937). 'Smooth test' for goodness of fit. Skandinavisk Aktuarietidskrift 20, 149-199.
    """
    nodes, weights = np.polynomial.legendre.leggauss(64)
    tilt = theta * (1.5 * nodes * nodes - 0.5)
    psi = math.log(float(weights @ np.exp(tilt)) / 2)
    ratio = np.exp(tilt - psi)  # the alternative's density of u over the null's
    kl, chi2 = float(weights @ (ratio * np.log(ratio))) / 2, float(weights @ (ratio * ratio)) / 2 - 1
    name = f"rank dispersion {'+' if theta > 0 else '-'}{abs(theta):g}"
    return CusumSpec(name, "ends", "up" if theta > 0 else "down", _padded(-psi, *[0.0] * (_RANK_TILT - 1), theta),
                     overshoot, math.sqrt(chi2) / kl)  # fmt: skip


def _padded(*coefficients: float) -> tuple[float, ...]:
    """Coefficients of the first features, zero on the rest (:data:`FEATURES` in all)."""
    return (*coefficients, *[0.0] * (FEATURES - len(coefficients)))


def siegmund_overshoot(kl: float) -> float:
    """Siegmund's overshoot correction of a Gaussian CUSUM with this KL (1.166 delta, delta = sqrt(2 KL))."""
    return 1.166 * math.sqrt(2 * kl)


#: The ends of the rank scale the end CUSUMs look at: ``u < p`` and ``u > 1 - p`` for each ``p``.
END_SHARES = (0.02, 0.06, 0.1, 0.2)
_END_Z = ndtri(np.array(END_SHARES))
#: The small components of :func:`_component`: (shift in σ of the normal scores, share of the values).
COMPONENTS = ((1.75, 0.05), (-1.75, 0.05))
_FIRST_COMPONENT = 7 + 2 * len(END_SHARES)
_RANK_TILT = _FIRST_COMPONENT + len(COMPONENTS)
#: The rows of :func:`features`.
FEATURES = _RANK_TILT + 1


def _component_score(z: np.ndarray, shift: float, share: float) -> np.ndarray:
    """log(1 - w + w exp(a z - a^2 / 2)): a share ``w`` of the scores from N(a, 1), the rest N(0, 1)."""
    score: np.ndarray = np.log1p(-share + share * np.exp(np.minimum(shift * z - shift * shift / 2, 700.0)))
    return score


def features(z: np.ndarray) -> np.ndarray:
    """The rows the CUSUM increments combine: ``1, 1[z>0], 1[z<0], z, z^2 1[z>0], z^2 1[z<0], k(z)`` (``k``
    the heavy-tail score), then ``1[u < p]`` for each of :data:`END_SHARES` and ``1[u > 1 - p]`` for each, then
    the log-likelihood ratio of each small component of :data:`COMPONENTS`, then ``P2(2u - 1)`` (the rank tilts of
    :func:`_rank_tilt`)."""
    components = [_component_score(z, shift, share) for shift, share in COMPONENTS]
    t = 2 * ndtr(z) - 1
    return np.vstack([_moment_features(z), _tails_score(z), z < _END_Z[:, None], z > -_END_Z[:, None], *components,
                      1.5 * t * t - 0.5])  # fmt: skip


def _moment_features(z: np.ndarray) -> np.ndarray:
    """The first :data:`MOMENT_FEATURES` rows of :func:`features`, all that location and spread CUSUMs use."""
    positive = z > 0
    square = z * z
    return np.stack([np.ones_like(z), positive, ~positive, z, np.where(positive, square, 0.0),
                     np.where(positive, 0.0, square)])  # fmt: skip


MOMENT_FEATURES = 6


_MEANS = _means()

#: The CUSUMs every numeric stream runs: location and spread at two sizes each way, each tail at two
#: sizes, and heavier tails on both sides at once (a scale mixture); then the ends of the rank scale
#: (:func:`_ends`): each end emptied to a tenth of its mass over the last 2 %, 6 % or 20 % (a support
#: shift), the last 2 % four times and the last 6 % twice as full (a small far-away component), and both
#: ends (10 % each) 1.5 or 0.6 times as full (mass moving between the middle and the ends, as a
#: clipped feature's spread does). Overshoots: Siegmund's for location (exact for Gaussian increments);
#: for spread and one-sided tails the same form scaled by 1.3 and 1.5, 1.4 for the two-sided tails, 0.6
#: for the emptied ends and 0.2 for the fuller ones, fitted by simulation (measured ARL 0.8-1.25 times the
#: target at 3e3, 3e4; 0.62-1.13 at 1e5, 1e6; the ends 0.86-1.5 at 3e3, 3e4). Reference spreads: the
#: standard deviation of sqrt(n) (1 - theta) over 150 references of 5,000 and 80 of 1,000 values (the
#: larger; the two sides of a mirror pair pooled); the randomized ranks make it the same for any
#: continuous shape. Analytically it is sqrt(chi^2(alternative || null)) / KL(alternative || null) for a
#: large reference (8.1 for location 0.25; what the ends use, their likelihood ratios being bounded),
#: unbounded for the alternatives whose likelihood ratio grows like e^(z^2 / 4) or faster: there the
#: reference's extremes set it.
#: Then (issue 10's shape corpus: 4 of 900 changes missed at KL 0.02 without them) location +-0.15 sigma, for
#: changes whose mean normal score moves little although their KL does not (a bimodal feature's modes moving
#: together: a saw-tooth in ranks), and a small component beyond either side (:func:`_component`: 5 % of the
#: scores from N(+-1.75, 1), a mixture weight moving towards a far mode; overshoot 0.3 fitted as above, measured
#: ARL 0.66-0.95 times the target at overshoot 0.2 and 1.04-1.42 at 0.6; reference spread 16.6 measured as
#: above (the analytic one: 18.9); further out the reference's extremes set it: 23-25 for 2 % at 2.5 or 3).
#: Then four rank tilts (:func:`_rank_tilt`; issue 10's efficiency analysis, docs/benchmarks.md): the density of
#: ``u`` tilted by ``theta P2(2u - 1)``, theta +-0.44 and +-0.87 (KL 0.019-0.081), mass moving smoothly from the
#: middle of the rank scale to both ends or back: a clipped feature's spread, mass concentrating into a middle mode.
#: No CUSUM of the bank had that direction in ``u``: spread in ``z`` puts its weight on the far tails, the ends
#: CUSUMs on steps at 10 %. Overshoot 0.3 (on exact ranks the measured ARL is 0.90-1.13 times the target at 3e3
#: and 3e4, ~3,000 alarms each); reference spread analytic, the likelihood ratio being bounded.
BANK: tuple[CusumSpec, ...] = (
    _location(0.25, 1, 8.3),
    _location(0.25, -1, 8.3),
    _location(0.7, 1, 3.3),
    _location(0.7, -1, 3.3),
    _spread(1.15, 11.3),
    _spread(1.5, 5.3),
    _spread(0.87, 9.8),
    _spread(0.7, 3.9),
    _tail(1.4, upper=True, reference_spread=8.3),
    _tail(1.4, upper=False, reference_spread=8.3),
    _tail(2.2, upper=True, reference_spread=7.5),
    _tail(2.2, upper=False, reference_spread=7.5),
    CusumSpec("tails", "tails", "up", _padded(0, 0, 0, 0, 0, 0, 1), 1.4, 12.5),
    _ends(0.02, 0.1, "lower", 0.6),
    _ends(0.06, 0.1, "lower", 0.6),
    _ends(0.2, 0.1, "lower", 0.6),
    _ends(0.02, 0.1, "upper", 0.6),
    _ends(0.06, 0.1, "upper", 0.6),
    _ends(0.2, 0.1, "upper", 0.6),
    _ends(0.02, 4.0, "lower", 0.2),
    _ends(0.06, 2.0, "lower", 0.2),
    _ends(0.02, 4.0, "upper", 0.2),
    _ends(0.06, 2.0, "upper", 0.2),
    _ends(0.2, 1.5, "both", 0.2),
    _ends(0.2, 0.6, "both", 0.2),
    _location(0.15, 1, 13.0),
    _location(0.15, -1, 13.0),
    _component(1.75, 0.05, 0.3, 16.6),
    _component(-1.75, 0.05, 0.3, 16.6),
    _rank_tilt(0.44, 0.3),
    _rank_tilt(-0.44, 0.3),
    _rank_tilt(0.87, 0.3),
    _rank_tilt(-0.87, 0.3),
)
COEFFICIENTS = np.array([spec.coefficients for spec in BANK])


#: The share of references whose CUSUMs must keep their false-alarm budget is Φ(REFERENCE_Z) = 95 %.
REFERENCE_Z = float(ndtri(REFERENCE_SHARE))


@lru_cache(maxsize=4096)  # (every stream of a model asks for the same few: once each)
def cusum_threshold(spec: Alternative, arl: float, reference_n: int | None) -> float:
    """The threshold giving ``spec``'s CUSUM a mean of at least ``arl`` values between false alarms.

    ``reference_n``: the size of the sample the reference quantiles come from (None: the reference
    is the true distribution). A reference of ``n`` values is one draw: the CUSUM's rate given it is
    the target times ``e^((1 - theta) (h + rho))``, with ``sqrt(n) (1 - theta)`` of standard deviation
    ``spec.reference_spread`` over references (:class:`CusumSpec`). The threshold keeps the rate
    within the target for all but the worst 5 % of references (``1 - theta`` up to ``REFERENCE_Z``
    standard deviations): a guarantee given the reference the monitor actually has, not only on
    average over references, whose average hides references with several times the budget [5]_.

    .. [5] Gandy, A. & Kvaløy, J. T. (2013). Guaranteed conditional performance of control charts via
       bootstrap methods. Scandinavian Journal of Statistics 40(4), 647-668.
    """
    if arl <= 1:
        raise ValueError("arl must exceed 1")
    # (math.inf when no threshold reaches ``arl``: small changes cannot be told from the reference's own
    # sampling error at that false-alarm rate, so the CUSUM looking for them stays off)
    kl, rho = spec.kl, spec.overshoot
    margin = 0.0 if reference_n is None else REFERENCE_Z * spec.reference_spread / math.sqrt(reference_n)
    if margin >= 1:
        return math.inf  # this CUSUM cannot keep the budget with so small a reference: it stays off

    def excess(h: float) -> float:
        b = h + rho
        log_arl = b + math.log1p(-(b + 1) * math.exp(-b)) if b > 20 else math.log(math.expm1(b) - b)
        return log_arl - margin * b - math.log(kl) - math.log(arl)

    upper = 1.0
    while excess(upper) < 0:
        upper *= 2
    return float(brentq(excess, 1e-6, upper))


def _splitmix64(counter: np.ndarray) -> np.ndarray:
    """Uniform (0, 1) from 64-bit counters (Steele, Lea & Flood 2014's SplitMix64 finalizer)."""
    z = counter + GAMMA
    z = (z ^ (z >> S30)) * MIX1
    z = (z ^ (z >> S27)) * MIX2
    z = z ^ (z >> S31)
    uniform: np.ndarray = ((z >> S11).astype(float) + 0.5) / 2.0**53
    return uniform


def position_uniforms(position: np.ndarray, seed: int) -> np.ndarray:
    """The ``V`` of values numbered ``position`` in a stream: uniform (0, 1), a hash of the number and ``seed``."""
    return _splitmix64(position.astype(np.uint64) + np.uint64((seed * 0x632BE59BD9B4E019) & _MASK64))


class ReferenceCdf:
    """The reference's distribution function from its quantile summary (``NumericProfile.quantiles``).

    ``quantiles[i]`` is the reference quantile at level ``i / (k - 1)``; values between two
    quantiles interpolate linearly; a run of equal quantiles is an atom (a tie); outside the
    reference's range lies mass ``1 / (reference_n + 1)`` on each side.

    With ``masses`` the reference is discrete, exactly: ``quantiles`` are its distinct values (its atoms,
    increasing) and ``masses`` their shares; a value equal to an atom is ranked uniformly over the atom's
    share, one between two atoms (which has none) at the CDF there. A categorical feature's frequency
    ranks are such a reference (:func:`frequency_ranks`).

    >>> cdf = ReferenceCdf([0.0, 1.0, 2.0], reference_n=1_000, masses=[0.5, 0.3, 0.2])
    >>> u = cdf.transform(np.array([1.0, 1.0, 1.5, 3.0]), first=0, seed=1)
    >>> bool(np.all((u[:2] > 0.4995) & (u[:2] < 0.8))), round(float(u[2]), 3), bool(u[3] > 0.999)  # (1.5: F(1))
    (True, 0.799, True)
    """

    def __init__(self, quantiles: Sequence[float], reference_n: int, masses: Sequence[float] | None = None) -> None:
        q = np.asarray(quantiles, dtype=float)
        if q.ndim != 1 or len(q) == 0 or not np.all(np.isfinite(q)) or np.any(np.diff(q) < 0):
            raise ValueError("quantiles must be a non-empty sorted run of finite numbers")
        if reference_n < 1:
            raise ValueError("reference_n must be positive")
        self.q = q
        k = len(q)
        self.tail = 1.0 / (reference_n + 1)
        self.discrete = masses is not None
        if masses is None:
            self.step = 1.0 / (k - 1) if k > 1 else 1.0
            self.levels = np.arange(k) * self.step if k > 1 else np.array([0.5])
            # the share of the values equal to quantile i: what its neighbours' midpoints leave it
            self.below = np.clip(self.levels - self.step / 2, 0.0, 1.0)
            self.above = np.clip(self.levels + self.step / 2, 0.0, 1.0)
        else:
            p = np.asarray(masses, dtype=float)
            if p.shape != q.shape or np.any(np.diff(q) <= 0) or not np.all(p > 0):
                raise ValueError("masses must be positive, one per distinct quantile")
            edges = np.concatenate([[0.0], np.cumsum(p / p.sum())])
            edges[-1] = 1.0
            self.below, self.above = edges[:-1], edges[1:]
            self.levels = (self.below + self.above) / 2  # (only values between atoms use them: none in practice)
            self.step = 0.0

    def transform(
        self, x: np.ndarray, first: int, seed: int, uniforms: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> np.ndarray:
        """Randomized PIT of finite values ``x``; ``first`` numbers the first value (for ``V``), or
        ``uniforms(indexes)`` gives ``V`` of the values at those indexes (e.g. from their event ids)."""
        q, levels, step, tail = self.q, self.levels, self.step, self.tail
        lo, apart = self.ranked_apart(x)
        k = len(q)
        if k > 1:
            j = np.minimum(np.maximum(lo, 1), k - 1)  # (np.clip's Python wrapper costs more than the work)
            left = q[j - 1]
            with np.errstate(divide="ignore", invalid="ignore"):  # (in an atom: ranked apart below)
                g = levels[j - 1] + (x - left) / (q[j] - left) * step
        else:
            g = np.full(len(x), 0.5)
        u: np.ndarray = tail + (1 - 2 * tail) * g
        if len(apart):  # equal to a quantile (an atom, a tie) or outside the reference's range: rare
            v = position_uniforms(first + apart, seed) if uniforms is None else uniforms(apart)
            u[apart] = self.apart(x[apart], lo[apart], v)
        return u

    def values_at(self, u: np.ndarray) -> np.ndarray:
        """The values whose rank is ``u`` (between the reference's extremes, by the same interpolation between
        quantiles; ``u`` beyond the levels: the extremes). A reference beyond ±2^990 (~1e298) is interpolated scaled
        down by a power of two (exact): between quantiles ~1e305 apart the slopes would overflow (a feature in ±1e307
        gave every bin edge as infinity, and thousands of false alarms in 200,000 unchanged values).

        >>> ReferenceCdf([-1e307, 1e307], 1_000).values_at(np.array([0.5])).tolist()
        [0.0]
        """
        at_levels = self.tail + (1 - 2 * self.tail) * self.levels
        exponent = max(0, binary_exponent(self.q) - 990)
        values: np.ndarray = np.ldexp(np.interp(u, at_levels, np.ldexp(self.q, -exponent)), exponent)
        return values

    def level_at(self, x: float) -> float:
        """The reference's share of values below ``x`` (between two quantiles interpolated as :meth:`transform` ranks,
        the fraction of the gap first: quantiles a few units in the last place apart, subnormal ones say, give
        slopes that overflow in ``np.interp``).

        >>> ReferenceCdf([0.0, 1.0, 3.0], 1_000).level_at(2.0), ReferenceCdf([5e-324, 2e-323], 1_000).level_at(1e-323)
        (0.75, 0.3333333333333333)
        """
        q = self.q
        j = int(np.searchsorted(q, x, "right"))
        if j == 0 or j == len(q):
            return 0.0 if j == 0 else 1.0
        return float(self.levels[j - 1] + (x - q[j - 1]) / (q[j] - q[j - 1]) * self.step)

    def ranked_apart(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``searchsorted(q, x)`` and the indexes of the values ranked apart: equal to a quantile or
        outside the reference's range (the only ones whose ``u`` needs a ``V``)."""
        lo = np.searchsorted(self.q, x, "left")
        return lo, self.apart_of(x, lo)

    def apart_of(self, x: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """The indexes of the values ranked apart, given their ``searchsorted(q, x)`` (:meth:`ranked_apart`)."""
        q, k = self.q, len(self.q)
        if self.discrete:  # every value is an atom, between two (no mass: the CDF there) or outside the range
            return np.arange(len(x))
        return np.flatnonzero((q[np.minimum(lo, k - 1)] == x) | (lo == 0) | (lo == k))

    def apart(self, x: np.ndarray, lo: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``u`` of values equal to a quantile (uniform over the run of equal quantiles) or outside the range
        (``lo``: their ``searchsorted(q, x)``, ``v``: their uniform draws)."""
        q, tail = self.q, self.tail
        hi = np.searchsorted(q, x, "right")
        below = self.below[np.minimum(lo, len(q) - 1)]
        above = np.where(hi > lo, self.above[np.maximum(hi - 1, 0)], below)  # (between two atoms: no mass)
        tied = tail + (1 - 2 * tail) * (below + v * (above - below))
        u: np.ndarray = np.where((hi > 0) & (lo < len(q)), tied, np.where(hi == 0, tail * v, 1 - tail * v))
        return u


#: Seeds the split of a categorical reference's values between ranking and counting (:func:`frequency_ranks`).
SPLIT_SEED = 0x5EED
#: The share of a categorical reference's values that ranks its categories (the rest counts them). On the shape
#: corpus's categorical family (12 levels, 10 seeds) the rank CUSUMs' median delays were 2.20, 2.40, 1.53 x
#: Lorden's bound at KL 0.02, 0.05, 0.2 with half the values ranking, 2.14, 1.43, 1.46 with a fifth, 1.65,
#: 1.58, 1.51 with a tenth (ranked and counted by all: 1.43, 1.33, ~1.3, but over budget with many levels).
RANKING_SHARE = 0.2


def frequency_ranks(counts: Mapping[str, int]) -> tuple[list[str], list[int]]:
    """A categorical reference's categories by frequency rank (the most common first: rank 0) and the ranks'
    counts, then the count of the rank just above them: categories the reference did not see.

    The reference's values are split in two at random (each one, by a hash of its position among the
    categories sorted by text, ranks with probability :data:`RANKING_SHARE`, else counts): one part ranks
    the categories (ties by their text), the other counts them. Ranked and counted by the same values,
    the categories a reference happened to over-count would rank first and be over-counted there: with a
    few hundred levels of similar frequency that bias alone gave the CUSUMs five times their false-alarm
    budget. A category the counting part did not see shares the last rank with the unseen ones; that
    rank's count is Good and Turing's estimate of the mass no value of the sample fell on, the categories
    the counting part saw once (at least 1): with many rare levels, new ones keep coming without any change.

    >>> ranked, counts = frequency_ranks({"b": 500, "a": 500, "c": 900, "d": 0, "e": 1})
    >>> ranked, counts, sum(counts)  # (about 4/5 of the values count; the last rank: unseen categories)
    (['c', 'b', 'a', 'e'], [723, 407, 425, 1, 1], 1557)
    """
    names = sorted(c for c, n in counts.items() if n > 0)
    if not names:
        return [], []
    n = np.array([counts[c] for c in names], dtype=np.int64)
    to_rank = (position_uniforms(np.arange(int(n.sum())), SPLIT_SEED) < RANKING_SHARE).astype(np.int64)
    ranking = np.add.reduceat(to_rank, np.concatenate([[0], np.cumsum(n)[:-1]]))
    counting = n - ranking
    order = sorted((i for i in range(len(names)) if counting[i] > 0), key=lambda i: (-ranking[i], names[i]))
    return [names[i] for i in order], [*(int(counting[i]) for i in order), max(1, int(np.sum(counting == 1)))]


#: An atom at an end of the reference's range with at least this share of the values gets the CUSUMs of
#: :data:`CONTINUOUS_BANK` on the ranks of the rest (:func:`continuous_part`).
ATOM_SHARE = 0.1
#: An atom at an end of the reference's range with at least this share bounds the continuous part and gets the
#: CUSUMs of its share (:func:`atom_bank`). Below it the end CUSUMs' steps at 2 % and 6 % of the rank scale watch
#: an end's share.
ATOM_MIN = 0.03
_CONTINUOUS = [i for i, spec in enumerate(BANK) if spec.statistic in ("location", "spread")]
#: The CUSUMs that also run within the continuous part: location and spread, each way, at both sizes.
CONTINUOUS_BANK = tuple(replace(BANK[i], name=f"{BANK[i].name} within the continuous part") for i in _CONTINUOUS)
_CONTINUOUS_COEFFICIENTS = COEFFICIENTS[_CONTINUOUS, :MOMENT_FEATURES]


def continuous_part(cdf: ReferenceCdf) -> tuple[float, float] | None:
    """The interval of ``u`` between the reference's end atoms of at least :data:`ATOM_MIN` (None: no such
    atom, or less than :data:`ATOM_SHARE` between them: a two-valued feature has no continuous part).

    ``u`` is uniform within it while nothing changes, so ``(u - a) / (b - a)`` there is a rank in the
    continuous part, which a change of the continuous part alone (the amounts above an atom of zeros,
    the inside of a clipped range) moves undiluted by the atom's randomized ranks; and ``u <= a`` (``u >= b``)
    is a value at the lower (upper) atom, whose share is ``a`` (``1 - b``) while nothing changes.

    >>> a, b = continuous_part(ReferenceCdf([0.0] * 40 + list(np.linspace(0.1, 3.0, 60)), reference_n=5_000))
    >>> round(a, 3), b  # 40 of 100 quantiles at 0: an atom of ~40 % of the values, as the summary resolves it
    (0.399, 1.0)
    >>> continuous_part(ReferenceCdf(list(np.linspace(0.1, 3.0, 100)), reference_n=5_000)) is None
    True
    """
    q, tail = cdf.q, cdf.tail
    if len(q) < 2:
        return None
    low_mass = float(cdf.above[np.searchsorted(q, q[0], "right") - 1])  # the run of the minimum
    high_mass = float(1 - cdf.below[np.searchsorted(q, q[-1], "left")])  # the run of the maximum
    a = tail + (1 - 2 * tail) * low_mass if low_mass >= ATOM_MIN else 0.0
    b = 1 - tail - (1 - 2 * tail) * high_mass if high_mass >= ATOM_MIN else 1.0
    return (a, b) if (a, b) != (0.0, 1.0) and b - a > ATOM_SHARE else None


def _within(part: tuple[float, float] | None) -> bool:
    """Whether the location and spread CUSUMs run within the continuous part: an end atom holds more than
    :data:`ATOM_SHARE` (a smaller one dilutes the ranks of the rest little)."""
    return part is not None and max(part[0], 1 - part[1]) > ATOM_SHARE


@dataclass(frozen=True)
class RatioSpec:
    """One CUSUM whose alternative is a density ratio over cells of known null masses (:func:`ratio_spec`): a value's
    class at the end atoms (:func:`atom_bank`), or its bin of ``u`` (a multimodal reference's own alternatives,
    :func:`~driftwarden.core.detectors.multimodal.shape_bank`); its increments are the stream's own table."""

    name: str
    statistic: str
    direction: str
    kl: float  # KL(null || alternative): minus the null mean of the increment
    overshoot: float
    reference_spread: float
    valley: float | None = None  # a modes' weights' alternative: the value between the modes its share is told about


def ratio_spec(
    name: str, statistic: str, direction: str, null: np.ndarray, ratio: np.ndarray, spread: float = 1.0,
    valley: float | None = None,
) -> tuple[RatioSpec, np.ndarray]:  # fmt: skip
    """The CUSUM of the alternative whose density over the null's is ``ratio`` (normalized here to mean 1 under the
    null masses ``null``), and its increments ``ln ratio`` per cell. Siegmund's overshoot for its KL; the
    likelihood ratio being bounded, the reference spread is ``spread`` times ``sqrt(chi^2) / KL`` of the
    alternative (as :func:`_ends`'s).

    >>> spec, steps = ratio_spec("x", "lower_atom", "up", np.array([0.4, 0.6]), np.array([1.25, 5 / 6]))
    >>> round(spec.kl, 4), [round(float(v), 3) for v in steps]  # 40 % -> 50 %
    (0.0201, [0.223, -0.182])
    """
    ratio = ratio / (null @ ratio)
    steps: np.ndarray = np.log(ratio)
    kl, kl_alternative = -float(null @ steps), float((null * ratio) @ steps)
    reference_spread = spread * math.sqrt(float((null * ratio) @ ratio) - 1) / kl_alternative
    return RatioSpec(name, statistic, direction, kl, siegmund_overshoot(kl), reference_spread, valley), steps


#: The statistics of :func:`atom_bank`'s CUSUMs.
ATOM_STATISTICS = frozenset({"lower_atom", "upper_atom", "atoms"})
#: The odds ratios of :func:`atom_bank`'s alternatives: an atom's share up or down against the rest, both atoms up.
ATOM_ODDS_UP, ATOM_ODDS_DOWN, ATOMS_ODDS_UP = (1.4, 2.0, 3.0, 5.0), (0.7, 0.5), (1.5, 2.2, 3.5)


def atom_bank(part: tuple[float, float] | None) -> tuple[RatioSpec, ...]:
    """The CUSUMs of the end atoms' shares (:func:`continuous_part`): each atom's odds against the rest of the
    values times 1.4, 2, 3, 5, 0.7 and 0.5 (the rest scaled to keep the total), and where both ends have an atom,
    both atoms' odds against the values between them times 1.5, 2.2 and 3.5 (a clipped feature's spread).

    A zero-inflated feature's share of zeros, a clipped feature's share at its limits: the class of a value is
    all a change of the atoms' shares moves, and a CUSUM of that class's likelihood ratio sees the whole of it,
    where the rank CUSUMs see it through the atom's randomized ranks (on the shape corpus they found a change of
    the zero share at 1.65-1.95 x Lorden's bound; docs/benchmarks.md). Siegmund's overshoot: on exact classes the
    measured ARL is 0.84-1.35 times the target at 3e3 and 3e4 (300 alarms each; atoms of 5 %, 40 %, 16 % and 7 %).

    >>> [spec.name for spec in atom_bank((0.4, 1.0))][:2]
    ['lower_atom odds x1.4', 'lower_atom odds x2']
    >>> len(atom_bank((0.16, 0.93))), atom_bank(None)
    (15, ())
    """
    return _atoms(part)[0]


@lru_cache(maxsize=1024)  # (a model's streams with the same atoms, and restarts, share them)
def _atoms(part: tuple[float, float] | None) -> tuple[tuple[RatioSpec, ...], np.ndarray]:
    """:func:`atom_bank` and its CUSUMs' increments (fixed point) by class: rows inside the part, below it, above
    it (:func:`part_tables`)."""
    if part is None:
        return (), np.zeros((3, 0), np.int64)
    a, b = part
    null = np.array([b - a, a, 1 - b])  # (inside, below, above: the class table's rows)
    specs, columns = [], []
    for statistic, odds, lower, upper in [
        *[("lower_atom", odds, True, False) for odds in (ATOM_ODDS_UP + ATOM_ODDS_DOWN) if a > 0],
        *[("upper_atom", odds, False, True) for odds in (ATOM_ODDS_UP + ATOM_ODDS_DOWN) if b < 1],
        *[("atoms", odds, True, True) for odds in ATOMS_ODDS_UP if a > 0 and b < 1],
    ]:
        ratio = np.array([1.0, odds if lower else 1.0, odds if upper else 1.0])  # (an empty class: any ratio, unused)
        spec, steps = ratio_spec(f"{statistic} odds x{odds:g}", statistic, "up" if odds > 1 else "down", null, ratio)
        specs.append(spec)
        columns.append(fixed_point(steps))
    return tuple(specs), np.ascontiguousarray(np.array(columns).T) if columns else np.zeros((3, 0), np.int64)


def normal_scores(u: np.ndarray) -> np.ndarray:
    scores: np.ndarray = ndtri(u)
    return scores


def bank(part: tuple[float, float] | None) -> tuple[Alternative, ...]:
    """The CUSUMs of a stream whose reference has this continuous part (:func:`continuous_part`): :data:`BANK`,
    then :data:`CONTINUOUS_BANK` where an end atom holds more than :data:`ATOM_SHARE`, then :func:`atom_bank`."""
    return BANK + (CONTINUOUS_BANK if _within(part) else ()) + atom_bank(part)


def bank_shares(part: tuple[float, float] | None) -> np.ndarray:
    """The share of the values each CUSUM of ``bank(part)`` moves on: ``b - a`` for those within the continuous
    part (their increment is 0 elsewhere), 1 for the rest."""
    within = len(CONTINUOUS_BANK) if _within(part) else 0
    share = 1.0 if part is None else part[1] - part[0]
    return np.array([1.0] * len(BANK) + [share] * within + [1.0] * len(atom_bank(part)))


def bank_thresholds(
    part: tuple[float, float] | None, arl: float, reference_n: int, extra: Sequence[Alternative] = ()
) -> np.ndarray:
    """Each CUSUM of ``bank(part)``, then of ``extra`` (a stream's own alternatives, on every value), at ``arl``
    values between false alarms for them all (Bonferroni).

    A CUSUM that moves on a share of the values only (:func:`bank_shares`: within the continuous part, its
    increment is 0 elsewhere) has a mean number of *values* between false alarms that of its own steps over that
    share, and its reference is the share of the ``n`` values there.
    """
    specs, shares = (*bank(part), *extra), [*bank_shares(part), *[1.0] * len(extra)]
    return np.array([cusum_threshold(spec, arl * len(specs) * share, max(1, round(reference_n * share)))
                     for spec, share in zip(specs, shares, strict=True)])  # fmt: skip


#: The CUSUMs run in fixed point: each increment rounded down to a multiple of 2^-32 (less than 2.4e-10 nats a
#: value, against thresholds of 10-20 nats; down, so no false-alarm rate rises) and summed in int64: exact, so
#: ``update`` in a loop and ``update_many`` give the same CUSUMs bit for bit (those that can alarm), whatever
#: the order of the additions.
SCALE = 2.0**32
#: A CUSUM that is off (an infinite threshold) is held below this many nats, so its fixed point never overflows.
CUSUM_CAP = 2.0**20


def fixed_point(values: np.ndarray) -> np.ndarray:
    """``values`` (nats) in units of 2^-32, rounded down."""
    units: np.ndarray = np.floor(values * SCALE).astype(np.int64)
    return units


#: The increments are looked up by the bin of the normal score ``z``: bins of 1/64 σ over [-8.5, 8.5], split
#: where a feature jumps (0 and the end shares' scores), the end bins reaching on to infinity. A bin's
#: increment is the mean of the exact one over the bin under no change (:func:`_bin_means`): the null
#: drift ``-KL`` stays exact, and as ``E[e^X | bin] >= e^(E[X | bin])`` (Jensen), ``E[e^X] <= 1`` for the
#: binned increments: a false-alarm rate no higher than the exact ones'. What binning costs is the
#: variation within a bin: the drift under each alternative is at most 0.01 % smaller.
Z_EDGE, Z_RESOLUTION = 8.5, 64
_INNER_EDGES = np.union1d(np.arange(1, round(2 * Z_EDGE * Z_RESOLUTION)) / Z_RESOLUTION - Z_EDGE,
                          np.concatenate([_END_Z, -_END_Z]))  # fmt: skip


def _bin_means() -> np.ndarray:
    """``E[features(z) | z in bin]`` for each bin, ``z ~ N(0, 1)`` (8-point Gauss-Legendre; the end bins to
    8.5 + 1 σ: beyond, a conditional mass below e^-9)."""
    edges = np.concatenate([[-Z_EDGE - 1], _INNER_EDGES, [Z_EDGE + 1]])
    nodes, weights = np.polynomial.legendre.leggauss(8)
    half = np.diff(edges)[:, None] / 2
    z = edges[:-1, None] + half * (1 + nodes)
    w = half * weights * np.exp(-z * z / 2)
    means: np.ndarray = (features(z.ravel()).reshape(-1, *z.shape) * w).sum(axis=2) / w.sum(axis=1)
    return means


_BIN_MEANS = _bin_means()
#: Each CUSUM's increment (rows, fixed point) for a normal score in each bin (columns) of :data:`U_EDGES`.
INCREMENTS = fixed_point(COEFFICIENTS @ _BIN_MEANS)
_CONTINUOUS_INCREMENTS = fixed_point(_CONTINUOUS_COEFFICIENTS @ _BIN_MEANS[:MOMENT_FEATURES])


def _z_bins(u: np.ndarray) -> np.ndarray:
    """The bin of each normal score ``Φ⁻¹(u)``."""
    bins: np.ndarray = np.searchsorted(_INNER_EDGES, normal_scores(u), "left")
    return bins


#: The bins' inner edges on the rank scale ``u`` (the increments are constant within a bin).
U_EDGES = ndtr(_INNER_EDGES)
#: How near an edge's image in ``u`` a rank must be for its bin to be found through ``Phi^-1`` (:func:`bins`) rather
#: than by its place among :data:`U_EDGES` (:func:`~driftwarden.core.compiled.apart_bins`): far beyond the rounding of
#: ``Phi`` and ``Phi^-1`` (a few units in the last place of ``u``, or of ``1 - u`` near 1).
ROUNDING = 1e-9 * np.minimum(U_EDGES, 1 - U_EDGES) + 4 * np.spacing(U_EDGES)
#: :data:`INCREMENTS` by bin (rows): the table :func:`~driftwarden.core.compiled.lindley` reads.
BY_BIN = np.ascontiguousarray(INCREMENTS.T)
_CONTINUOUS_BY_BIN = _CONTINUOUS_INCREMENTS.T
#: The bin of a value below the continuous part, in a stream's part table (:func:`part_tables`); ``OUTSIDE + 1``:
#: above it.
OUTSIDE = len(_CONTINUOUS_BY_BIN)
#: The table of a stream without a continuous part: no CUSUMs.
NO_PART = np.zeros((1, 0), np.int64)


#: The continuous part's increments by part bin (:func:`bins`: the bins within the part, then :data:`OUTSIDE` below it
#: and ``OUTSIDE + 1`` above it, where they are 0): one table every stream with a continuous part shares.
_CONTINUOUS_TABLE = np.ascontiguousarray(
    np.vstack([_CONTINUOUS_BY_BIN, np.zeros((2, _CONTINUOUS_BY_BIN.shape[1]), np.int64)])
)
#: The part table of a stream with atoms but no CUSUMs within its continuous part (rows as the part bins: none).
_NO_CONTINUOUS = np.zeros((OUTSIDE + 2, 0), np.int64)


def part_tables(part: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """The increments (fixed point) of the CUSUMs after :data:`BANK` in ``bank(part)``, as
    :func:`~driftwarden.core.compiled.lindley` reads them: the location and spread CUSUMs within the part, by part
    bin (one table all streams share), then the atoms' (:func:`atom_bank`), by the value's class (inside the part,
    below it, above it: 3 rows, each class's log-likelihood ratio; a stream's own, a few hundred bytes).

    >>> [t.shape for t in part_tables(None)], [t.shape[1] for t in part_tables((0.4, 1.0))]
    ([(1, 0), (1, 0)], [10, 6])
    >>> [t.shape[1] for t in part_tables((0.05, 0.9))]  # (atoms of 5 % and 10 %: none above 10 %)
    [0, 15]
    """
    if part is None:
        return NO_PART, NO_PART
    return (_CONTINUOUS_TABLE if _within(part) else _NO_CONTINUOUS), _atoms(part)[1]


def bin_masses(cdf: ReferenceCdf, distribution: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The probability of each bin of ``u`` (:data:`U_EDGES`) for values of distribution function ``distribution``
    ranked against ``cdf``: between the reference's extremes ``u`` is increasing in ``x``, so a bin's mass is the
    distribution's between its edges mapped to ``x``; beyond them, where values are ranked uniformly over the tail
    share, the mass below (above) the range is spread over the bins there.

    >>> cdf = ReferenceCdf(np.linspace(0, 1, 1_000), 1_000)  # (values uniform on (0, 1): their ranks nearly so,
    >>> masses = bin_masses(cdf, lambda x: np.clip(x, 0, 1))  # but for the reference's 1/1001 beyond either end)
    >>> null = np.diff(np.concatenate([[0], U_EDGES, [1]]))
    >>> round(float(masses.sum()), 12), float(np.abs(masses - null).max()) < 1e-4, float(masses[:5].sum())
    (1.0, True, 0.0)
    """
    within = distribution(np.concatenate([[cdf.q[0]], cdf.values_at(U_EDGES), [cdf.q[-1]]]))
    tail, inner = cdf.tail, within[1:-1]
    below, above = float(within[0]), 1.0 - float(within[-1])  # (at the range's ends)
    under, over = tail >= U_EDGES, 1 - tail <= U_EDGES
    p = np.where(under, below * U_EDGES / tail, np.where(over, 1 - above * (1 - U_EDGES) / tail, inner))
    masses: np.ndarray = np.diff(np.concatenate([[0.0], p, [1.0]]))
    return masses


def bins(u: np.ndarray, part: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """The bins of the ranks ``u`` in :data:`BY_BIN` and in :func:`part_tables` (within the continuous part
    ``part``; :data:`OUTSIDE` for a value below it, and for every value when ``part`` is None, ``OUTSIDE + 1``
    above it): each row of those tables is what :func:`~driftwarden.core.compiled.lindley` adds to every CUSUM
    for a value in that bin.

    >>> u = np.array([0.01, 0.3, 0.99])
    >>> exact = COEFFICIENTS @ features(normal_scores(u))  # the log-likelihood ratios at these scores
    >>> float(np.abs(BY_BIN[bins(u, None)[0]].T / SCALE - exact).max()) < 0.05  # (their means over 1/64 σ)
    True
    """
    if part is None:
        return _z_bins(u), np.full(len(u), OUTSIDE)
    a, b = part
    inside = (u > a) & (u < b)
    return _z_bins(u), np.where(inside, _z_bins(np.where(inside, (u - a) / (b - a), 0.5)), OUTSIDE + (u >= b))


class RankBins:
    """The bins of every CUSUM's increments (:func:`bins`) straight from the values.

    ``u`` is increasing in ``x`` between the values ranked apart (ties with a reference quantile, values
    outside the reference's range), so the bins' edges in ``u`` map back to edges in ``x`` once per
    reference (``u(x_i) = Φ(e_i)``), and a binary search among them gives a value's bin: the same bin as
    :func:`bins` of ``cdf.transform(x)`` finds (short of rounding at an edge) without the transform.
    The values ranked apart go through ``u``.

    >>> rng = np.random.default_rng(1)
    >>> cdf = ReferenceCdf(np.quantile(rng.lognormal(0, 1, 5_000), np.linspace(0, 1, 1_000)), 5_000)
    >>> x = np.concatenate([rng.lognormal(0, 1, 2_000), cdf.q[:5], [-1.0, 1e9]])  # (ties, outside the range)
    >>> [bool((m == t).all()) for m, t in zip(RankBins(cdf, None)(x, 0, 3), bins(cdf.transform(x, 0, 3), None))]
    [True, True]
    >>> ranks = ReferenceCdf([0.0, 1.0, 2.0], 1_000, masses=[0.5, 0.3, 0.2])  # (discrete: every value through u)
    >>> part, y = continuous_part(ranks), rng.integers(0, 4, 500).astype(float)
    >>> [bool((m == t).all()) for m, t in zip(RankBins(ranks, part)(y, 0, 3), bins(ranks.transform(y, 0, 3), part))]
    [True, True]
    """

    def __init__(self, cdf: ReferenceCdf, part: tuple[float, float] | None) -> None:
        self.cdf, self.part = cdf, part
        part_edges, inside = np.empty(0), np.zeros(2)  # (no continuous part: no value inside)
        if part is not None:
            a, b = part
            part_edges = cdf.values_at(a + (b - a) * U_EDGES)
            inside = cdf.values_at(np.array(part))  # u(x) in (a, b): x between these
        self._search = search_edges(cdf.q, cdf.values_at(U_EDGES), part_edges, inside)
        self._ranks = ranks_of(cdf.q, cdf.below, cdf.above, cdf.tail)

    def __call__(self, x: np.ndarray, first: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``bins(cdf.transform(x, first, seed), part)`` for finite values ``x``."""
        cdf, n = self.cdf, len(x)
        if cdf.discrete:  # every value ranked apart (a categorical feature's ranks): all through ``u``
            z_bins, part_bins, apart = np.empty(n, np.int64), np.empty(n, np.int64), np.arange(n)
            lo = np.searchsorted(cdf.q, x, "left")
        else:
            z_bins, part_bins, lo, apart = numeric_bins(x, self._search, OUTSIDE)
        if len(apart):
            z_bins[apart], part_bins[apart], unsure = apart_bins(
                x[apart], lo[apart], first + apart, seed, self._ranks, self.part, (U_EDGES, ROUNDING), OUTSIDE
            )
            if len(unsure):  # a rank within rounding of an edge's image: its bins through ``Phi^-1``
                at = apart[unsure]
                u = cdf.apart(x[at], lo[at], position_uniforms(first + at, seed))
                z_bins[at], part_bins[at] = bins(u, self.part)
        return z_bins, part_bins
