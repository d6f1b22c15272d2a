"""Drift detectors. Pure and synchronous: no Kafka, no clock.

Each detector follows River's shape: ``update(...)``, then read ``drift_detected``; ``evidence()``
says why, in numbers an on-call engineer can check; ``to_bytes()``/``from_bytes()`` round-trip its
whole state. Streaming detectors take one value per ``update``; window detectors take a window of
events (:class:`~driftwarden.core.profile.Columns`) compared with the reference profile and also
expose a ``p_value`` (for false-discovery-rate control across all tests of a window, done by the
monitor) and whether the effect size crossed its floor.
"""

from __future__ import annotations

import math
import pickle
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Self

import numpy as np
from river import drift, stats

from driftwarden.core.events import Scalar
from driftwarden.core.profile import CategoricalProfile, Columns, NumericProfile, ReferenceProfile
from driftwarden.core.stats import (
    bin_proportions,
    category_test,
    compare_distributions,
    hotelling_t2,
    psi,
)

MIN_VALUES = 30  # fewer finite values in a window than this: no verdict
MIN_SEGMENT = 10  # fewest values on either side of a located change point


class Serializable:
    """Whole-state round trip through bytes (checkpoints). Only load bytes this system wrote."""

    def to_bytes(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, raw: bytes) -> Self:
        restored = pickle.loads(raw)  # our own checkpoints (see docs/operations.md)
        if not isinstance(restored, cls):
            raise TypeError(f"expected {cls.__name__}, got {type(restored).__name__}")
        return restored


