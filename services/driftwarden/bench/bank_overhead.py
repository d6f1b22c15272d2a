"""Where the rank-CUSUM bank's thresholds stand above Lorden's bound (issue 10): two measurements.

``driftwarden bench bank-overhead``. A stream's bank splits its false-alarm budget evenly over its 33 (43)
CUSUMs (Bonferroni) and raises each threshold for the reference being a sample (95 % of references keep each
CUSUM's budget: :func:`~driftwarden.core.detectors.sequential.cusum_threshold`). Both could be loose:

1. **Multiplicity** (:func:`bank_alarms`): the CUSUMs look at the same values, so the bank's false alarms
   ("any CUSUM", every CUSUM restarting after one) may be fewer than the sum of the CUSUMs' own. On exact
   uniform ranks (the null is distribution-free: one simulation holds for every shape), each CUSUM at the
   threshold of a common target ``T`` without the reference margin: the effective multiplicity
   ``m_eff = T / (the bank's ARL)``, which Bonferroni takes to be the bank's size.
2. **The margin over references** (:func:`reference_thetas`, :func:`bank_within_budget`): given a reference of
   ``n`` values, each CUSUM's rate is its target times ``e^((1 - θ - margin)(h + rho))`` (the model of
   ``cusum_threshold``), ``θ`` the root of ``E[e^(θ X)] = 1`` for its increments under that reference. Here
   ``θ`` is exact: under the true distribution (uniform ``x``, i.e. any continuous feature) each bin of the
   normal scores has a probability that follows from the reference's quantiles, and the binned increments
   are constant on a bin. Whether the bank's summed rate stays within its budget for 95 % of references, and
   with which margin, says whether the margin could go on the sum instead of on each CUSUM.

>>> union, each = bank_alarms(None, target=3e3, values=20_000, seed=0)
>>> len(each), bool(0 < union < each.sum())  # the bank alarms less often than its CUSUMs in sum
(33, True)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from driftwarden.core.compiled import lindley
from driftwarden.core.config import ModelMonitorConfig
from driftwarden.core.detectors.sequential import (
    BANK,
    BY_BIN,
    INCREMENTS,
    NO_PART,
    OUTSIDE,
    REFERENCE_Z,
    SCALE,
    ReferenceCdf,
    bank,
    bank_shares,
    bin_masses,
    bins,
    cusum_threshold,
    part_tables,
)

#: A stream's mean number of values between false alarms at the defaults (a 16-feature model: 17 streams).
DEFAULT_STREAM_ARL = ModelMonitorConfig().streaming_arl(17)
#: The reference summary the monitor keeps: this many quantiles.
QUANTILES = 1_000


def bank_limits(part: tuple[float, float] | None, target: float) -> np.ndarray:
    """Fixed-point thresholds of every CUSUM of ``bank(part)`` at ``target`` values between its own false alarms
    (no reference margin; a continuous-part CUSUM's target in its own steps: ``target (b - a)``)."""
    h = [cusum_threshold(spec, target * share, None) for spec, share in zip(bank(part), bank_shares(part), strict=True)]
    limits: np.ndarray = np.ceil(np.array(h) * SCALE).astype(np.int64)
    return limits


def _alarms(value_bins: tuple[np.ndarray, np.ndarray], tables: tuple[np.ndarray, np.ndarray, np.ndarray],
            cusums: np.ndarray, limits: np.ndarray) -> int:  # fmt: skip
    """Alarms of the CUSUMs (:func:`~driftwarden.core.compiled.lindley`; ``cusums`` in and out) restarting
    all together after each."""
    count, start, last_zero = 0, 0, np.full(len(cusums), -1)
    while (crossing := lindley(value_bins, tables, cusums, last_zero, limits, start)) is not None:
        count, start = count + 1, crossing
        cusums[:] = 0
    return count


def bank_alarms(
    part: tuple[float, float] | None, target: float, values: int, seed: int, chunk: int = 1 << 18
) -> tuple[int, np.ndarray]:
    """False alarms on ``values`` uniform ranks: of the bank (any CUSUM; all restart) and of each CUSUM alone
    (restarting after its own), every CUSUM at ``target`` (:func:`bank_limits`)."""
    rng = np.random.default_rng(seed)
    limits = bank_limits(part, target)
    tables = (BY_BIN, *part_tables(part))
    alone = [(i, np.ascontiguousarray(table[:, [j]])) for i, table in enumerate(tables) for j in range(table.shape[1])]
    union, each = 0, np.zeros(len(limits), dtype=int)
    cusums, own = np.zeros(len(limits), np.int64), np.zeros(len(limits), np.int64)
    for done in range(0, values, chunk):
        both = bins(rng.random(min(chunk, values - done)), part)
        union += _alarms(both, tables, cusums, limits)
        classes = np.where(both[1] < OUTSIDE, 0, both[1] - OUTSIDE + 1)  # (what the class table is read by)
        for k, (which, table) in enumerate(alone):
            of = (both[0], both[1], classes)[which]
            each[k] += _alarms((of, of), (table, NO_PART, NO_PART), own[k : k + 1], limits[k : k + 1])
    return union, each


def _theta(masses: np.ndarray) -> np.ndarray:
    """Each CUSUM's ``θ > 0`` with ``Σ masses e^(θ X) = 1`` (Newton from the right on the convex log-moment)."""
    steps = INCREMENTS / SCALE
    theta = np.full(len(steps), 4.0)
    for _ in range(200):
        weighted = np.exp(theta[:, None] * steps) * masses
        moment = weighted.sum(axis=1)
        slope = (steps * weighted).sum(axis=1) / moment
        step = np.where(slope > 0, np.log(moment) / np.maximum(slope, 1e-300), theta / 2)
        theta = np.maximum(theta - step, 1e-9)
        if np.abs(step).max() < 1e-10:
            break
    return theta


def reference_thetas(references: int, n: int, seed: int) -> Iterator[np.ndarray]:
    """``θ`` of every CUSUM of :data:`BANK` given each of ``references`` references of ``n`` uniform values."""
    rng = np.random.default_rng(seed)
    for _ in range(references):
        sample = rng.random(n)
        cdf = ReferenceCdf(np.quantile(sample, np.linspace(0, 1, QUANTILES)).tolist(), n)
        yield _theta(bin_masses(cdf, lambda x: np.clip(x, 0.0, 1.0)))  # (the values uniform: their CDF is x)


def bank_within_budget(thetas: np.ndarray, n: int, arl: float, z: float) -> tuple[float, np.ndarray]:
    """The share of references (rows of ``thetas``) whose bank keeps its budget ``arl`` (Bonferroni over
    :data:`BANK`) with margins of ``z`` reference spreads per CUSUM (the default: ``REFERENCE_Z``), and the
    thresholds."""
    margins = np.array([z * spec.reference_spread / np.sqrt(n) for spec in BANK])
    as_if = round(n * (REFERENCE_Z / z) ** 2)  # the reference size whose margin at REFERENCE_Z is z's at n
    h = np.array([cusum_threshold(spec, arl * len(BANK), as_if) for spec in BANK])
    b = h + np.array([spec.overshoot for spec in BANK])
    rates = np.exp((1 - thetas - margins) * b).mean(axis=1)  # the bank's rate over its budget, per reference
    return float((rates <= 1).mean()), h


def run_bank_overhead(targets: tuple[float, ...], alarms: int, references: int, n: int, seed: int) -> Iterator[str]:
    """Markdown lines: the multiplicity at each target (about ``alarms`` of the bank's false alarms each, with and
    without a continuous part of 0.7), then the reference spreads and the bank's share of references within budget."""
    yield "| bank | target per CUSUM | values | bank alarms | CUSUMs' alarms in sum | bank ÷ sum | m_eff |"
    yield "|---|---:|---:|---:|---:|---:|---:|"
    for part in (None, (0.3, 1.0)):
        size = len(bank(part))
        for target in targets:
            values = int(alarms * target / size)
            union, each = bank_alarms(part, target, values, seed)
            yield (f"| {size} CUSUMs | {target:.3g} | {values:,} | {union} | {each.sum()} | "
                   f"{union / max(each.sum(), 1):.3f} | {target * union / values:.1f} |")  # fmt: skip
    thetas = np.array(list(reference_thetas(references, n, seed)))
    measured = np.sqrt(n) * (1 - thetas).std(axis=0)
    yield ""
    yield f"Reference spreads, sqrt(n) (1 - θ) over {references} references of {n:,} values (exact θ) / the bank's:"
    yield ", ".join(f"{spec.name} {m:.1f}/{spec.reference_spread:.1f}" for spec, m in zip(BANK, measured, strict=True))
    pairs = np.corrcoef((1 - thetas).T)[np.triu_indices(len(BANK), 1)]
    yield f"Correlation of 1 - θ between two CUSUMs: mean {pairs.mean():.3f}, {pairs.min():.2f} to {pairs.max():.2f}"
    yield ""
    yield f"| margin (z) | thresholds at arl {DEFAULT_STREAM_ARL:.3g} | references whose bank keeps its budget |"
    yield "|---:|---|---:|"
    for z in (REFERENCE_Z, 1.4, 1.2, 1.0):
        share, h = bank_within_budget(thetas, n, DEFAULT_STREAM_ARL, z)
        yield f"| {z:.3f} | {h.min():.1f}–{h.max():.1f} (median {np.median(h):.1f}) | {share:.1%} |"
