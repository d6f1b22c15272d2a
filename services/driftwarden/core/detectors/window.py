"""Window detectors: a window of events (:class:`~driftwarden.core.profile.Columns`) against the reference.

``update(window)`` runs the detector's test and records its p-value (if it is a hypothesis test),
whether the effect size crossed its floor, and the evidence. It does not decide: the verdict of a
window is :func:`decide`'s, in one place, with Benjamini–Hochberg across every p-value of the window
(the monitor calls it at ``ModelMonitorConfig.window_level``, the window tests' share of the model's
false-alarm budget; a detector used alone is decided with ``decide([detector], q)``).
"""

from __future__ import annotations

import abc
import math
from collections import Counter
from collections.abc import Sequence
from typing import ClassVar, Self

import numpy as np

from driftwarden.core.detectors.base import Detector, build
from driftwarden.core.events import AlertKind, Scalar
from driftwarden.core.profile import CategoricalProfile, Columns, NumericProfile
from driftwarden.core.state import State, StateError, StateReader, pack_optional_float, pack_scalars
from driftwarden.core.stats import (
    benjamini_hochberg,
    category_test,
    compare_sorted,
    hotelling_t2,
    moments,
    psi,
    sorted_bin_proportions,
)
from driftwarden.core.stattests import DEFAULT_TESTS, STAT_TESTS, check_tests

#: Fewer finite values in a window than this: no verdict (``ModelMonitorConfig.min_window_values``).
MIN_VALUES = 30
TestResult = tuple[float | None, bool, dict[str, Scalar]]


class WindowDetector(Detector):
    """Base of the window detectors: one subject, one test per window, the verdict from :func:`decide`.

    ``kind`` is the alert kind its findings raise, ``name`` the detector named in them.
    """

    kind: AlertKind

    def __init__(self, subject: str, min_values: int = MIN_VALUES) -> None:
        super().__init__()
        if min_values < 1:
            raise ValueError("min_values must be positive")
        self.subject = subject
        self.min_values = min_values
        self.p_value: float | None = None
        self.effect_exceeded = False
        self._evidence: dict[str, Scalar] = {}

    def update(self, window: Columns) -> bool:
        """Test one window; return False when it held too little data for a verdict."""
        return self._record(self._test(window))

    def _record(self, result: TestResult | None) -> bool:
        """Keep a test's result for :func:`decide`; False when there was none."""
        self._drift_detected = False
        if result is None:
            return False
        self.p_value, self.effect_exceeded, self._evidence = result
        return True

    def _conclude(self, significant: bool) -> None:
        self._drift_detected = self.effect_exceeded and significant

    @abc.abstractmethod
    def _test(self, window: Columns) -> TestResult | None:
        """(p-value or None, effect crossed its floor, evidence), or None when the window is too small."""

    def evidence(self) -> dict[str, Scalar]:
        return dict(self._evidence)

    def summary(self, model_id: str, model_version: str) -> str:
        return f"{self.kind.replace('_', ' ')} on {self.subject} of {model_id} v{model_version}"

    def dynamic_state(self) -> State:
        return {
            "drift_detected": self._drift_detected,
            "p_value": pack_optional_float(self.p_value),
            "effect_exceeded": self.effect_exceeded,
            "evidence": pack_scalars(self._evidence),
        }

    def load_dynamic_state(self, state: StateReader) -> None:
        self._drift_detected = state.flag("drift_detected")
        self.p_value = state.optional_number("p_value")
        self.effect_exceeded = state.flag("effect_exceeded")
        self._evidence = state.scalars("evidence")


def decide(detectors: Sequence[WindowDetector], q: float) -> None:
    """The verdict on one window's tested detectors: the one place drift is decided.

    A detector with a p-value drifts when Benjamini–Hochberg at false discovery rate ``q`` rejects
    its null hypothesis among all p-values of the window **and** its effect crossed its floor; one
    without a p-value (an explicit budget) when its effect crossed its floor.
    """
    with_p = [d for d in detectors if d.p_value is not None]
    rejected = benjamini_hochberg(np.array([d.p_value for d in with_p], dtype=float), q)
    for detector, significant in zip(with_p, rejected, strict=True):
        detector._conclude(bool(significant))
    for detector in detectors:
        if detector.p_value is None:
            detector._conclude(True)


