"""Reading and comparing reference profiles: ``driftwarden profile show`` and ``profile diff``.

:func:`describe` is a readable summary per feature. :func:`compare` runs the monitor's own window
detectors (:class:`~driftwarden.core.detectors.NumericDriftDetector`,
:class:`~driftwarden.core.detectors.CategoricalDriftDetector`,
:class:`~driftwarden.core.detectors.EmbeddingDriftDetector`, with the config's tests, thresholds
and Benjamini–Hochberg at the level of one monitor window, ``window_level``) with profile A as the
reference and profile B as the window: a numeric feature's window is B's quantile summary (up to
1,000 points, so the KS p-value is that of a 1,000-value window: conservative for larger profiles),
a categorical feature's window is B's counts (one comparison, not many windows against one
reference: the plain chi-square p-value), an embedding's window is B's projected reference sample
moved to A's centroid (the MMD of 250 of B's vectors, as of a monitor window), with how far the
centroid moved and the mean distance to it.
Embeddings of different lengths are not compared: their row says so.

>>> import numpy as np
>>> from driftwarden.core.config import ModelMonitorConfig
>>> from driftwarden.core.profile import CategoricalProfile, NumericProfile, ReferenceProfile
>>> rng = np.random.default_rng(0)
>>> def profile(shift, nl):
...     numeric = {"amount": NumericProfile.of(rng.normal(shift, 1, 5000), 0.0)}
...     categorical = {"country": CategoricalProfile({"DE": 1000 - nl, "NL": nl}, 0.0)}
...     return ReferenceProfile("fraud", "1", 5000, "classification", None, numeric, categorical, None, None)
>>> rows = compare(profile(0.0, 500), profile(0.5, 800), ModelMonitorConfig())
>>> [(row.feature, row.drift) for row in rows]
[('amount', True), ('country', True)]
>>> [(row.feature, row.drift) for row in compare(profile(0.0, 500), profile(0.0, 505), ModelMonitorConfig())]
[('amount', False), ('country', False)]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from driftwarden.core.config import ModelMonitorConfig
from driftwarden.core.detectors import (
    CategoricalDriftDetector,
    EmbeddingDriftDetector,
    NumericDriftDetector,
    WindowDetector,
    decide,
)
from driftwarden.core.events import Scalar
from driftwarden.core.profile import CategoricalProfile, Columns, EmbeddingProfile, NumericProfile, ReferenceProfile

SIGNAL = "(prediction signal)"


def _numeric_line(name: str, p: NumericProfile) -> str:
    quartiles = np.quantile(p.quantiles, [0.25, 0.5, 0.75])
    return (
        f"  {name}  numeric  n={p.n:,}  missing {p.missing_rate:.1%}  mean {p.mean:.4g}  std {p.std:.4g}  "
        f"min {p.minimum:.4g}  p25 {quartiles[0]:.4g}  median {quartiles[1]:.4g}  p75 {quartiles[2]:.4g}  "
        f"max {p.maximum:.4g}"
    )


def _categorical_line(name: str, p: CategoricalProfile) -> str:
    total = max(sum(p.counts.values()), 1)
    top = sorted(p.counts.items(), key=lambda item: -item[1])[:5]
    shares = ", ".join(f"{category!r} {count / total:.1%}" for category, count in top)
    more = f" (+{len(p.counts) - len(top)} more)" if len(p.counts) > len(top) else ""
    return f"  {name}  categorical  {len(p.counts)} categories  missing {p.missing_rate:.1%}  top: {shares}{more}"


def _embedding_line(name: str, p: EmbeddingProfile) -> str:
    d = p.distance
    q = np.quantile(d.quantiles, [0.05, 0.5, 0.95])
    return (
        f"  {name}  embedding  {p.dim} dimensions  n={d.n:,}  missing {d.missing_rate:.1%}  "
        f"{len(p.sample):,} reference vectors  distance to the centroid: mean {d.mean:.4g}  p5 {q[0]:.4g}  "
        f"median {q[1]:.4g}  p95 {q[2]:.4g}  max {d.maximum:.4g}"
    )


def feature_counts(profile: ReferenceProfile) -> str:
    """``3 numeric and 2 categorical features`` (and the embeddings, when there are some)."""
    numeric, categorical, embedding = len(profile.numeric), len(profile.categorical), len(profile.embedding)
    if embedding:
        return f"{numeric} numeric, {categorical} categorical and {embedding} embedding features"
    return f"{numeric} numeric and {categorical} categorical features"


def describe(profile: ReferenceProfile) -> str:
    """A readable summary: what the profile is of, then one line per feature.

    >>> from driftwarden.core.profile import CategoricalProfile, NumericProfile, ReferenceProfile
    >>> amount = NumericProfile.of(np.arange(101.0), 0.0)
    >>> country = CategoricalProfile({"NL": 3, "DE": 1}, 0.2)
    >>> print(describe(ReferenceProfile("fraud", "3", 101, "regression", None, {"amount": amount},
    ...     {"country": country}, None, None)))
    fraud v3: 101 rows, regression, 1 numeric and 1 categorical features
      amount  numeric  n=101  missing 0.0%  mean 50  std 29.15  min 0  p25 25  median 50  p75 75  max 100
      country  categorical  2 categories  missing 20.0%  top: 'NL' 75.0%, 'DE' 25.0%
    """
    head = (
        f"{profile.model_id} v{profile.model_version}: {profile.n_events:,} rows, {profile.task}"
        + (f" (positive class {profile.positive_class!r})" if profile.positive_class else "")
        + f", {feature_counts(profile)}"
    )
    lines = [head]
    lines += [_numeric_line(name, p) for name, p in profile.numeric.items()]
    lines += [_categorical_line(name, p) for name, p in profile.categorical.items()]
    lines += [_embedding_line(name, p) for name, p in profile.embedding.items()]
    if profile.signal is not None:
        lines.append(_numeric_line(SIGNAL, profile.signal))
    if profile.multivariate_features:
        lines.append(f"  joint mean and covariance of {len(profile.multivariate_features)} numeric features")
    return "\n".join(lines)


@dataclass
class FeatureDiff:
    """How one feature of profile B differs from profile A."""

    feature: str
    change: str  # "compared", "only in A", "only in B", "type changed", or an embedding's "length changed: 64 -> 32"
    drift: bool = False
    evidence: dict[str, Scalar] | None = None
    missing_rate_change: float = 0.0

    def as_text(self) -> str:
        if self.change != "compared" or self.evidence is None:
            return f"  {self.feature}: {self.change}"
        e = self.evidence
        verdict = "DIFFERS" if self.drift else "same"
        missing = f", missing rate {self.missing_rate_change:+.1%}" if self.missing_rate_change else ""
        if "mmd2" in e:
            return (
                f"  {self.feature}: {verdict}  MMD² {e['mmd2']:.4f} (floor {e['mmd_threshold']:.4f}, "
                f"p={e['p_value']:.2g}), centroid moved {e['centroid_shift']:.4g}, mean distance to the centroid "
                f"{e['reference_distance']:.4g} -> {e['current_distance']:.4g}{missing}"
            )
        if "psi" in e:
            return (
                f"  {self.feature}: {verdict}  mean {e['reference_mean']:.4g} -> {e['current_mean']:.4g}, "
                f"PSI {e['psi']:.3f}, Wasserstein {e['wasserstein_normed']:.3f} σ, KS {e['ks_statistic']:.3f} "
                f"(p={e['p_value']:.2g}){missing}"
            )
        return (
            f"  {self.feature}: {verdict}  JS distance {e['js_distance']:.3f}, chi2 p={e['p_value']:.2g}, "
            f"most common {e['top_reference_category']} -> {e['top_current_category']}, "
            f"unseen in A {e['unseen_rate']:.1%}{missing}"
        )


def _numeric_detector(name: str, a: NumericProfile, b: NumericProfile, config: ModelMonitorConfig) -> WindowDetector:
    detector = NumericDriftDetector(
        name, 0, a, config.psi_threshold, config.wasserstein_threshold, tests=config.tests_for(name, "numeric"),
        min_values=1,
    )  # fmt: skip
    detector.update(Columns.of_rows(np.asarray(b.quantiles, dtype=float)[:, None]))
    return detector


def _categorical_detector(
    name: str, a: CategoricalProfile, b: CategoricalProfile, config: ModelMonitorConfig
) -> WindowDetector:
    detector = CategoricalDriftDetector(name, 0, a, config.js_threshold, config.tests_for(name, "categorical"), 1)
    detector.update_profile(b)
    return detector


def _embedding_detector(
    name: str, a: EmbeddingProfile, b: EmbeddingProfile, config: ModelMonitorConfig
) -> WindowDetector:
    detector = EmbeddingDriftDetector(name, 0, a, config.embedding_mmd_threshold, min_values=1)
    detector.update_profile(b)
    return detector


def _features(profile: ReferenceProfile) -> list[str]:
    return [*profile.numeric, *profile.categorical, *profile.embedding]


def compare(a: ReferenceProfile, b: ReferenceProfile, config: ModelMonitorConfig) -> list[FeatureDiff]:
    """Per feature (A's order, then B's new ones): whether B differs from A by the monitor's tests.

    >>> rng = np.random.default_rng(0)
    >>> def profile(vectors):
    ...     embedding = {"text": EmbeddingProfile.of(vectors, 0.0)}
    ...     return ReferenceProfile("search", "1", len(vectors), "regression", None, {}, {}, None, None,
    ...                             embedding=embedding)
    >>> a, same = profile(rng.normal(0, 1, (4000, 64))), profile(rng.normal(0, 1, (4000, 64)))
    >>> moved = profile(rng.normal(0, 1, (4000, 64)) + np.r_[np.full(8, 0.6), np.zeros(56)])
    >>> [(row.feature, row.drift) for row in compare(a, same, ModelMonitorConfig())]
    [('text', False)]
    >>> (row,) = compare(a, moved, ModelMonitorConfig()); row.drift, round(row.evidence["centroid_shift"], 1)
    (True, 1.7)
    >>> compare(a, profile(rng.normal(0, 1, (4000, 32))), ModelMonitorConfig())[0].change
    'length changed: 64 -> 32'
    """
    rows: list[FeatureDiff] = []
    tested: list[tuple[FeatureDiff, WindowDetector]] = []
    for name in dict.fromkeys([*_features(a), *_features(b)]):
        if name in a.numeric and name in b.numeric:
            detector = _numeric_detector(name, a.numeric[name], b.numeric[name], config)
            change = b.numeric[name].missing_rate - a.numeric[name].missing_rate
        elif name in a.categorical and name in b.categorical:
            detector = _categorical_detector(name, a.categorical[name], b.categorical[name], config)
            change = b.categorical[name].missing_rate - a.categorical[name].missing_rate
        elif name in a.embedding and name in b.embedding:
            ea, eb = a.embedding[name], b.embedding[name]
            if (ea.dim, ea.seed) != (eb.dim, eb.seed):  # not comparable: another vector space
                what, before, after = ("length", ea.dim, eb.dim) if ea.dim != eb.dim else ("seed", ea.seed, eb.seed)
                rows.append(FeatureDiff(name, f"{what} changed: {before} -> {after}"))
                continue
            detector = _embedding_detector(name, ea, eb, config)
            change = eb.distance.missing_rate - ea.distance.missing_rate
        else:
            in_a, in_b = name in _features(a), name in _features(b)
            rows.append(FeatureDiff(name, "type changed" if in_a and in_b else "only in A" if in_a else "only in B"))
            continue
        row = FeatureDiff(name, "compared", missing_rate_change=change)
        rows.append(row)
        tested.append((row, detector))
    if a.signal is not None and b.signal is not None:
        row = FeatureDiff(SIGNAL, "compared")
        rows.append(row)
        tested.append((row, _numeric_detector(SIGNAL, a.signal, b.signal, config)))
    decide([detector for _, detector in tested], config.window_level)
    for row, detector in tested:
        row.drift, row.evidence = detector.drift_detected, detector.evidence()
    return rows
