"""Drift detectors. Pure and synchronous: no Kafka, no clock.

Each detector follows River's shape (:mod:`driftwarden.core.detectors.base`): ``update(...)``, then
read ``drift_detected``; ``evidence()`` says why; ``repr()`` shows the parameters; the state
round-trips through plain JSON values. Streaming detectors take one value per ``update``
(:mod:`~driftwarden.core.detectors.streaming`; a classifier's label errors:
:mod:`~driftwarden.core.detectors.error_rate`); window detectors take a window of events compared
with the reference profile and are judged together by :func:`decide`
(:mod:`~driftwarden.core.detectors.window`, :mod:`~driftwarden.core.detectors.checks`).

:data:`DETECTOR_CLASSES` lists every concrete detector class: the contract suite runs over it and
fails when a detector class is missing from it.

>>> from driftwarden.core.profile import NumericProfile, ReferenceProfile
>>> amount = NumericProfile([0.0, 1.0], [0.5], [0.5, 0.5], 0.5, 0.5, 0.0, 1.0, 0.0, 100)
>>> profile = ReferenceProfile("fraud", "1", 100, "regression", None, {"amount": amount}, {}, None, None)
>>> [repr(d).split(" (")[0] for d in window_detectors(profile, ModelMonitorConfig())]
['NumericDriftDetector', 'MissingRateCheck', 'OutOfRangeCheck', 'TypeViolationCheck']
"""

from __future__ import annotations

from driftwarden.core.config import ModelMonitorConfig
from driftwarden.core.detectors.base import Detector, StatisticKey, StreamingDetector
from driftwarden.core.detectors.checks import (
    BudgetDetector,
    EstimatedAccuracyDetector,
    MissingRateCheck,
    OutOfRangeCheck,
    RateCheck,
    TypeViolationCheck,
    UnseenCategoryCheck,
)
from driftwarden.core.detectors.embedding import EmbeddingDriftDetector
from driftwarden.core.detectors.error_rate import BernoulliCusumDetector
from driftwarden.core.detectors.streaming import RankCusumDetector
from driftwarden.core.detectors.window import (
    CategoricalDriftDetector,
    MultivariateDriftDetector,
    NumericDriftDetector,
    WindowDetector,
    decide,
)
from driftwarden.core.profile import ReferenceProfile

__all__ = [
    "DETECTOR_CLASSES",
    "BernoulliCusumDetector",
    "BudgetDetector",
    "CategoricalDriftDetector",
    "Detector",
    "EmbeddingDriftDetector",
    "EstimatedAccuracyDetector",
    "MissingRateCheck",
    "MultivariateDriftDetector",
    "NumericDriftDetector",
    "OutOfRangeCheck",
    "RankCusumDetector",
    "RateCheck",
    "StatisticKey",
    "StreamingDetector",
    "TypeViolationCheck",
    "UnseenCategoryCheck",
    "WindowDetector",
    "decide",
    "window_detectors",
]

#: Every concrete detector class, by the name checkpoints and the contract suite know it by.
DETECTOR_CLASSES: dict[str, type[Detector]] = {
    cls.__name__: cls
    for cls in (
        RankCusumDetector,
        BernoulliCusumDetector,
        NumericDriftDetector,
        CategoricalDriftDetector,
        MultivariateDriftDetector,
        EmbeddingDriftDetector,
        MissingRateCheck,
        OutOfRangeCheck,
        TypeViolationCheck,
        UnseenCategoryCheck,
        EstimatedAccuracyDetector,
        BudgetDetector,
    )
}


def window_detectors(profile: ReferenceProfile, config: ModelMonitorConfig) -> list[WindowDetector]:
    """The window detectors for a profile, with the tests and thresholds of the config."""
    n = config.min_window_values
    detectors: list[WindowDetector] = []
    for j, (name, numeric) in enumerate(profile.numeric.items()):
        tests = config.tests_for(name, "numeric")
        detectors += [
            NumericDriftDetector(
                name, j, numeric, config.psi_threshold, config.wasserstein_threshold, tests=tests, min_values=n
            ),
            MissingRateCheck(name, j, config.missing_rate_increase, False, numeric.missing_rate, n),
            OutOfRangeCheck(name, j, config.out_of_range_rate, numeric.minimum, numeric.maximum, n),
            TypeViolationCheck(name, j, config.type_violation_rate, n),
        ]
    for j, (name, categorical) in enumerate(profile.categorical.items()):
        tests = config.tests_for(name, "categorical")
        detectors += [
            CategoricalDriftDetector(name, j, categorical, config.js_threshold, tests, n),
            MissingRateCheck(name, j, config.missing_rate_increase, True, categorical.missing_rate, n),
            UnseenCategoryCheck(name, j, config.unseen_category_rate, list(categorical.counts), n),
        ]
    detectors += [
        EmbeddingDriftDetector(name, j, embedding, config.embedding_mmd_threshold, min_values=n)
        for j, (name, embedding) in enumerate(profile.embedding.items())
    ]
    return detectors + _model_detectors(profile, config)


def _model_detectors(profile: ReferenceProfile, config: ModelMonitorConfig) -> list[WindowDetector]:
    """The detectors of the whole model: prediction signal, joint mean, estimated accuracy, budgets."""
    n = config.min_window_values
    detectors: list[WindowDetector] = []
    if profile.signal is not None:
        subject = "score" if profile.task == "classification" else "prediction"
        detectors.append(
            NumericDriftDetector(
                subject, -1, profile.signal, config.psi_threshold, config.wasserstein_threshold, True, min_values=n
            )
        )
    if config.multivariate and profile.multivariate_features:
        columns = [list(profile.numeric).index(f) for f in profile.multivariate_features]
        detectors.append(
            MultivariateDriftDetector(
                profile.mean_vector, profile.precision_matrix, profile.n_events, columns,
                config.multivariate_distance_threshold, n,
            )
        )  # fmt: skip
    if profile.confidence_mean is not None:
        detectors.append(EstimatedAccuracyDetector(profile.confidence_mean, config.estimated_accuracy_drop, n))
    if profile.latency_p99_ms is not None or config.latency_p99_budget_ms is not None:
        detectors.append(
            BudgetDetector(
                "latency", profile.latency_p99_ms, config.latency_p99_budget_ms, config.latency_change_ratio, n
            )
        )
    if profile.cost_per_1k is not None or config.cost_per_1k_budget is not None:
        detectors.append(
            BudgetDetector("cost", profile.cost_per_1k, config.cost_per_1k_budget, config.cost_change_ratio, n)
        )
    return detectors
