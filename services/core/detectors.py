"""Drift detectors for single feature streams. Pure and synchronous: no Kafka, no clock.

Each detector follows River's shape: ``update(x)``, then read ``drift_detected``; ``evidence()`` says
why, in numbers an on-call engineer can check.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
from river import drift, stats

from driftwarden.core.events import Scalar


class MeanShiftDetector:
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

    def __init__(self, delta: float = 1e-5, reference_size: int = 1_000, recent_size: int = 512) -> None:
        if not 0 < delta < 1:
            raise ValueError("delta must be between 0 and 1")
        if reference_size < 2:
            raise ValueError("reference_size must be at least 2")
        self.delta = delta
        self.reference_size = reference_size
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

    @property
    def reference_mean(self) -> float:
        return self._reference.mean.get()

    @property
    def reference_std(self) -> float:
        return math.sqrt(self._reference.get())

    def change_point(self) -> int:
        """How many of the most recent values came after the most likely change of mean."""
        recent = np.fromiter(self._recent, dtype=float)
        if len(recent) < 2:
            return len(recent)  # nothing to split: everything counts as "after"
        cusum = np.cumsum(recent - recent.mean())
        split = int(np.argmax(np.abs(cusum[:-1]))) + 1
        return len(recent) - split

    def evidence(self) -> dict[str, Scalar]:
        """Why the detector fired: reference vs current mean, computed on demand (not per update)."""
        after_change = self.change_point()
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
            "delta": self.delta,
            "values_seen": self.n_seen,
        }