class MeanShiftDetector(Serializable):
    """A change in the mean of one numeric stream: River's ADWIN plus a reference summary.

    The first ``reference_size`` values form the reference (mean and standard deviation, used to
    express a shift in reference standard deviations). No drift is reported before the reference is
    complete, so a new model version never alerts on its first few events. The last ``recent_size``
    values are kept so that, when drift fires, the change point is located (the CUSUM maximum) and the
    mean after it is reported; ADWIN's own post-cut window still mixes in pre-change values.

    ``delta`` is ADWIN's confidence: smaller means fewer false alarms and slightly later detection.
    The default 1e-5 gave no false alarm over 1.2M stable values while still catching a 1σ shift
    within ~100 values and a 0.5σ shift within ~300 (see docs/detectors.md).

    >>> import random
    >>> rng = random.Random(7)
    >>> detector = MeanShiftDetector(reference_size=500)
    >>> alarms = []
    >>> for i in range(4_000):
    ...     detector.update(rng.gauss(10.0 if i < 2_000 else 12.0, 2.0))
    ...     if detector.drift_detected:
    ...         alarms.append(i)
    >>> 2_000 <= alarms[0] < 2_200
    True
    >>> round(detector.evidence()["shift_sigma"])
    1
    """

    name = "adwin"

    def __init__(
        self,
        delta: float = 1e-5,
        reference_size: int = 1_000,
        recent_size: int = 512,
        reference: tuple[float, float] | None = None,
    ) -> None:
        """``reference=(mean, std)`` gives the reference directly (from a profile): no warm-up needed."""
        if not 0 < delta < 1:
            raise ValueError("delta must be between 0 and 1")
        if reference is None and reference_size < 2:
            raise ValueError("reference_size must be at least 2")
        self.delta = delta
        self.reference_size = 0 if reference is not None else reference_size
        self._known_reference = reference
        self.n_seen = 0
        self.drift_detected = False
        self._adwin = drift.ADWIN(delta=delta)
        self._reference = stats.Var()
        self._recent: deque[float] = deque(maxlen=recent_size)

    def update(self, x: float) -> None:
        self.n_seen += 1
        if self.n_seen <= self.reference_size:
            self._reference.update(x)
        self._recent.append(x)
        self._adwin.update(x)
        self.drift_detected = self._adwin.drift_detected and self.n_seen > self.reference_size

    def update_many(self, values: list[float], on_drift: Callable[[int], None]) -> None:
        """``update`` for each value (NaN skipped), calling ``on_drift(index)`` at each detection.

        Same result as calling ``update`` in a loop, with less per-value overhead (the hot path);
        inside ``on_drift`` the detector's state, ``evidence()`` included, is as of that value.
        """
        if self.n_seen < self.reference_size:  # only while a warm-up reference fills
            for i, x in enumerate(values):
                if x == x:
                    self.update(x)
                    if self.drift_detected:
                        on_drift(i)
            return
        finite = [x for x in values if x == x]
        index = None if len(finite) == len(values) else [i for i, x in enumerate(values) if x == x]
        adwin, recent, seen_before = self._adwin, self._recent, self.n_seen
        if adwin.drift_detected:  # River resets ADWIN on the update after a detection
            adwin._reset()
        # River's ADWIN.update() only wraps its Rust window; calling the window directly saves most
        # of the per-value cost (same results: tests/unit/test_state_roundtrip.py).
        window_update = adwin._helper.update
        start, last = 0, len(finite) - 1
        for i, x in enumerate(finite):
            if window_update(x):
                recent.extend(finite[start : i + 1])
                start = i + 1
                self.n_seen = seen_before + start
                adwin._drift_detected = self.drift_detected = True
                on_drift(i if index is None else index[i])
                if i < last:
                    adwin._reset()
                    window_update = adwin._helper.update
        recent.extend(finite[max(start, len(finite) - (recent.maxlen or len(finite))) :])
        self.n_seen = seen_before + len(finite)
        self.drift_detected = False

    @property
    def reference_mean(self) -> float:
        return self._known_reference[0] if self._known_reference else self._reference.mean.get()

    @property
    def reference_std(self) -> float:
        return self._known_reference[1] if self._known_reference else math.sqrt(self._reference.get())

    def change_point(self) -> tuple[int, float]:
        """Where the mean most likely changed among the recent values, and how clearly.

        Returns (values after the change, z) where z is the standardized CUSUM at that split: the
        mean difference in standard errors. Pure noise rarely exceeds ~4 over a full buffer.
        """
        recent = np.fromiter(self._recent, dtype=float)
        n = len(recent)
        if n < 2 * MIN_SEGMENT:
            return n, 0.0
        k = np.arange(MIN_SEGMENT, n - MIN_SEGMENT + 1)
        cusum = np.cumsum(recent - recent.mean())[k - 1]
        # Standardized CUSUM (the likelihood ratio of a mean change at k): unlike the raw CUSUM it does
        # not favour balanced splits, so a change found soon after it happened is located correctly; the
        # minimum segment keeps noise at the buffer's ends from looking like a change.
        statistic = np.abs(cusum) / np.sqrt(k * (n - k) / n)
        best = int(np.argmax(statistic))
        spread = float(recent.std()) or 1.0
        return n - int(k[best]), float(statistic[best]) / spread

    def evidence(self) -> dict[str, Scalar]:
        """Why the detector fired: reference vs current mean, computed on demand (not per update)."""
        after_change, change_z = self.change_point()
        current = list(self._recent)[-after_change:] if after_change else list(self._recent)
        current_mean = float(np.mean(current))
        std = self.reference_std
        shift = (current_mean - self.reference_mean) / std if std > 0 else None
        return {
            "statistic": "mean",
            "reference_mean": self.reference_mean,
            "reference_std": std,
            "reference_size": self.reference_size,
            "current_mean": current_mean,
            "current_window": len(current),
            "adwin_width": int(self._adwin.width),
            "shift_sigma": shift,
            "change_z": change_z,
            "delta": self.delta,
            "values_seen": self.n_seen,
        }


