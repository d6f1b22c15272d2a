"""Drift of an embedding (a fixed-length vector feature): a kernel two-sample test on a random projection."""

from __future__ import annotations

from functools import cached_property
from typing import ClassVar, Self

import numpy as np

from driftwarden.core.detectors.base import build
from driftwarden.core.detectors.window import MIN_VALUES, TestResult, WindowDetector
from driftwarden.core.profile import PROJECTED_DIMS, Columns, EmbeddingProfile, evenly_spaced, projection
from driftwarden.core.state import State, StateReader
from driftwarden.core.stats import MmdReference

#: Vectors of a window the test compares (evenly spaced); at most a quarter of the reference sample.
#: 500: the window's own sampling noise, not the reference's, limits the power (with 250 a fully
#: drifted window of the load generator's half-way topic mix could get p = 2.2e-4, docs/detectors.md).
WINDOW_SAMPLE = 500


class EmbeddingDriftDetector(WindowDetector):
    """A change in the distribution of an embedding: MMD two-sample test on a fixed random projection.

    The window's vectors (:data:`WINDOW_SAMPLE` of them, evenly spaced) are projected to
    :data:`~driftwarden.core.profile.PROJECTED_DIMS` dimensions by the profile's seeded Gaussian
    projection and compared with the profile's projected reference sample (up to
    :data:`~driftwarden.core.profile.EMBEDDING_SAMPLE` vectors) by the maximum mean discrepancy with a
    Gaussian kernel whose bandwidth is the median distance between reference points. The p-value
    holds given the reference for 95 % of references (the reference's kernel spectrum, its own error
    at its 95th percentile, see :class:`~driftwarden.core.stats.MmdReference`; ``profile diff``'s
    one-off comparison keeps the gamma fit of the null over random splits of the reference) and
    enters :func:`decide` with every other p-value of the window; the effect size is the unbiased
    MMD², whose floor is ``mmd_threshold`` (``ModelMonitorConfig.embedding_mmd_threshold``). A vector
    of another length counts as missing.

    Parameters
    ----------
    subject
        The feature's name.
    column
        The feature's place among the window's embeddings (``Columns.embeddings``).
    profile
        The reference (:class:`~driftwarden.core.profile.EmbeddingProfile`).
    mmd_threshold
        The effect floor: the unbiased MMD² that must be reached (kernel values lie in [0, 1]).
    draws
        Random splits of the reference that estimate the null distribution of ``profile diff``'s
        comparison (once per window size).
    min_values
        Fewer vectors in a window: no verdict.

    Examples
    --------
    >>> from driftwarden.core.detectors import decide
    >>> rng = np.random.default_rng(0)
    >>> profile = EmbeddingProfile.of(rng.normal(0, 1, (2000, 64)), 0.0)
    >>> detector = EmbeddingDriftDetector("text", 0, profile)
    >>> detector
    EmbeddingDriftDetector (subject='text', min_values=30, column=0, profile={5 entries}, \
mmd_threshold=0.005, draws=400)
    >>> window = lambda vectors: Columns.of_rows(np.zeros((len(vectors), 0)), embeddings=[vectors])
    >>> detector.update(window(rng.normal(0, 1, (2000, 64))))
    True
    >>> decide([detector], q=0.001); detector.drift_detected
    False
    >>> topic = np.r_[np.full(8, 0.6), np.zeros(56)]  # a direction that became common
    >>> detector.update(window(rng.normal(0, 1, (2000, 64)) + topic))
    True
    >>> decide([detector], q=0.001); detector.drift_detected
    True
    >>> e = detector.evidence()
    >>> e["p_value"] < 1e-6, e["mmd2"] > 0.005, e["current_distance"] > e["reference_distance"]
    (True, True, True)

    References
    ----------
    .. [1] Gretton, A., Borgwardt, K. M., Rasch, M. J., Schölkopf, B., Smola, A. (2012). A kernel
       two-sample test. Journal of Machine Learning Research 13, 723-773.
    .. [2] Gretton, A., Fukumizu, K., Harchaoui, Z., Sriperumbudur, B. K. (2009). A fast, consistent
       kernel two-sample test. Advances in Neural Information Processing Systems 22.
    .. [3] Rabanser, S., Günnemann, S., Lipton, Z. C. (2019). Failing loudly: an empirical study of
       methods for detecting dataset shift. NeurIPS 32 (random projections before two-sample tests).
    """

    kind = "data_drift"
    name = "mmd"
    EVIDENCE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"mmd2", "mmd_threshold", "p_value", "reference_distance", "current_distance"}
    )

    def __init__(
        self,
        subject: str,
        column: int,
        profile: EmbeddingProfile,
        mmd_threshold: float = 0.005,
        draws: int = 400,
        min_values: int = MIN_VALUES,
    ) -> None:
        super().__init__(subject, min_values)
        if draws < 10:
            raise ValueError("draws must be at least 10")
        if len(profile.sample) < 8:
            raise ValueError("the profile holds fewer than 8 reference vectors")
        self.column = column
        self.profile = profile
        self.mmd_threshold = mmd_threshold
        self.draws = draws

    @cached_property
    def test(self) -> MmdReference:
        """The two-sample test against the reference sample (built on first use: its kernel sums)."""
        return MmdReference(np.asarray(self.profile.sample), self.draws)

    def _test(self, window: Columns) -> TestResult | None:
        vectors = window.embeddings[self.column]
        present = vectors[np.isfinite(vectors).all(axis=1)]
        if len(present) < self.min_values:
            return None
        projected = self.profile.project(evenly_spaced(present, self.window_sample))
        current = float(self.profile.distances(present).mean())
        return self._mmd(projected, current, 1.0 - len(present) / len(vectors), len(present), given_reference=True)

    def update_profile(self, other: EmbeddingProfile) -> bool:
        """Test another profile's projected reference sample as the window (``profile diff``).

        The sample is moved to this profile's centroid (exact: both are centred projections by the
        same matrix), so the MMD is the statistic of a window of the other profile's vectors; its
        ``current_distance`` is the other profile's mean distance to *its* centroid, and
        ``centroid_shift`` how far the centroid moved. Both profiles need the same length and seed.
        """
        if (other.dim, other.seed) != (self.profile.dim, self.profile.seed):
            raise ValueError(f"length or projection seed differ: {other.dim, other.seed} vs reference's "
                             f"{self.profile.dim, self.profile.seed}")  # fmt: skip
        if len(other.sample) < self.min_values:
            return self._record(None)
        shift = np.asarray(other.centroid) - np.asarray(self.profile.centroid)
        sample = evenly_spaced(np.asarray(other.sample), self.window_sample)
        projected = sample + shift @ projection(self.profile.dim, self.profile.seed)
        result = self._mmd(
            projected, other.distance.mean, other.distance.missing_rate, other.distance.n, given_reference=False
        )
        result[2]["centroid_shift"] = float(np.linalg.norm(shift))
        return self._record(result)

    @property
    def window_sample(self) -> int:
        """Vectors of a window the test compares: :data:`WINDOW_SAMPLE`, at most a quarter of the reference's."""
        return min(WINDOW_SAMPLE, len(self.profile.sample) // 4)

    def _mmd(
        self, projected: np.ndarray, current_distance: float, missing_rate: float, values: int, given_reference: bool
    ) -> TestResult:
        """The test of a window's sample of vectors, projected; the window's other evidence as given."""
        mmd2, p_value = self.test(projected, given_reference)
        return (
            p_value,
            mmd2 >= self.mmd_threshold,
            {
                "statistic": "mmd",
                "mmd2": mmd2,
                "p_value": p_value,
                "mmd_threshold": self.mmd_threshold,
                "bandwidth": self.test.bandwidth,
                "reference_distance": self.profile.distance.mean,
                "current_distance": current_distance,
                "missing_rate": missing_rate,
                "dimensions": self.profile.dim,
                "projected_dimensions": PROJECTED_DIMS,
                "window_values": values,
            },
        )

    def summary(self, model_id: str, model_version: str) -> str:
        e = self._evidence
        return (
            f"{self.subject} embeddings shifted on {model_id} v{model_version}: MMD² {e['mmd2']:.4f} (floor "
            f"{e['mmd_threshold']:.4f}), mean distance to the reference centroid {e['reference_distance']:.4g} -> "
            f"{e['current_distance']:.4g}, MMD p={e['p_value']:.2g}"
        )

    def params(self) -> State:
        return {
            "subject": self.subject,
            "min_values": self.min_values,
            "column": self.column,
            "profile": self.profile.state(),
            "mmd_threshold": self.mmd_threshold,
            "draws": self.draws,
        }

    @classmethod
    def from_params(cls, params: StateReader) -> Self:
        return build(
            cls,
            params,
            params.text("subject"),
            params.integer("column"),
            EmbeddingProfile.from_state(params.child("profile")),
            params.number("mmd_threshold"),
            params.integer("draws"),
            params.integer("min_values"),
        )
