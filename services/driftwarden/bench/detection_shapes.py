"""The shape corpus of ``driftwarden bench detection``: feature families x change types x KL sizes.

Each family is a distribution a real feature could have (heavy tails, counts, zero inflation,
bounds, two modes, clipping, a many-level category); each change type moves it by a parameter
``theta`` chosen so that KL(post || pre) hits a target size, computed from exact distribution functions on
a fine binning (a lower bound of the true KL that converges as bins shrink). Lorden's bound for
the delay of any detector with mean time between false alarms ``arl`` is ``ln(arl) / KL``.

>>> pre, post = change("normal", "location", 0.2)  # N(0.2, 1) against N(0, 1): KL = 0.2^2 / 2
>>> round(kl_divergence(post, pre), 3)
0.02
>>> pre = change("lognormal", "location", 0.0)[0]
>>> theta = theta_for("lognormal", "location", 0.05)
>>> round(kl_divergence(change("lognormal", "location", theta)[1], pre), 3)
0.05
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import stats
from scipy.optimize import brentq

Sampler = Callable[[np.random.Generator, int], np.ndarray]
Cdf = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Dist:
    """A distribution by its sampler and its distribution function (atoms allowed)."""

    sample: Sampler
    cdf: Cdf


def _scipy(frozen: stats.rv_continuous | stats.rv_discrete | object) -> Dist:
    rv: object = frozen
    return Dist(lambda rng, n: np.asarray(rv.rvs(size=n, random_state=rng), dtype=float),  # type: ignore[attr-defined]
                lambda x: np.asarray(rv.cdf(x), dtype=float))  # type: ignore[attr-defined]  # fmt: skip


def _mixture(parts: list[tuple[float, Dist]]) -> Dist:
    weights = np.array([w for w, _ in parts])

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        which = rng.choice(len(parts), size=n, p=weights / weights.sum())
        out = np.empty(n)
        for k, (_, dist) in enumerate(parts):
            chosen = which == k
            out[chosen] = dist.sample(rng, int(chosen.sum()))
        return out

    return Dist(sample, lambda x: sum((w * d.cdf(x) for w, d in parts), np.zeros(np.shape(x))))


def _point(value: float) -> Dist:
    return Dist(lambda rng, n: np.full(n, value), lambda x: (np.asarray(x) >= value).astype(float))


def _clipped(inner: Dist, low: float, high: float) -> Dist:
    return Dist(
        lambda rng, n: np.clip(inner.sample(rng, n), low, high),
        lambda x: np.where(np.asarray(x) < low, 0.0, np.where(np.asarray(x) >= high, 1.0, inner.cdf(x))),
    )


def _scaled(inner: Dist, factor: float, centre: float = 0.0) -> Dist:
    """``centre + (X - centre) * factor``."""
    return Dist(
        lambda rng, n: centre + (inner.sample(rng, n) - centre) * factor,
        lambda x: inner.cdf(centre + (np.asarray(x) - centre) / factor),
    )


def _normal(theta: float, kind: str) -> Dist:
    if kind == "location":
        return _scipy(stats.norm(theta, 1))
    if kind == "scale":
        return _scipy(stats.norm(0, 1 + theta))
    if kind == "shape":  # heavier tails: Student's t with 1/theta degrees of freedom
        return _scipy(stats.t(1 / theta)) if theta > 0 else _scipy(stats.norm())
    return _mixture([(1 - theta, _scipy(stats.norm())), (theta, _scipy(stats.norm(3, 1)))])


def _lognormal(theta: float, kind: str) -> Dist:
    median = math.exp(3.5)
    if kind == "location":  # amounts x(1 + theta)
        return _scipy(stats.lognorm(1.0, scale=median * (1 + theta)))
    if kind == "scale":  # the spread of log-amounts grows, the median stays
        return _scipy(stats.lognorm(1.0 + theta, scale=median))
    if kind == "shape":  # log-amounts get Student-t tails
        t = _scipy(stats.t(1 / theta)) if theta > 0 else _scipy(stats.norm())
        return Dist(lambda rng, n: np.exp(np.minimum(3.5 + t.sample(rng, n), 700.0)),
                    lambda x: t.cdf(np.log(np.maximum(np.asarray(x), 1e-300)) - 3.5))  # fmt: skip
    return _mixture([(1 - theta, _scipy(stats.lognorm(1.0, scale=median))),
                     (theta, _scipy(stats.lognorm(0.3, scale=median * 8)))])  # fmt: skip


def _pareto(theta: float, kind: str) -> Dist:
    base = _scipy(stats.pareto(2.5))
    if kind == "location":
        return _scipy(stats.pareto(2.5, scale=1 + theta))
    if kind == "scale":
        return _scaled(base, 1 + theta, 1.0)
    if kind == "shape":  # the tail index falls: heavier tail
        return _scipy(stats.pareto(2.5 / (1 + theta)))
    return _mixture([(1 - theta, base), (theta, _scipy(stats.pareto(1.0)))])


def _poisson(theta: float, kind: str) -> Dist:
    if kind == "location":
        return _scipy(stats.poisson(3 * (1 + theta)))
    if kind == "scale":  # overdispersion at the same mean: negative binomial with variance 3(1 + theta)
        if theta <= 0:
            return _scipy(stats.poisson(3))
        p = 1 / (1 + theta)
        return _scipy(stats.nbinom(3 * p / (1 - p), p))
    return _mixture([(1 - theta, _scipy(stats.poisson(3))), (theta, _scipy(stats.poisson(9)))])


def _zero_inflated(theta: float, kind: str) -> Dist:
    zero = 0.4
    gamma = _scipy(stats.gamma(2, scale=10))
    if kind == "location":
        gamma = _scipy(stats.gamma(2, scale=10 * (1 + theta)))
    elif kind == "scale":  # the same mean, more spread: shape 2/(1+theta)^2
        shape = 2 / (1 + theta) ** 2
        gamma = _scipy(stats.gamma(shape, scale=20 / shape))
    else:
        zero = 0.4 + theta
    return _mixture([(zero, _point(0.0)), (1 - zero, gamma)])


def _beta(theta: float, kind: str) -> Dist:
    if kind == "location":
        return _scipy(stats.beta(2 * (1 + theta), 5))
    if kind == "scale":  # the same mean, less concentration
        c = 1 / (1 + theta) ** 2
        return _scipy(stats.beta(2 * c, 5 * c))
    if kind == "shape":
        return _scipy(stats.beta(2 / (1 + theta), 5))
    return _mixture([(1 - theta, _scipy(stats.beta(2, 5))), (theta, _scipy(stats.beta(5, 2)))])


def _bimodal(theta: float, kind: str) -> Dist:
    low, high, weight, sd = 0.0, 4.0, 0.4, 1.0
    if kind == "location":
        low, high = low + theta, high + theta
    elif kind == "scale":
        sd = 1 + theta
    else:
        weight = 0.4 + theta
    return _mixture([(1 - weight, _scipy(stats.norm(low, sd))), (weight, _scipy(stats.norm(high, sd)))])


def _clipped_normal(theta: float, kind: str) -> Dist:
    return _clipped(_normal(theta, kind), -1.0, 1.5)


FAMILIES: dict[str, Callable[[float, str], Dist]] = {
    "normal": _normal,
    "lognormal": _lognormal,
    "pareto": _pareto,
    "poisson": _poisson,
    "zero_inflated": _zero_inflated,
    "beta": _beta,
    "bimodal": _bimodal,
    "clipped": _clipped_normal,
}
#: The change types of each family (a shape change where the family has a natural shape parameter).
CHANGES: dict[str, tuple[str, ...]] = {
    family: ("location", "scale", "shape", "mixture") if family in ("normal", "lognormal", "pareto", "beta", "clipped")
    else ("location", "scale", "mixture")
    for family in FAMILIES
}  # fmt: skip
#: Most levels of the categorical family; its reference frequencies fall like 1/(rank + 1).
LEVELS = 12


def change(family: str, kind: str, theta: float) -> tuple[Dist, Dist]:
    """(pre, post) of a change of ``kind`` by ``theta`` (0: none)."""
    make = FAMILIES[family]
    return make(0.0, kind), make(theta, kind)


def kl_divergence(post: Dist, pre: Dist, bins: int = 1_500) -> float:
    """KL(post || pre) on bins at the quantiles of both (exact masses from the distribution functions)."""
    rng = np.random.default_rng(12345)
    levels = np.linspace(0, 1, bins + 1)[1:-1]
    edges = np.unique(np.concatenate([np.quantile(pre.sample(rng, 60_000), levels),
                                      np.quantile(post.sample(rng, 60_000), levels)]))  # fmt: skip
    grid = np.concatenate([[-np.inf], edges, [np.inf]])
    p = np.diff(np.where(np.isinf(grid), (grid > 0).astype(float), post.cdf(np.where(np.isinf(grid), 0, grid))))
    q = np.diff(np.where(np.isinf(grid), (grid > 0).astype(float), pre.cdf(np.where(np.isinf(grid), 0, grid))))
    keep = p > 0
    return float(np.sum(p[keep] * np.log(p[keep] / np.maximum(q[keep], 1e-300))))


@cache
def theta_for(family: str, kind: str, kl: float) -> float:
    """The change parameter giving KL(post || pre) = ``kl``."""
    pre = FAMILIES[family](0.0, kind)
    limit = {"mixture": 0.59, "shape": 2.0}.get(kind, 3.0)
    return float(brentq(lambda t: kl_divergence(FAMILIES[family](t, kind), pre) - kl, 1e-4, limit, xtol=1e-5))


def category_probabilities(theta: float) -> np.ndarray:
    """The categorical family: mass ``theta`` moved from the reference mix to the reversed mix."""
    reference = 1 / np.arange(1, LEVELS + 1)
    reference /= reference.sum()
    mix: np.ndarray = (1 - theta) * reference + theta * reference[::-1]
    return mix


@cache
def category_theta_for(kl: float) -> float:
    p = category_probabilities(0.0)

    def excess(theta: float) -> float:
        q = category_probabilities(theta)
        return float(np.sum(q * np.log(q / p))) - kl

    return float(brentq(excess, 1e-6, 1.0))


def lorden_bound(kl: float, arl: float) -> float:
    """Lorden's asymptotic lower bound of the worst-case mean delay at mean time ``arl`` between false alarms."""
    return math.log(arl) / kl