class WindowDetector(Serializable):
    """Base of the window detectors: one subject, one verdict per window.

    ``kind`` is the alert kind its findings raise, ``name`` the detector named in them.
    """

    kind: str
    name: str

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.drift_detected = False
        self.p_value: float | None = None
        self.effect_exceeded = False
        self._evidence: dict[str, Scalar] = {}

    def update(self, window: Columns) -> bool:
        """Test one window; return False when it held too little data for a verdict."""
        result = self._test(window)
        if result is None:
            self.drift_detected = False
            return False
        self.p_value, self.effect_exceeded, self._evidence = result
        self.drift_detected = self.effect_exceeded and (self.p_value is None or self.p_value < 0.01)
        return True

    def _test(self, window: Columns) -> tuple[float | None, bool, dict[str, Scalar]] | None:
        raise NotImplementedError

    def evidence(self) -> dict[str, Scalar]:
        return dict(self._evidence)

    def summary(self, model_id: str, model_version: str) -> str:
        return f"{self.kind.replace('_', ' ')} on {self.subject} of {model_id} v{model_version}"


class NumericDriftDetector(WindowDetector):
    """Distribution shift of one numeric column: KS test (p-value), PSI and normed Wasserstein (effect).

    >>> from driftwarden.core.profile import NumericProfile
    >>> rng = np.random.default_rng(1)
    >>> detector = NumericDriftDetector("x", 0, NumericProfile.of(rng.normal(0, 1, 5000), 0.0))
    >>> window = lambda values: Columns([""] * len(values), values, values[:, None],
    ...     np.zeros((len(values), 1), bool), [], np.zeros((len(values), 1), bool), values, values, values, values)
    >>> detector.update(window(rng.normal(0, 1, 2000))), detector.drift_detected
    (True, False)
    >>> detector.update(window(rng.normal(0.5, 1, 2000))), detector.drift_detected
    (True, True)
    >>> round(detector.evidence()["wasserstein_normed"], 1)
    0.5
    """

    kind = "data_drift"
    name = "ks_psi_wasserstein"

    def __init__(
        self,
        subject: str,
        column: int,
        profile: NumericProfile,
        psi_threshold: float = 0.2,
        wasserstein_threshold: float = 0.15,
        signal: bool = False,
    ) -> None:
        super().__init__(subject)
        self.column = column
        self.signal = signal
        self.reference = np.asarray(profile.quantiles)
        self.reference_n = profile.n
        self.edges = np.asarray(profile.edges)
        self.proportions = np.asarray(profile.proportions)
        self.std = profile.std
        self.mean = profile.mean
        self.psi_threshold = psi_threshold
        self.wasserstein_threshold = wasserstein_threshold
        if signal:
            self.kind = "prediction_drift"

    def _values(self, window: Columns) -> np.ndarray:
        values = window.signal if self.signal else window.numeric[:, self.column]
        return values[np.isfinite(values)]

    def _test(self, window: Columns) -> tuple[float | None, bool, dict[str, Scalar]] | None:
        values = self._values(window)
        if len(values) < MIN_VALUES:
            return None
        statistic, p_value, distance = compare_distributions(self.reference, values, self.std)
        population_stability = psi(self.proportions, bin_proportions(values, self.edges))
        effect = population_stability >= self.psi_threshold or distance >= self.wasserstein_threshold
        return (
            p_value,
            effect,
            {
                "statistic": "ks",
                "ks_statistic": statistic,
                "p_value": p_value,
                "psi": population_stability,
                "psi_threshold": self.psi_threshold,
                "wasserstein_normed": distance,
                "wasserstein_threshold": self.wasserstein_threshold,
                "reference_mean": self.mean,
                "reference_std": self.std,
                "current_mean": float(values.mean()),
                "current_std": float(values.std()),
                "window_values": len(values),
            },
        )

    def summary(self, model_id: str, model_version: str) -> str:
        e = self._evidence
        return (
            f"{self.subject} distribution shifted on {model_id} v{model_version}: mean {e['reference_mean']:.4g} -> "
            f"{e['current_mean']:.4g}, PSI {e['psi']:.3f}, Wasserstein {e['wasserstein_normed']:.2f} σ, "
            f"KS p={e['p_value']:.2g}"
        )


