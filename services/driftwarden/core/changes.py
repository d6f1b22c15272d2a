"""What changed, from the evidence: location, spread, shape or category mix, its direction and size.

A :class:`Change` describes a drift finding in the words an on-call engineer checks first and is its
signature in the alert lifecycle (:mod:`driftwarden.core.alerting`): a finding is a *repeat* of a
resolved alert only when detector, aspect and direction agree and the size is within a tolerance.

Numeric columns are described by robust statistics of the window against the reference quantiles:
location is the median's move in reference robust standard deviations (IQR / 1.349; the standard
deviation when the IQR is 0, e.g. sparse counts; then the mean's move when the median cannot move),
spread the log ratio of the IQRs (of the standard deviations when an IQR is 0). Whichever is more
standard errors away from no change names it; when both stay below :data:`SHAPE_FLOOR` it is the
shape (the largest gap between the two CDFs, Kolmogorov's D, is its size).

>>> from driftwarden.core.profile import NumericProfile
>>> rng = np.random.default_rng(0)
>>> reference = NumericProfile.of(rng.normal(0, 1, 5000), 0.0)
>>> numeric_change(reference, rng.normal(0, 2, 2000)).text
'spread wider: IQR x1.95, median +0.00 σ'
>>> numeric_change(reference, rng.normal(1, 1, 2000)).aspect
'location'
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import jensenshannon

from driftwarden.core.detectors import (
    CategoricalDriftDetector,
    EmbeddingDriftDetector,
    MultivariateDriftDetector,
    NumericDriftDetector,
    WindowDetector,
)
from driftwarden.core.detectors.multimodal import MODES
from driftwarden.core.detectors.sequential import ATOM_STATISTICS
from driftwarden.core.detectors.streaming import valley_text
from driftwarden.core.events import Scalar
from driftwarden.core.profile import CategoricalProfile, Columns, NumericProfile, ReferenceProfile
from driftwarden.core.stats import moments

#: Below this (σ for location, log ratio for spread) neither names the change: it is the shape.
SHAPE_FLOOR = 0.05
_QUARTILES = (0.25, 0.5, 0.75)
#: The evidence value that sizes a finding of the other window checks (the first one present).
SIZE_STATISTICS = ("rate", "estimated_accuracy", "current")
#: A categorical rank-CUSUM alarm names this many categories, those whose shares moved most (:func:`rank_mix_change`).
TOP_MOVERS = 3
#: ... and pools, for its Jensen-Shannon distance, the categories its values since the change point hold fewer
#: than this many of by the reference's shares (over many categories a few hundred values' distance is noise).
MIN_EXPECTED = 5.0


@dataclass(frozen=True)
class Change:
    """``aspect``: location, spread, shape, category_mix, atom_share, mode_share, value_share (or the finding's
    kind); ``size`` in its unit."""

    aspect: str
    direction: str
    size: float | None
    text: str

    def evidence(self) -> dict[str, Scalar]:
        return {"change": self.aspect, "change_direction": self.direction, "change_size": self.size}


def _reference_quartiles(profile: NumericProfile) -> np.ndarray:
    points = np.linspace(0.0, 1.0, len(profile.quantiles))
    return np.interp(_QUARTILES, points, profile.quantiles)


def _moves(profile: NumericProfile, values: np.ndarray) -> tuple[float, float]:
    """(location in reference σ, log spread ratio) of finite ``values`` against the reference."""
    q1, median, q3 = _reference_quartiles(profile)
    c1, current_median, c3 = np.quantile(values, _QUARTILES)
    scale = (q3 - q1) / 1.349 if q3 > q1 else profile.std
    scale = scale if scale > 0 else 1.0
    location = (current_median - median) / scale
    if location == 0.0 and profile.std > 0:  # a median that cannot move (counts): the mean's move
        location = (float(values.mean()) - profile.mean) / profile.std
    if q3 > q1 and c3 > c1:
        spread = math.log((c3 - c1) / (q3 - q1))
    else:
        current_std = moments(values)[1]
        spread = math.log(current_std / profile.std) if current_std > 0 and profile.std > 0 else 0.0
    return float(location), spread


def _standard_errors(location: float, spread: float, n: int) -> tuple[float, float]:
    """Location and spread moves in their standard errors (normal theory: the sample median's is
    1.2533 σ/√n, the log IQR's 1.166/√n), so that the clearer of the two names the change."""
    root = math.sqrt(max(n, 1))
    return location * root / (1.2533 * math.exp(spread)), spread * root / 1.166


def numeric_change(profile: NumericProfile, values: np.ndarray) -> Change:
    """The change of one numeric column's window (finite values) against its reference."""
    location, spread = _moves(profile, values)
    ratio = f"IQR x{math.exp(spread):.2f}, median {location:+.2f} σ"
    if max(abs(location), abs(spread)) < SHAPE_FLOOR:
        points = np.linspace(0.0, 1.0, len(profile.quantiles))
        ordered = np.sort(values)
        reference_cdf = np.interp(ordered, profile.quantiles, points)
        current_cdf = np.arange(1, len(ordered) + 1) / len(ordered)
        distance = float(np.max(np.abs(current_cdf - reference_cdf)))
        return Change("shape", "", distance, f"shape changed (CDF gap {distance:.3f}): {ratio}")
    z_location, z_spread = _standard_errors(location, spread, len(values))
    if abs(z_location) >= abs(z_spread):
        direction = "up" if location > 0 else "down"
        return Change("location", direction, abs(location), f"location {direction}: median {location:+.2f} σ, {ratio}")
    direction = "wider" if spread > 0 else "narrower"
    return Change("spread", direction, abs(spread), f"spread {direction}: {ratio}")


def joint_change(profiles: Sequence[tuple[str, NumericProfile]], data: np.ndarray) -> Change:
    """The change of several numeric columns together (rows of ``data`` complete, columns as ``profiles``)."""
    moves = [_moves(profile, data[:, j]) for j, (_, profile) in enumerate(profiles)]
    location = np.array([m[0] for m in moves])
    spread = np.array([m[1] for m in moves])
    z = np.array([_standard_errors(loc, sp, len(data)) for loc, sp in moves])
    aspect, sizes = ("location", location) if np.sum(z[:, 0] ** 2) >= np.sum(z[:, 1] ** 2) else ("spread", spread)
    top = int(np.argmax(np.abs(sizes)))
    name = profiles[top][0]
    if aspect == "location":
        direction = "up" if sizes[top] > 0 else "down"
        largest = f"{name} median {sizes[top]:+.2f} σ"
    else:
        direction = "wider" if sizes[top] > 0 else "narrower"
        largest = f"{name} IQR x{math.exp(sizes[top]):.2f}"
    moved = int(np.sum(np.abs(sizes) >= SHAPE_FLOOR))
    size = float(np.sqrt(np.sum(sizes**2)))
    text = f"{aspect} of {moved} of {len(profiles)} features moved (largest: {largest})"
    return Change(aspect, f"{name} {direction}", size, text)


def category_change(profile: CategoricalProfile, values: Sequence[str]) -> Change:
    """The change of a categorical column's mix: the category whose share moved most."""
    total_reference = sum(profile.counts.values()) or 1
    seen = Counter(values)
    total = len(values) or 1
    categories = list(dict.fromkeys([*profile.counts, *seen]))
    shares = [(c, profile.counts.get(c, 0) / total_reference, seen.get(c, 0) / total) for c in categories]
    category, before, after = max(shares, key=lambda s: abs(s[2] - s[1]))
    moved = 0.5 * sum(abs(after_ - before_) for _, before_, after_ in shares)  # total variation distance
    direction = f"{category} {'up' if after > before else 'down'}"
    return Change("category_mix", direction, moved, f"category mix: {category} {before:.1%} -> {after:.1%}")


def rank_mix_change(
    profile: CategoricalProfile, ranked: Sequence[str], codes: np.ndarray, others: str
) -> tuple[Change, dict[str, Scalar]]:
    """A categorical feature's rank-CUSUM alarm on the categories' scale: the shares of its values since the
    change point against the reference's, by category.

    ``codes`` are those values as their frequency ranks (``ranked[code]``; ``len(ranked)``: a category the
    ranks leave out, new or rare in the reference, together named ``others``). The evidence names the
    :data:`TOP_MOVERS` categories whose shares moved most, the share of the values that moved (total
    variation distance, the change's size) and the Jensen-Shannon distance (base 2, the window test's
    effect size; the ranked categories expected fewer than :data:`MIN_EXPECTED` times pooled).

    >>> profile = CategoricalProfile({"NL": 600, "DE": 300, "BE": 95, "LU": 5}, 0.0)
    >>> codes = np.array([0.0] * 40 + [1.0] * 48 + [2.0] * 7 + [3.0] * 5)  # (LU: not ranked)
    >>> change, evidence = rank_mix_change(profile, ["NL", "DE", "BE"], codes, "new or rare categories")
    >>> change.text
    'category mix: NL 60.0% -> 40.0%, DE 30.0% -> 48.0%, new or rare categories 0.5% -> 5.0% (total variation 0.225, \
JS distance 0.215)'
    >>> evidence["top_category"], evidence["reference_share"], evidence["recent_share"]
    ('NL', 0.6, 0.4)
    """
    counts = [profile.counts.get(c, 0) for c in ranked]
    total = sum(profile.counts.values())
    before = np.array([*counts, total - sum(counts)], dtype=float) / max(total, 1)
    after = np.bincount(codes.astype(np.int64), minlength=len(before)) / max(len(codes), 1)
    moved = after - before
    names = [*ranked, others]
    top = [int(k) for k in np.argsort(-np.abs(moved), kind="stable")[:TOP_MOVERS]]
    shares = ", ".join(f"{names[k]} {before[k]:.1%} -> {after[k]:.1%}" for k in top)
    pooled = before * len(codes) < MIN_EXPECTED
    pooled[-1] = False  # (``others``: mostly new categories, a change however few the values)
    pair = [np.append(p[~pooled], p[pooled].sum()) for p in (before, after)]
    js = float(jensenshannon(*pair, base=2))
    total_variation = float(0.5 * np.abs(moved).sum())
    k = top[0]
    direction = f"{names[k]} {'up' if moved[k] > 0 else 'down'}"
    text = f"category mix: {shares} (total variation {total_variation:.3f}, JS distance {js:.3f})"
    evidence: dict[str, Scalar] = {
        "top_category": names[k],
        "reference_share": float(before[k]),
        "recent_share": float(after[k]),
        "categories_moved": shares,
        "total_variation": total_variation,
        "js_distance": js,
    }
    return Change("category_mix", direction, total_variation, text), evidence


def streaming_change(evidence: dict[str, Scalar]) -> Change:
    """The change a streaming detector saw, from its evidence: a location alarm (``statistic``
    location) by the move in σ of the normal scores since the change point; an alarm of the end atoms'
    shares (``atom_share``), of a multimodal feature's modes' weights (``mode_share``) or of a few-valued feature
    (``value_share``: the value whose share moved most) by how far the share moved; a spread or tail alarm as a
    spread change by the ratio of their standard deviations (a tail alarm on one side is a spread change too: the
    detector's own summary names the tail)."""
    statistic = evidence.get("statistic")
    shift, spread = evidence.get("shift_sigma"), evidence.get("spread_ratio")
    before, after = evidence.get("reference_share"), evidence.get("recent_share")
    value = evidence.get("value")
    if (
        isinstance(before, float)
        and isinstance(after, float)
        and (statistic in ATOM_STATISTICS or statistic == MODES or isinstance(value, float))
    ):
        direction = "up" if after >= before else "down"  # (the share at the range's atoms, above a valley, of a value)
        if statistic == MODES:
            aspect, where = "mode_share", f"above {valley_text(evidence)}"
        elif statistic in ATOM_STATISTICS:
            aspect, where = "atom_share", f"at {evidence.get('atom_values')}"
        else:
            aspect, where = "value_share", f"equal to {value:.6g}"
        return Change(aspect, direction, abs(after - before), f"share {where} {before:.1%} -> {after:.1%}")
    if statistic != "location" and isinstance(spread, float):
        direction = "wider" if spread >= 1.0 else "narrower"
        return Change("spread", direction, spread, f"spread {direction} x{spread:.2f}")
    if not isinstance(shift, float):
        return Change("location", "", None, "location moved")
    direction = "up" if shift > 0 else "down"
    return Change("location", direction, abs(shift), f"location {direction} {shift:+.2f} σ")


def window_change(detector: WindowDetector, window: Columns, profile: ReferenceProfile) -> Change:
    """What a window detector's drifted verdict saw change in ``window``."""
    if isinstance(detector, NumericDriftDetector):
        values = window.signal if detector.signal else window.numeric[:, detector.column]
        return numeric_change(detector.profile, values[np.isfinite(values)])
    if isinstance(detector, CategoricalDriftDetector):
        return category_change(detector.profile, [v for v in window.categorical[detector.column] if v is not None])
    if isinstance(detector, EmbeddingDriftDetector):  # described by the distances to the reference centroid
        distances = detector.profile.distances(window.embeddings[detector.column])
        return numeric_change(detector.profile.distance, distances[np.isfinite(distances)])
    if isinstance(detector, MultivariateDriftDetector):
        data = window.numeric[:, detector.columns]
        names = list(profile.numeric)
        profiles = [(names[j], profile.numeric[names[j]]) for j in detector.columns]
        return joint_change(profiles, data[~np.isnan(data).any(axis=1)])
    evidence = detector.evidence()  # a rate, a budget, estimated accuracy: its statistic is the size
    size = next((value for key in SIZE_STATISTICS if isinstance(value := evidence.get(key), float)), None)
    return Change(detector.kind, detector.subject, size, "")
