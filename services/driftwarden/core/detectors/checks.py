"""Window checks with explicit budgets (no p-value): data-quality rates, estimated accuracy, latency, cost."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar, Literal, Self

import numpy as np

from driftwarden.core.detectors.base import build
from driftwarden.core.detectors.window import MIN_VALUES, TestResult, WindowDetector
from driftwarden.core.events import Scalar
from driftwarden.core.profile import Columns
from driftwarden.core.state import State, StateError, StateReader, pack_optional_float


class RateCheck(WindowDetector):
    """A data-quality rate (missing, out of range, wrong type, unseen category) above its limit.

    No p-value: the limit is an explicit budget. ``reference_rate`` is subtracted first, so a feature
    that was always 20 % missing is judged on the increase. A window with fewer than ``min_values``
    values to rate gets no verdict.
    """

    kind = "data_quality"
    check: ClassVar[str]
    suffix: ClassVar[str]  # of the subject: ``<feature>/<suffix>``
    reference_rate = 0.0
    EVIDENCE_KEYS: ClassVar[frozenset[str]] = frozenset({"rate", "reference_rate", "limit"})

    def __init__(self, feature: str, column: int, limit: float, min_values: int = MIN_VALUES) -> None:
        super().__init__(f"{feature}/{self.suffix}", min_values)
        self.name = self.check
        self.feature = feature
        self.column = column
        self.limit = limit

    @abc.abstractmethod
    def rated(self, window: Columns) -> tuple[int, int]:
        """How many of the values rated count against the budget, and how many values are rated."""

    def _test(self, window: Columns) -> TestResult | None:
        hits, rated = self.rated(window)
        if rated < self.min_values:
            return None
        rate = hits / rated
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

    def params(self) -> State:
        return {"feature": self.feature, "column": self.column, "limit": self.limit, "min_values": self.min_values}

    @classmethod
    def from_params(cls, params: StateReader) -> Self:
        return build(cls, params, *_rate_args(params))


def _flagged(flags: np.ndarray) -> tuple[int, int]:
    """How many of ``flags`` are set, of how many (:meth:`RateCheck.rated`)."""
    return int(np.count_nonzero(flags)), len(flags)


def _rate_args(params: StateReader) -> tuple[str, int, float, int]:
    return params.text("feature"), params.integer("column"), params.number("limit"), params.integer("min_values")


class MissingRateCheck(RateCheck):
    """Share of absent or null values, judged on the increase over the reference's share."""

    check = "missing_rate"
    suffix = "missing"

    def __init__(
        self,
        feature: str,
        column: int,
        limit: float,
        categorical: bool = False,
        reference_rate: float = 0.0,
        min_values: int = MIN_VALUES,
    ) -> None:
        super().__init__(feature, column, limit, min_values)
        self.categorical = categorical
        self.reference_rate = reference_rate

    def rated(self, window: Columns) -> tuple[int, int]:
        if self.categorical:
            return window.category_counts(self.column)[None], len(window.categorical[self.column])
        return _flagged(window.numeric_missing[:, self.column])

    def params(self) -> State:
        return super().params() | {"categorical": self.categorical, "reference_rate": self.reference_rate}

    @classmethod
    def from_params(cls, params: StateReader) -> Self:
        feature, column, limit, min_values = _rate_args(params)
        return build(
            cls, params, feature, column, limit, params.flag("categorical"), params.number("reference_rate"), min_values
        )


class OutOfRangeCheck(RateCheck):
    """Share of finite values outside the reference's [low, high]."""

    check = "out_of_range"
    suffix = "out_of_range"

    def __init__(
        self, feature: str, column: int, limit: float, low: float, high: float, min_values: int = MIN_VALUES
    ) -> None:
        super().__init__(feature, column, limit, min_values)
        self.low, self.high = low, high

    def rated(self, window: Columns) -> tuple[int, int]:
        values = window.numeric[:, self.column]
        values = values[np.isfinite(values)]
        return _flagged((values < self.low) | (values > self.high))

    def params(self) -> State:
        return super().params() | {"low": self.low, "high": self.high}

    @classmethod
    def from_params(cls, params: StateReader) -> Self:
        feature, column, limit, min_values = _rate_args(params)
        return build(cls, params, feature, column, limit, params.number("low"), params.number("high"), min_values)


class TypeViolationCheck(RateCheck):
    """Share of values of a numeric feature that are not numbers."""

    check = "type_violation"
    suffix = "type"

    def rated(self, window: Columns) -> tuple[int, int]:
        return _flagged(window.type_violations[:, self.column])