def _base_params(detector: WindowDetector) -> State:
    return {"subject": detector.subject, "min_values": detector.min_values}


def _effect(tests: tuple[str, ...], exceeded: dict[str, bool]) -> bool:
    """Whether a selected effect size crossed its floor (True when no effect size is selected)."""
    effects = [name for name in tests if STAT_TESTS[name].role == "effect"]
    return not effects or any(exceeded[name] for name in effects)


def _p_value(tests: tuple[str, ...], p_value: float) -> float | None:
    """The p-value if the selected tests include a hypothesis test (it then enters the FDR control)."""
    return p_value if any(STAT_TESTS[name].role == "p_value" for name in tests) else None


class NumericDriftDetector(WindowDetector):
    """Distribution shift of one numeric column: KS test (p-value), PSI and normed Wasserstein (effect).

    Which of them decide is chosen per feature (``tests``, see :mod:`driftwarden.core.stattests`);
    all three are always in the evidence.

    >>> from driftwarden.core.profile import NumericProfile
    >>> rng = np.random.default_rng(1)
    >>> detector = NumericDriftDetector("x", 0, NumericProfile.of(rng.normal(0, 1, 5000), 0.0))
    >>> detector
    NumericDriftDetector (subject='x', min_values=30, column=0, profile={9 entries}, psi_threshold=0.2, \
wasserstein_threshold=0.15, signal=False, tests=['ks', 'psi', 'wasserstein'])
    >>> window = lambda values: Columns([""] * len(values), values, values[:, None],
    ...     np.zeros((len(values), 1), bool), [], np.zeros((len(values), 1), bool), values, values, values, values)
    >>> detector.update(window(rng.normal(0, 1, 2000)))
    True
    >>> decide([detector], q=0.001); detector.drift_detected
    False
    >>> detector.update(window(rng.normal(0.5, 1, 2000)))
    True
    >>> decide([detector], q=0.001); detector.drift_detected
    True
    >>> round(detector.evidence()["wasserstein_normed"], 1)
    0.5

    References
    ----------
    .. [1] Massey, F. J. (1951). The Kolmogorov-Smirnov test for goodness of fit. JASA 46(253), 68-78.
    .. [2] Siddiqi, N. (2006). Credit Risk Scorecards. Wiley (population stability index).
    .. [3] Vaserstein, L. N. (1969). Markov processes over denumerable products of spaces.
       Problems of Information Transmission 5(3), 47-52.
    """

    kind: AlertKind = "data_drift"
    EVIDENCE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"reference_mean", "current_mean", "psi", "wasserstein_normed", "p_value"}
    )

    def __init__(
        self,
        subject: str,
        column: int,
        profile: NumericProfile,
        psi_threshold: float = 0.2,
        wasserstein_threshold: float = 0.15,
        signal: bool = False,
        tests: Sequence[str] = DEFAULT_TESTS["numeric"],
        min_values: int = MIN_VALUES,
    ) -> None:
        super().__init__(subject, min_values)
        self.column = column
        self.signal = signal
        self.profile = profile
        self.reference = np.asarray(profile.quantiles)
        self.edges = np.asarray(profile.edges)
        self.proportions = np.asarray(profile.proportions)
        self.psi_threshold = psi_threshold
        self.wasserstein_threshold = wasserstein_threshold
        self.tests = check_tests("numeric", tests)
        self.name = "_".join(self.tests)
        self.kind = "prediction_drift" if signal else "data_drift"

    def _values(self, window: Columns) -> np.ndarray:
        values = window.signal if self.signal else window.numeric[:, self.column]
        finite: np.ndarray = values[np.isfinite(values)]
        return finite

    def _test(self, window: Columns) -> TestResult | None:
        values = self._values(window)
        if len(values) < self.min_values:
            return None
        current = np.sort(values)  # (one sort for the KS merge and the PSI bins)
        statistic, p_value, distance = compare_sorted(self.reference, current, self.profile.std)
        population_stability = psi(self.proportions, sorted_bin_proportions(current, self.edges))
        mean, std = moments(values)
        exceeded = {
            "psi": population_stability >= self.psi_threshold,
            "wasserstein": distance >= self.wasserstein_threshold,
        }
        return (
            _p_value(self.tests, p_value),
            _effect(self.tests, exceeded),
            {
                "statistic": "ks",
                "ks_statistic": statistic,
                "p_value": p_value,
                "psi": population_stability,
                "psi_threshold": self.psi_threshold,
                "wasserstein_normed": distance,
                "wasserstein_threshold": self.wasserstein_threshold,
                "reference_mean": self.profile.mean,
                "reference_std": self.profile.std,
                "current_mean": mean,
                "current_std": std,
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

    def params(self) -> State:
        return _base_params(self) | {
            "column": self.column,
            "profile": self.profile.state(),
            "psi_threshold": self.psi_threshold,
            "wasserstein_threshold": self.wasserstein_threshold,
            "signal": self.signal,
            "tests": list(self.tests),
        }

    @classmethod
    def from_params(cls, params: StateReader) -> Self:
        return build(
            cls,
            params,
            params.text("subject"),
            params.integer("column", minimum=-1),
            NumericProfile.from_state(params.child("profile")),
            params.number("psi_threshold"),
            params.number("wasserstein_threshold"),
            params.flag("signal"),
            params.texts("tests"),
            params.integer("min_values"),
        )


class CategoricalDriftDetector(WindowDetector):
    """Category frequency shift: chi-square test (p-value) and Jensen–Shannon distance (effect).

    Every window is tested against the same reference counts, so the p-value is the one that holds
    given the reference (for 95 % of references, :func:`~driftwarden.core.stats.p_value_given_reference`);
    :meth:`update_profile` compares a whole other profile once, with the plain p-value.

    >>> detector = CategoricalDriftDetector("country", 0, CategoricalProfile({"NL": 600, "DE": 400}, 0.0))
    >>> detector
    CategoricalDriftDetector (subject='country', min_values=30, column=0, profile={2 entries}, js_threshold=0.05, \
tests=['chi2', 'js'])

    References
    ----------
    .. [1] Pearson, K. (1900). On the criterion that a given system of deviations from the probable...
       Philosophical Magazine 50(302), 157-175.
    .. [2] Lin, J. (1991). Divergence measures based on the Shannon entropy. IEEE Transactions on
       Information Theory 37(1), 145-151.
    """

    kind = "data_drift"
    EVIDENCE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"js_distance", "top_reference_category", "top_current_category", "p_value"}
    )

    def __init__(
        self,
        subject: str,
        column: int,
        profile: CategoricalProfile,
        js_threshold: float = 0.05,
        tests: Sequence[str] = DEFAULT_TESTS["categorical"],
        min_values: int = MIN_VALUES,
    ) -> None:
        super().__init__(subject, min_values)
        self.column = column
        self.profile = profile
        self.categories = list(profile.counts)
        self.reference_counts = np.array([profile.counts[c] for c in self.categories], dtype=float)
        self.js_threshold = js_threshold
        self.tests = check_tests("categorical", tests)
        self.name = "_".join(self.tests)

    def _test(self, window: Columns) -> TestResult | None:
        seen = Counter({v: n for v, n in window.category_counts(self.column).items() if v is not None})
        if seen.total() < self.min_values:
            return None
        return self._counts_test(seen, given_reference=True)

    def update_profile(self, other: CategoricalProfile) -> bool:
        """Test another profile's counts as one window (``profile diff``).

        A one-off comparison, not one of many windows against this reference: the p-value is the
        plain two-sample one (:func:`~driftwarden.core.stats.category_test`).
        """
        if sum(other.counts.values()) < self.min_values:
            return self._record(None)
        return self._record(self._counts_test(Counter(other.counts), given_reference=False))

    def _counts_test(self, seen: Counter[str], given_reference: bool) -> TestResult:
        counts = np.array([seen.pop(c, 0) for c in self.categories] + [sum(seen.values())], dtype=float)
        # (the last slot counts the categories unseen in the reference)
        chi2, p_value, distance = category_test(np.append(self.reference_counts, 0.0), counts, given_reference)
        top_reference = self.categories[int(np.argmax(self.reference_counts))] if self.categories else None
        current_share = counts[:-1] / counts.sum()
        return (
            _p_value(self.tests, p_value),
            _effect(self.tests, {"js": distance >= self.js_threshold}),
            {
                "statistic": "chi2",
                "chi2": chi2,
                "p_value": p_value,
                "js_distance": distance,
                "js_threshold": self.js_threshold,
                "unseen_rate": float(counts[-1] / counts.sum()),
                "top_reference_category": top_reference,
                "top_current_category": self.categories[int(np.argmax(current_share))] if self.categories else None,
                "window_values": int(counts.sum()),
            },
        )

    def summary(self, model_id: str, model_version: str) -> str:
        e = self._evidence
        return (
            f"{self.subject} category mix shifted on {model_id} v{model_version}: JS distance "
            f"{e['js_distance']:.3f}, most common {e['top_reference_category']} -> {e['top_current_category']}, "
            f"chi2 p={e['p_value']:.2g}"
        )

    def params(self) -> State:
        return _base_params(self) | {
            "column": self.column,
            "profile": self.profile.state(),
            "js_threshold": self.js_threshold,
            "tests": list(self.tests),
        }

    @classmethod
    def from_params(cls, params: StateReader) -> Self:
        return build(
            cls,
            params,
            params.text("subject"),
            params.integer("column"),
            CategoricalProfile.from_state(params.child("profile")),
            params.number("js_threshold"),
            params.texts("tests"),
            params.integer("min_values"),
        )