class CategoricalDriftDetector(WindowDetector):
    """Category frequency shift: chi-square test (p-value) and Jensen–Shannon distance (effect)."""

    kind = "data_drift"
    name = "chi2_js"

    def __init__(self, subject: str, column: int, profile: CategoricalProfile, js_threshold: float = 0.05) -> None:
        super().__init__(subject)
        self.column = column
        self.categories = list(profile.counts)
        self.reference_counts = np.array([profile.counts[c] for c in self.categories], dtype=float)
        self.js_threshold = js_threshold

    def _test(self, window: Columns) -> tuple[float | None, bool, dict[str, Scalar]] | None:
        values = [v for v in window.categorical[self.column] if v is not None]
        if len(values) < MIN_VALUES:
            return None
        seen = Counter(values)
        counts = np.array([seen.pop(c, 0) for c in self.categories] + [sum(seen.values())], dtype=float)
        # (the last slot counts the categories unseen in the reference)
        chi2, p_value, distance = category_test(np.append(self.reference_counts, 0.0), counts)
        top_reference = self.categories[int(np.argmax(self.reference_counts))] if self.categories else None
        current_share = counts[:-1] / counts.sum()
        return (
            p_value,
            distance >= self.js_threshold,
            {
                "statistic": "chi2",
                "chi2": chi2,
                "p_value": p_value,
                "js_distance": distance,
                "js_threshold": self.js_threshold,
                "unseen_rate": float(counts[-1] / counts.sum()),
                "top_reference_category": top_reference,
                "top_current_category": self.categories[int(np.argmax(current_share))] if self.categories else None,
                "window_values": len(values),
            },
        )

    def summary(self, model_id: str, model_version: str) -> str:
        e = self._evidence
        return (
            f"{self.subject} category mix shifted on {model_id} v{model_version}: JS distance "
            f"{e['js_distance']:.3f}, most common {e['top_reference_category']} -> {e['top_current_category']}, "
            f"chi2 p={e['p_value']:.2g}"
        )


class MultivariateDriftDetector(WindowDetector):
    """A shift of the numeric features' joint mean (Hotelling's T² with the reference covariance).

    Catches drift spread thinly over many features, each too small to flag alone. The effect size is
    the Mahalanobis distance between the window mean and the reference mean.
    """

    kind = "multivariate_drift"
    name = "hotelling_t2"

    def __init__(self, profile: ReferenceProfile, columns: list[int], distance_threshold: float = 0.1) -> None:
        super().__init__("numeric_features")
        self.columns = columns
        self.mean = np.asarray(profile.mean_vector)
        self.precision = np.asarray(profile.precision_matrix)
        self.reference_n = profile.n_events
        self.distance_threshold = distance_threshold

    def _test(self, window: Columns) -> tuple[float | None, bool, dict[str, Scalar]] | None:
        data = window.numeric[:, self.columns]
        complete = data[~np.isnan(data).any(axis=1)]
        if len(complete) < MIN_VALUES:
            return None
        n = len(complete)
        t2, p_value = hotelling_t2(complete.mean(axis=0), n, self.mean, self.precision, self.reference_n)
        distance = math.sqrt(max(t2, 0.0) * (n + self.reference_n) / (n * self.reference_n))
        return (
            p_value,
            distance >= self.distance_threshold,
            {
                "statistic": "hotelling_t2",
                "t2": t2,
                "p_value": p_value,
                "mahalanobis_distance": distance,
                "distance_threshold": self.distance_threshold,
                "features": len(self.columns),
                "window_rows": len(complete),
            },
        )

    def summary(self, model_id: str, model_version: str) -> str:
        e = self._evidence
        return (
            f"joint mean of {e['features']} numeric features shifted on {model_id} v{model_version}: "
            f"Mahalanobis distance {e['mahalanobis_distance']:.2f}, T² p={e['p_value']:.2g}"
        )


