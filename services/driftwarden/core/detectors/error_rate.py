"""A rise of a 0/1 error stream's rate: Bernoulli CUSUMs with exact, budgeted thresholds.

A classifier's per-label errors are Bernoulli: while nothing changes, their law is known up to one
number, the error rate ``p0``. The CUSUM of the log-likelihood ratio of a higher rate ``p1`` against
``p0`` [1]_ is then the optimal detector of a change to ``p1`` (Lorden's minimax delay [2]_,
Moustakides [3]_): its delay at a mean of ``ARL`` labels between false alarms is about
``ln(ARL) / KL(p1 || p0)``. In Reynolds & Stoumbos's form [4]_ it counts errors against a reference
value ``gamma``: ``B_t = max(0, B_{t-1} + x_t - gamma)``, ``gamma = ln((1 - p0) / (1 - p1)) /
ln(p1 (1 - p0) / (p0 (1 - p1)))``, alarm at ``B_t >= h``.

Three choices make it a monitor:

* **A bank of alternatives** (:data:`ODDS_RATIOS`): the error odds x1.5, x2.5 and x5, each its own CUSUM;
  the budget is split evenly over them (Bonferroni).
* **Exact thresholds.** With ``gamma = k / m`` the CUSUM lives on the integers (``+m - k`` on an
  error, ``-k`` on a correct label), a finite Markov chain whose mean run length solves a banded
  linear system exactly [5]_ (:func:`run_length`); ``h`` is the smallest one whose run length is
  at least the target (:func:`lattice_threshold`). No approximation to calibrate.
* **A reference that is a sample.** ``p0`` is estimated from the version's first labels. The
  CUSUMs are built for the one-sided Clopper–Pearson upper bound of ``p0`` at
  :data:`~driftwarden.core.stats.REFERENCE_SHARE` (95 %): a CUSUM's false-alarm rate only falls when
  the true rate is lower (its statistic is monotone in the errors), so the run length holds for the
  true rate whenever the bound covers it, i.e. for 95 % of references [6]_, not only on average
  over references, whose average hides references with several times the budget.

>>> p0 = upper_reference_rate(errors=100, n=1_000)  # 10 % errors in the reference
>>> round(p0, 4)
0.117
>>> k, m = lattice(p0, odds=2.5)
>>> k, m, round(k / m, 4)  # gamma for the odds x2.5 alternative: +14 on an error, -3 on a correct label
(3, 17, 0.1765)
>>> h = lattice_threshold(p0, k, m, arl=1e6)
>>> run_length(p0, k, m, h) >= 1e6 > run_length(p0, k, m, h - 1)
True

References
----------
.. [1] Page, E. S. (1954). Continuous inspection schemes. Biometrika 41(1/2), 100-115.
.. [2] Lorden, G. (1971). Procedures for reacting to a change in distribution. Annals of
   Mathematical Statistics 42(6), 1897-1908.
.. [3] Moustakides, G. V. (1986). Optimal stopping times for detecting changes in distributions.
   Annals of Statistics 14(4), 1379-1387.
.. [4] Reynolds, M. R. Jr. & Stoumbos, Z. G. (1999). A CUSUM chart for monitoring a proportion when
   inspecting continuously. Journal of Quality Technology 31(1), 87-108.
.. [5] Brook, D. & Evans, D. A. (1972). An approach to the probability distribution of CUSUM run
   length. Biometrika 59(3), 539-549.
.. [6] Gandy, A. & Kvaløy, J. T. (2013). Guaranteed conditional performance of control charts via
   bootstrap methods. Scandinavian Journal of Statistics 40(4), 647-668.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar, Self

import numpy as np
from scipy import stats as scipy_stats
from scipy.linalg import solve_banded

from driftwarden.core.detectors.base import StreamingDetector, build
from driftwarden.core.events import Scalar
from driftwarden.core.state import State, StateError, StateReader
from driftwarden.core.stats import REFERENCE_SHARE

#: The alternatives, as odds ratios of an error against the reference: one CUSUM each.
ODDS_RATIOS = (1.5, 2.5, 5.0)
#: ``gamma = k / m`` with ``m`` at most this (a small lattice: its Markov chain solves in milliseconds)...
LATTICE_M = 32
#: ...or, for ``gamma < 1 / LATTICE_M`` (a reference rate near 0), ``1 / m`` with ``m`` at most this.
LATTICE_M_MAX = 256
#: :meth:`BernoulliCusumDetector.update_many` looks this many labels ahead at first (then twice as far each time).
MIN_HORIZON = 256
#: Runs of fewer labels than this go through ``update`` one at a time (the closed form's arrays cost ~40 µs a call).
CLOSED_FORM_RUN = 48


def upper_reference_rate(errors: int, n: int) -> float:
    """The one-sided Clopper–Pearson upper bound of the error rate at :data:`REFERENCE_SHARE`."""
    if not 0 <= errors <= n or n < 1:
        raise ValueError("expected 0 <= errors <= n and n >= 1")
    return 1.0 if errors == n else float(scipy_stats.beta.ppf(REFERENCE_SHARE, errors + 1, n - errors))


def lattice(p0: float, odds: float) -> tuple[int, int] | None:
    """``(k, m)``: ``k / m`` is the reference value ``gamma`` of the odds-ratio ``odds`` alternative, rounded up.

    Rounding up keeps ``k / m > p0`` (the CUSUM drifts down while nothing changes) and only makes it
    look for a slightly larger rise; the thresholds are exact for the rounded chart. None when no
    lattice up to :data:`LATTICE_M_MAX` lies between ``gamma`` and 1 (a reference rate within about
    1/256 of 1: no rise of that size is left to see).
    """
    gamma = math.log1p((odds - 1) * p0) / math.log(odds)
    if gamma * LATTICE_M < 1:
        return 1, max(2, min(LATTICE_M_MAX, math.floor(1 / gamma)))
    if (1 - gamma) * LATTICE_M < 1:
        m = math.ceil(1 / (1 - gamma))  # k = m - 1: the finest lattice below 1 still at least gamma
        return (m - 1, m) if m <= LATTICE_M_MAX else None
    return min(((math.ceil(gamma * m), m) for m in range(LATTICE_M // 2, LATTICE_M + 1)), key=lambda c: c[0] / c[1])


def run_length(p: float, k: int, m: int, h: int) -> float:
    """Mean labels to an alarm from 0 of the integer CUSUM ``S = max(0, S + m x - k)``, alarm at ``S >= h``,
    when errors ``x`` come at rate ``p`` (the Markov chain of Brook & Evans, solved exactly)."""
    # L(s) = 1 + p L(s + m - k) [s + m - k < h] + (1 - p) L(max(0, s - k)), s = 0 .. h - 1: banded.
    up = m - k
    rows = np.zeros((k + up + 1, h))  # solve_banded's layout: ab[up + i - j, j] = A[i, j]
    rows[up] = 1.0
    s = np.arange(h)
    down = np.maximum(s - k, 0)
    np.add.at(rows, (up + s - down, down), -(1 - p))
    inside = s + up < h
    rows[0, (s + up)[inside]] = -p
    lengths = solve_banded((k, up), rows, np.ones(h))
    return float(lengths[0])


def lattice_threshold(p0: float, k: int, m: int, arl: float) -> int:
    """The smallest integer threshold whose run length at rate ``p0`` is at least ``arl``."""
    low, high = m - k, 2 * m
    while run_length(p0, k, m, high) < arl:
        low, high = high, 2 * high
    while high - low > 1:  # run_length(low) < arl <= run_length(high)
        middle = (low + high) // 2
        low, high = (low, middle) if run_length(p0, k, m, middle) >= arl else (middle, high)
    return high


class BernoulliCusumDetector(StreamingDetector):
    """A rise of the error rate of a 0/1 error stream over its reference rate (one-sided).

    One integer Bernoulli CUSUM per alternative of :data:`ODDS_RATIOS`, each built for the
    Clopper–Pearson upper bound of the reference rate and given an exact threshold for a mean of
    ``arl`` times the number of CUSUMs labels between false alarms (Bonferroni: ``arl`` for the bank);
    :mod:`driftwarden.core.detectors.error_rate` explains each step. After an alarm every CUSUM
    restarts from zero. Values other than 0 and 1 count as errors when ``>= 0.5``; NaN is skipped.

    Parameters
    ----------
    reference_errors
        Errors among the reference labels.
    reference_n
        Labels in the reference.
    arl
        Mean number of labels between false alarms (the performance monitor derives it from the
        model's ``false_alarms_per_million``).

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> detector = BernoulliCusumDetector(reference_errors=98, reference_n=1_000, arl=1e6)
    >>> detector
    BernoulliCusumDetector (reference_errors=98, reference_n=1000, arl=1000000.0)
    >>> stream = np.concatenate([rng.random(50_000) < 0.1, rng.random(5_000) < 0.2]).astype(float)
    >>> alarms = []
    >>> detector.update_many(stream, lambda i: alarms.append((i, detector.evidence())))
    >>> first, e = alarms[0]
    >>> first >= 50_000, first - 50_000 < 1_000
    (True, True)
    >>> e["statistic"], round(e["reference_error"], 3), 0.15 < e["recent_error"] < 0.3
    ('bernoulli_cusum', 0.098, True)

    References
    ----------
    .. [1] Page, E. S. (1954). Continuous inspection schemes. Biometrika 41(1/2), 100-115.
    .. [2] Reynolds, M. R. Jr. & Stoumbos, Z. G. (1999). A CUSUM chart for monitoring a proportion
       when inspecting continuously. Journal of Quality Technology 31(1), 87-108.
    .. [3] Brook, D. & Evans, D. A. (1972). An approach to the probability distribution of CUSUM run
       length. Biometrika 59(3), 539-549.
    """

    name = "bernoulli_cusum"
    EVIDENCE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"statistic", "reference_error", "recent_error", "labels_since_change", "odds_ratio"}
    )

    def __init__(self, reference_errors: int, reference_n: int, arl: float = 1e6) -> None:
        super().__init__()
        if not arl > 1:
            raise ValueError("arl must exceed 1")
        self.reference_errors = reference_errors
        self.reference_n = reference_n
        self.arl = float(arl)
        self.p0 = upper_reference_rate(reference_errors, reference_n)
        # (the alternatives left: none above a reference rate of 1, or within a lattice step of it)
        shapes = [(odds, lattice(self.p0, odds)) for odds in ODDS_RATIOS] if self.p0 < 1 else []
        self.odds = [odds for odds, shape in shapes if shape is not None]
        self.lattices = [shape for _, shape in shapes if shape is not None]
        self.thresholds = [lattice_threshold(self.p0, k, m, self.arl * len(self.lattices)) for k, m in self.lattices]
        self.n_seen = 0
        self.cusums = [0] * len(self.lattices)
        # Per CUSUM, since it last left 0: labels and errors (where its change began, what it saw since).
        self.run_labels = [0] * len(self.lattices)
        self.run_errors = [0] * len(self.lattices)
        self.alarm: tuple[int, int, int] | None = None  # (CUSUM index, labels since change, errors since)

    def update(self, x: float) -> None:
        self._drift_detected = False
        if x != x:
            return  # a missing value is no evidence
        error = x >= 0.5
        alarmed = -1
        for i, ((k, m), h) in enumerate(zip(self.lattices, self.thresholds, strict=True)):
            s = self.cusums[i] + (m - k if error else -k)
            if s <= 0:
                self.cusums[i], self.run_labels[i], self.run_errors[i] = 0, 0, 0
                continue
            self.cusums[i] = s
            self.run_labels[i] += 1
            self.run_errors[i] += error
            if s >= h and (alarmed < 0 or s / h > self.cusums[alarmed] / self.thresholds[alarmed]):
                alarmed = i
        self.n_seen += 1
        if alarmed >= 0:
            self.alarm = (alarmed, self.run_labels[alarmed], self.run_errors[alarmed])
            self.cusums = [0] * len(self.lattices)
            self.run_labels = [0] * len(self.lattices)
            self.run_errors = [0] * len(self.lattices)
            self._drift_detected = True

    def update_many(self, values: Sequence[float] | np.ndarray, on_drift: Callable[[int], None] | None = None) -> None:
        """``update`` for each value (NaN skipped), calling ``on_drift(index)`` at each alarm, with the state as of
        that value: the same alarms and state as ``update`` in a loop, in integer arithmetic a run at a time
        (:meth:`advance`), over a horizon that doubles while no alarm comes (a rise alarms every few hundred
        labels: looking to the end each time would be quadratic).

        >>> rng = np.random.default_rng(5)
        >>> errors = np.concatenate([rng.random(20_000) < 0.1, rng.random(3_000) < 0.3]).astype(float)
        >>> batch, loop = (BernoulliCusumDetector(98, 1_000, arl=1e4) for _ in range(2))
        >>> alarms: tuple[list[int], list[int]] = ([], [])
        >>> batch.update_many(errors, lambda i: alarms[0].append((i, batch.evidence())))
        >>> StreamingDetector.update_many(loop, errors, lambda i: alarms[1].append((i, loop.evidence())))
        >>> alarms[0] == alarms[1], len(alarms[0]) > 5, batch.state() == loop.state()
        (True, True, True)
        """
        if len(values) < CLOSED_FORM_RUN:
            super().update_many(values, on_drift)
            return
        x = np.asarray(values, dtype=float)
        index = np.flatnonzero(x == x)
        finite, start, horizon = x[index], 0, MIN_HORIZON
        while start < len(finite):
            stop = min(len(finite), start + horizon)
            alarm = self.advance(finite[start:stop])
            if alarm is None:
                start, horizon = stop, 2 * horizon
                continue
            start, horizon = start + alarm + 1, max(MIN_HORIZON, 2 * (alarm + 1))
            if on_drift is not None:
                on_drift(int(index[start - 1]))

    def advance(self, values: Sequence[float] | np.ndarray) -> int | None:
        """Feed finite ``values`` up to the first alarm: its index (the values after it are not fed), or None
        when none alarms (all fed). ``update`` in closed form: with ``C_t`` the running sum of the integer
        steps from ``S_0``, ``S_t = C_t - min(-S_0, min_{j <= t} C_j)``; a CUSUM last left 0 at the last ``j``
        where ``C_j`` is that minimum."""
        n = len(values)
        if n < CLOSED_FORM_RUN:  # (a few labels: the loop is quicker than the arrays)
            for i, x in enumerate(values.tolist() if isinstance(values, np.ndarray) else values):
                self.update(x)
                if self._drift_detected:
                    return i
            return None
        error = np.asarray(values) >= 0.5
        self._drift_detected = False
        if not self.lattices:
            self.n_seen += n
            return None
        k = np.array([k for k, _ in self.lattices], dtype=np.int64)[:, None]
        m = np.array([m for _, m in self.lattices], dtype=np.int64)[:, None]
        sums = np.cumsum(np.where(error, m - k, -k), axis=1)
        floor = -np.array(self.cusums, dtype=np.int64)[:, None]
        lowest = np.minimum(np.minimum.accumulate(sums, axis=1), floor)
        cusums = sums - lowest
        thresholds = np.array(self.thresholds, dtype=np.int64)[:, None]
        crossed = np.flatnonzero((cusums >= thresholds).any(axis=0))
        stop = int(crossed[0]) + 1 if len(crossed) else n
        # labels and errors since each CUSUM last left 0 (at the last zero, or since before these values)
        zero = cusums[:, :stop] == 0
        last_zero = np.where(zero.any(axis=1), stop - 1 - np.argmax(zero[:, ::-1], axis=1), -1)
        seen = np.cumsum(error[:stop])
        errors_before = np.where(last_zero >= 0, seen[np.maximum(last_zero, 0)], -np.array(self.run_errors))
        run_labels = np.where(last_zero >= 0, stop - 1 - last_zero, np.array(self.run_labels) + stop)
        run_errors = int(seen[-1]) - errors_before
        self.n_seen += stop
        if not len(crossed):
            self.cusums = cusums[:, -1].tolist()
            self.run_labels, self.run_errors = run_labels.tolist(), run_errors.tolist()
            return None
        ratio = np.where(cusums[:, stop - 1] >= thresholds[:, 0], cusums[:, stop - 1] / thresholds[:, 0], -np.inf)
        alarmed = int(np.argmax(ratio))
        self.alarm = (alarmed, int(run_labels[alarmed]), int(run_errors[alarmed]))
        self.cusums = [0] * len(self.lattices)
        self.run_labels = [0] * len(self.lattices)
        self.run_errors = [0] * len(self.lattices)
        self._drift_detected = True
        return stop - 1

    def evidence(self) -> dict[str, Scalar]:
        """The reference rate (and its upper bound), and since the last alarm's change point: labels, errors."""
        evidence: dict[str, Scalar] = {
            "statistic": self.name,
            "reference_error": self.reference_errors / self.reference_n,
            "reference_error_upper": self.p0,
            "reference_labels": self.reference_n,
            "false_alarm_arl": self.arl,
            "labels_seen": self.n_seen,
        }
        if self.alarm is None:
            return evidence | {"recent_error": None, "labels_since_change": None, "odds_ratio": None}
        which, labels, errors = self.alarm
        return evidence | {
            "odds_ratio": self.odds[which],
            "threshold": self.thresholds[which] / self.lattices[which][1],  # in errors (Reynolds & Stoumbos's h)
            "labels_since_change": labels,
            "recent_error": errors / labels if labels else None,
        }

    def summary(self, model_id: str, model_version: str) -> str:
        e = self.evidence()
        recent = e["recent_error"]
        return (
            f"error rate rose from {e['reference_error']:.3f} to "
            f"{recent if recent is None else format(recent, '.3f')} over the last {e['labels_since_change']} "
            f"labels (Bernoulli CUSUM, odds x{e['odds_ratio']}) on {model_id} v{model_version}"
        )

    # -- state ---------------------------------------------------------------------------------

    def params(self) -> State:
        return {"reference_errors": self.reference_errors, "reference_n": self.reference_n, "arl": self.arl}

    @classmethod
    def from_params(cls, params: StateReader) -> Self:
        n = params.integer("reference_n", minimum=1)
        return build(cls, params, params.integer("reference_errors"), n, params.number("arl"))

    def dynamic_state(self) -> State:
        return {
            "n_seen": self.n_seen,
            "drift_detected": self._drift_detected,
            "cusums": list(self.cusums),
            "run_labels": list(self.run_labels),
            "run_errors": list(self.run_errors),
            "alarm": None if self.alarm is None else list(self.alarm),
        }

    def load_dynamic_state(self, state: StateReader) -> None:
        lists = [_counts(state, key, len(self.lattices)) for key in ("cusums", "run_labels", "run_errors")]
        cusums, run_labels, run_errors = lists
        if any(s >= h for s, h in zip(cusums, self.thresholds, strict=True)) or any(
            e > n for e, n in zip(run_errors, run_labels, strict=True)
        ):
            raise StateError(f"{state.where}: CUSUMs must be below their thresholds, errors at most labels")
        alarm = state.raw("alarm")
        if alarm is not None and not (
            isinstance(alarm, list)
            and len(alarm) == 3
            and all(type(v) is int and v >= 0 for v in alarm)
            and alarm[0] < len(self.lattices)
            and alarm[2] <= alarm[1]
        ):
            raise StateError(f"{state.where}.alarm: expected [CUSUM, labels since change, errors since]")
        self.n_seen = state.integer("n_seen")
        self._drift_detected = state.flag("drift_detected")
        self.cusums, self.run_labels, self.run_errors = cusums, run_labels, run_errors
        self.alarm = None if alarm is None else (alarm[0], alarm[1], alarm[2])


def _counts(state: StateReader, key: str, length: int) -> list[int]:
    values = state.items(key)
    if len(values) != length or not all(type(v) is int and v >= 0 for v in values):
        raise StateError(f"{state.where}.{key}: expected {length} counts >= 0")
    return [int(v) for v in values if isinstance(v, int)]