class MultivariateDriftDetector(WindowDetector):
    """A shift of the numeric features' joint mean (Hotelling's T² with the reference covariance).

    Catches drift spread thinly over many features, each too small to flag alone. The effect size is
    the Mahalanobis distance between the window mean and the reference mean; ``distance_threshold``
    is its floor (``ModelMonitorConfig.multivariate_distance_threshold``). Every window is tested
    against the same reference mean, so the p-value is the one that holds given the reference (for
    95 % of references, :func:`~driftwarden.core.stats.p_value_given_reference`).

    >>> detector = MultivariateDriftDetector([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], 5_000, [0, 1])
    >>> detector
    MultivariateDriftDetector (min_values=30, mean=[0.0, 0.0], \
precision=[[1.0, 0.0], [0.0, 1.0]], reference_n=5000, columns=[0, 1], distance_threshold=0.1)

    References
    ----------
    .. [1] Hotelling, H. (1931). The generalization of Student's ratio. Annals of Mathematical
       Statistics 2(3), 360-378.
    """

    kind = "multivariate_drift"
    name = "hotelling_t2"
    EVIDENCE_KEYS: ClassVar[frozenset[str]] = frozenset({"features", "mahalanobis_distance", "p_value"})

    def __init__(
        self,
        mean: Sequence[float],
        precision: Sequence[Sequence[float]],
        reference_n: int,
        columns: Sequence[int],
        distance_threshold: float = 0.1,
        min_values: int = MIN_VALUES,
    ) -> None:
        super().__init__("numeric_features", min_values)
        self.columns = list(columns)
        self.mean = np.asarray(mean, dtype=float)
        self.precision = np.asarray(precision, dtype=float)
        if self.mean.shape != (len(self.columns),) or self.precision.shape != (len(self.columns),) * 2:
            raise ValueError("mean and precision must match the columns")
        self.reference_n = reference_n
        self.distance_threshold = distance_threshold

    def _test(self, window: Columns) -> TestResult | None:
        data = window.numeric[:, self.columns]
        complete = data[~np.isnan(data).any(axis=1)]
        if len(complete) < self.min_values:
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
            f"{e['features']} numeric features shifted jointly on {model_id} v{model_version} (the window mean: "
            f"Mahalanobis distance {e['mahalanobis_distance']:.2f}, T² p={e['p_value']:.2g})"
        )

    def params(self) -> State:
        return {
            "min_values": self.min_values,
            "mean": self.mean.tolist(),
            "precision": self.precision.tolist(),
            "reference_n": self.reference_n,
            "columns": list(self.columns),
            "distance_threshold": self.distance_threshold,
        }

    @classmethod
    def from_params(cls, params: StateReader) -> Self:
        rows = params.items("precision")
        precision = [
            StateReader({"row": row}, f"{params.where}.precision[{i}]").numbers("row") for i, row in enumerate(rows)
        ]
        columns = params.items("columns")
        if not all(type(c) is int and c >= 0 for c in columns):
            raise StateError(f"{params.where}.columns: expected column numbers")
        return build(
            cls,
            params,
            params.numbers("mean"),
            precision,
            params.integer("reference_n", minimum=1),
            columns,
            params.number("distance_threshold"),
            params.integer("min_values"),
        )