class UnseenCategoryCheck(RateCheck):
    """Share of present values of a categorical feature that the reference never saw."""

    check = "unseen_categories"
    suffix = "unseen_categories"

    def __init__(
        self, feature: str, column: int, limit: float, known: Sequence[str], min_values: int = MIN_VALUES
    ) -> None:
        super().__init__(feature, column, limit, min_values)
        self.known = sorted(known)
        self._known = set(known)

    def rated(self, window: Columns) -> tuple[int, int]:
        counts = window.category_counts(self.column)
        unseen = sum(n for v, n in counts.items() if v is not None and v not in self._known)
        return unseen, counts.total() - counts[None]

    def params(self) -> State:
        return super().params() | {"known": list(self.known)}

    @classmethod
    def from_params(cls, params: StateReader) -> Self:
        feature, column, limit, min_values = _rate_args(params)
        return build(cls, params, feature, column, limit, params.texts("known"), min_values)


class EstimatedAccuracyDetector(WindowDetector):
    """Confidence-based performance estimation (CBPE-style), no labels needed.

    For a calibrated classifier the expected accuracy of a window is the mean probability of the
    predicted class. A drop against the reference shows degradation caused by inputs moving toward
    the decision boundary before labels arrive. It cannot see a pure concept drift (the inputs and
    the scores do not change then); labels catch that.

    >>> EstimatedAccuracyDetector(0.92)
    EstimatedAccuracyDetector (reference_confidence=0.92, drop=0.05, min_values=30)

    References
    ----------
    .. [1] NannyML (2022). Confidence-based performance estimation (CBPE).
       https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html
    """

    kind = "estimated_performance"
    name = "cbpe"
    EVIDENCE_KEYS: ClassVar[frozenset[str]] = frozenset({"estimated_accuracy", "reference_estimated_accuracy"})

    def __init__(self, reference_confidence: float, drop: float = 0.05, min_values: int = MIN_VALUES) -> None:
        super().__init__("accuracy", min_values)
        self.reference = reference_confidence
        self.drop = drop

    def _test(self, window: Columns) -> TestResult | None:
        confidence = window.confidence[np.isfinite(window.confidence)]
        if len(confidence) < self.min_values:
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

    def params(self) -> State:
        return {"reference_confidence": self.reference, "drop": self.drop, "min_values": self.min_values}

    @classmethod
    def from_params(cls, params: StateReader) -> Self:
        return build(
            cls, params, params.number("reference_confidence"), params.number("drop"), params.integer("min_values")
        )


class BudgetDetector(WindowDetector):
    """Latency p99 or cost per 1,000 requests over a budget, or up by a ratio on the reference.

    >>> BudgetDetector("latency", reference=12.5, budget=None, change_ratio=2.0)
    BudgetDetector (measure='latency', reference=12.5, budget=None, change_ratio=2.0, min_values=30)
    """

    EVIDENCE_KEYS: ClassVar[frozenset[str]] = frozenset({"current", "reference", "budget"})

    def __init__(
        self,
        measure: Literal["latency", "cost"],
        reference: float | None,
        budget: float | None,
        change_ratio: float,
        min_values: int = MIN_VALUES,
    ) -> None:
        if measure not in ("latency", "cost"):
            raise ValueError(f"measure must be latency or cost, not {measure!r}")
        super().__init__("p99_ms" if measure == "latency" else "per_1k_requests", min_values)
        self.measure = measure
        self.kind = measure
        self.name = "budget" if budget is not None else "change"
        self.reference = reference
        self.budget = budget
        self.change_ratio = change_ratio

    def _test(self, window: Columns) -> TestResult | None:
        values = window.latency_ms if self.measure == "latency" else window.cost
        values = values[np.isfinite(values)]
        if len(values) < self.min_values:
            return None
        if self.measure == "latency":
            current, typical = float(np.quantile(values, 0.99)), float(np.quantile(values, 0.5))
        else:
            current, typical = float(values.mean() * 1000), float(values.mean())
        over_budget = self.budget is not None and current > self.budget
        changed = self.reference is not None and self.reference > 0 and current > self.reference * self.change_ratio
        evidence: dict[str, Scalar] = {
            "current": current,
            "typical": typical,  # latency p50, or mean cost per request
            "reference": self.reference,
            "budget": self.budget,
            "change_ratio": self.change_ratio,
            "window_values": len(values),
        }
        return None, over_budget or changed, evidence

    def summary(self, model_id: str, model_version: str) -> str:
        e = self._evidence
        what = "latency p99 (ms)" if self.measure == "latency" else "cost per 1,000 requests"
        return (
            f"{what} of {model_id} v{model_version} is {e['current']:.4g} "
            f"(reference {e['reference']}, budget {e['budget']})"
        )

    def params(self) -> State:
        return {
            "measure": self.measure,
            "reference": pack_optional_float(self.reference),
            "budget": pack_optional_float(self.budget),
            "change_ratio": self.change_ratio,
            "min_values": self.min_values,
        }

    @classmethod
    def from_params(cls, params: StateReader) -> Self:
        measure = params.text("measure")
        if measure not in ("latency", "cost"):
            raise StateError(f"{params.where}.measure: expected latency or cost")
        return build(
            cls,
            params,
            measure,
            params.optional_number("reference"),
            params.optional_number("budget"),
            params.number("change_ratio"),
            params.integer("min_values"),
        )
