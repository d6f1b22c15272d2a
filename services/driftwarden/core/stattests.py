"""Named statistical tests, the feature types each applies to, and the default choice per type.

In the spirit of Evidently's ``stattests/registry.py``: a feature's drift verdict is built from the
tests named for it in the config (``features = { amount = { type = "numeric", tests = ["ks", "psi"] } }``),
else from :data:`DEFAULT_TESTS`. A test is either a hypothesis test (its p-value enters the monitor's
Benjamini–Hochberg control) or an effect size (its floor, a config field, must be crossed). A window
drifts when the selected hypothesis test is significant (if one is selected) **and** at least one
selected effect size crosses its floor (if any is selected).

>>> check_tests("numeric", ["ks", "psi"])
('ks', 'psi')
>>> check_tests("categorical", ["ks"])
Traceback (most recent call last):
...
ValueError: 'ks' is not a test for categorical features (choose from: chi2, js)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from driftwarden.core.features import FeatureType


@dataclass(frozen=True)
class StatTest:
    """One named test: what it measures, for which feature types, and how it enters the verdict."""

    name: str
    description: str
    feature_types: frozenset[FeatureType]
    role: Literal["p_value", "effect"]
    #: The ``ModelMonitorConfig`` field holding an effect size's floor (None for hypothesis tests).
    threshold_field: str | None = None


STAT_TESTS: dict[str, StatTest] = {
    test.name: test
    for test in (
        StatTest("ks", "Kolmogorov-Smirnov two-sample test, asymptotic p-value", frozenset({"numeric"}), "p_value"),
        StatTest(
            "psi", "population stability index over the reference deciles", frozenset({"numeric"}), "effect",
            "psi_threshold",
        ),
        StatTest(
            "wasserstein", "Wasserstein distance in reference standard deviations", frozenset({"numeric"}), "effect",
            "wasserstein_threshold",
        ),
        StatTest("chi2", "chi-square test of homogeneity of category counts", frozenset({"categorical"}), "p_value"),
        StatTest(
            "js", "Jensen-Shannon distance of the category frequencies", frozenset({"categorical"}), "effect",
            "js_threshold",
        ),
        StatTest(
            "mmd", "kernel two-sample test (MMD) on a random projection of the vectors", frozenset({"embedding"}),
            "p_value",
        ),
    )
}  # fmt: skip

DEFAULT_TESTS: dict[FeatureType, tuple[str, ...]] = {
    "numeric": ("ks", "psi", "wasserstein"),
    "categorical": ("chi2", "js"),
    "embedding": ("mmd",),
}


def tests_for(feature_type: FeatureType) -> list[str]:
    """The names of the tests allowed for a feature type, in registry order."""
    return [name for name, test in STAT_TESTS.items() if feature_type in test.feature_types]


def check_tests(feature_type: FeatureType, names: Sequence[str]) -> tuple[str, ...]:
    """``names`` if every one is a test allowed for ``feature_type`` (and there is one); else ValueError."""
    allowed = tests_for(feature_type)
    if not names:
        raise ValueError(f"choose at least one test (for {feature_type} features: {', '.join(allowed)})")
    for name in names:
        if name not in allowed:
            known = "" if name in STAT_TESTS else "unknown test; "
            raise ValueError(
                f"{name!r} is not a test for {feature_type} features ({known}choose from: {', '.join(allowed)})"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"a test is named twice in {list(names)}")
    return tuple(names)