class RateCheck(WindowDetector):
    """A data-quality rate (missing, out of range, wrong type, unseen category) above its limit.

    No p-value: the limit is an explicit budget. ``reference_rate`` is subtracted first, so a feature
    that was always 20 % missing is judged on the increase.
    """

    kind = "data_quality"

    def __init__(self, subject: str, check: str, limit: float, reference_rate: float = 0.0) -> None:
        super().__init__(subject)
        self.name = check
        self.limit = limit
        self.reference_rate = reference_rate

    def rate(self, window: Columns) -> float | None:
        raise NotImplementedError

    def _test(self, window: Columns) -> tuple[float | None, bool, dict[str, Scalar]] | None:
        rate = self.rate(window)
        if rate is None:
            return None
        return (
            None,
            rate - self.reference_rate > self.limit,
            {
                "check": self.name,
                "rate": rate,
                "reference_rate": self.reference_rate,
                "limit": self.limit,
                "window_events": len(window),
            },
        )

    def summary(self, model_id: str, model_version: str) -> str:
        e = self._evidence
        return (
            f"{self.subject}: {e['rate']:.1%} of the window (reference {e['reference_rate']:.1%}, "
            f"limit +{e['limit']:.1%}) on {model_id} v{model_version}"
        )


class MissingRateCheck(RateCheck):
    def __init__(self, feature: str, column: int, categorical: bool, limit: float, reference_rate: float) -> None:
        super().__init__(f"{feature}/missing", "missing_rate", limit, reference_rate)
        self.column = column
        self.categorical = categorical

    def rate(self, window: Columns) -> float | None:
        if not len(window):
            return None
        if self.categorical:
            values = window.categorical[self.column]
            return sum(v is None for v in values) / len(values)
        return float(window.numeric_missing[:, self.column].mean())


class OutOfRangeCheck(RateCheck):
    def __init__(self, feature: str, column: int, profile: NumericProfile, limit: float) -> None:
        super().__init__(f"{feature}/out_of_range", "out_of_range", limit)
        self.column = column
        self.low, self.high = profile.minimum, profile.maximum

    def rate(self, window: Columns) -> float | None:
        values = window.numeric[:, self.column]
        values = values[np.isfinite(values)]
        if len(values) < MIN_VALUES:
            return None
        return float(np.mean((values < self.low) | (values > self.high)))


class TypeViolationCheck(RateCheck):
    def __init__(self, feature: str, column: int, limit: float) -> None:
        super().__init__(f"{feature}/type", "type_violation", limit)
        self.column = column

    def rate(self, window: Columns) -> float | None:
        return float(window.type_violations[:, self.column].mean()) if len(window) else None


class UnseenCategoryCheck(RateCheck):
    def __init__(self, feature: str, column: int, profile: CategoricalProfile, limit: float) -> None:
        super().__init__(f"{feature}/unseen_categories", "unseen_categories", limit)
        self.column = column
        self.known = set(profile.counts)

    def rate(self, window: Columns) -> float | None:
        values = [v for v in window.categorical[self.column] if v is not None]
        if len(values) < MIN_VALUES:
            return None
        return sum(v not in self.known for v in values) / len(values)


class EstimatedAccuracyDetector(WindowDetector):
    """Confidence-based performance estimation (CBPE-style), no labels needed.

    For a calibrated classifier the expected accuracy of a window is the mean probability of the
    predicted class. A drop against the reference shows degradation caused by inputs moving toward
    the decision boundary before labels arrive. It cannot see a pure concept drift (the inputs and
    the scores do not change then); labels catch that.
    """

    kind = "estimated_performance"
    name = "cbpe"

    def __init__(self, reference_confidence: float, drop: float = 0.05) -> None:
        super().__init__("accuracy")
        self.reference = reference_confidence
        self.drop = drop

    def _test(self, window: Columns) -> tuple[float | None, bool, dict[str, Scalar]] | None:
        confidence = window.confidence[np.isfinite(window.confidence)]
        if len(confidence) < MIN_VALUES:
            return None
        estimate = float(confidence.mean())
        return (
            None,
            self.reference - estimate >= self.drop,
            {
                "estimated_accuracy": estimate,
                "reference_estimated_accuracy": self.reference,
                "drop_threshold": self.drop,
                "window_values": len(confidence),
            },
        )

    def summary(self, model_id: str, model_version: str) -> str:
        e = self._evidence
        return (
            f"estimated accuracy of {model_id} v{model_version} fell from {e['reference_estimated_accuracy']:.3f} "
            f"to {e['estimated_accuracy']:.3f} (no labels needed)"
        )


class BudgetDetector(WindowDetector):
    """Latency p99 or cost per 1,000 requests over a budget, or up by a ratio on the reference."""

    kind = "latency"

    def __init__(self, kind: str, reference: float | None, budget: float | None, change_ratio: float) -> None:
        super().__init__("p99_ms" if kind == "latency" else "per_1k_requests")
        self.kind = kind
        self.name = "budget" if budget is not None else "change"
        self.reference = reference
        self.budget = budget
        self.change_ratio = change_ratio

    def _test(self, window: Columns) -> tuple[float | None, bool, dict[str, Scalar]] | None:
        values = window.latency_ms if self.kind == "latency" else window.cost
        values = values[np.isfinite(values)]
        if len(values) < MIN_VALUES:
            return None
        if self.kind == "latency":
            current, typical = float(np.quantile(values, 0.99)), float(np.quantile(values, 0.5))
        else:
            current, typical = float(values.mean() * 1000), float(values.mean())
        over_budget = self.budget is not None and current > self.budget
        changed = self.reference is not None and self.reference > 0 and current > self.reference * self.change_ratio
        return (
            None,
            over_budget or changed,
            {
                "current": current,
                "typical": typical,  # latency p50, or mean cost per request
                "reference": self.reference,
                "budget": self.budget,
                "change_ratio": self.change_ratio,
                "window_values": len(values),
            },
        )

    def summary(self, model_id: str, model_version: str) -> str:
        e = self._evidence
        what = "latency p99 (ms)" if self.kind == "latency" else "cost per 1,000 requests"
        return (
            f"{what} of {model_id} v{model_version} is {e['current']:.4g} "
            f"(reference {e['reference']}, budget {e['budget']})"
        )


def window_detectors(profile: ReferenceProfile, config: Any) -> list[WindowDetector]:
    """The default detector set for a profile, parameterized by a ModelMonitorConfig."""
    detectors: list[WindowDetector] = []
    for j, (name, numeric) in enumerate(profile.numeric.items()):
        detectors.append(NumericDriftDetector(name, j, numeric, config.psi_threshold, config.wasserstein_threshold))
        detectors.append(MissingRateCheck(name, j, False, config.missing_rate_increase, numeric.missing_rate))
        detectors.append(OutOfRangeCheck(name, j, numeric, config.out_of_range_rate))
        detectors.append(TypeViolationCheck(name, j, config.type_violation_rate))
    for j, (name, categorical) in enumerate(profile.categorical.items()):
        detectors.append(CategoricalDriftDetector(name, j, categorical, config.js_threshold))
        detectors.append(MissingRateCheck(name, j, True, config.missing_rate_increase, categorical.missing_rate))
        detectors.append(UnseenCategoryCheck(name, j, categorical, config.unseen_category_rate))
    if profile.signal is not None:
        subject = "score" if profile.task == "classification" else "prediction"
        detectors.append(
            NumericDriftDetector(
                subject, -1, profile.signal, config.psi_threshold, config.wasserstein_threshold, signal=True
            )
        )
    if config.multivariate and profile.multivariate_features:
        columns = [list(profile.numeric).index(f) for f in profile.multivariate_features]
        detectors.append(MultivariateDriftDetector(profile, columns))
    if profile.confidence_mean is not None:
        detectors.append(EstimatedAccuracyDetector(profile.confidence_mean, config.estimated_accuracy_drop))
    if profile.latency_p99_ms is not None or config.latency_p99_budget_ms is not None:
        detectors.append(
            BudgetDetector("latency", profile.latency_p99_ms, config.latency_p99_budget_ms, config.latency_change_ratio)
        )
    if profile.cost_per_1k is not None or config.cost_per_1k_budget is not None:
        detectors.append(
            BudgetDetector("cost", profile.cost_per_1k, config.cost_per_1k_budget, config.cost_change_ratio)
        )
    return detectors
