"""The streaming detector: one numeric value per update, ranked against the reference, CUSUMs on the ranks."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from typing import ClassVar, Self

import numpy as np

from driftwarden.core.detectors.base import StreamingDetector, build
from driftwarden.core.detectors.sequential import (
    CUSUM_CAP,
    SCALE,
    RankIncrements,
    ReferenceCdf,
    bank,
    bank_thresholds,
    block_minima,
    continuous_part,
    crossing_and_cusums,
    crossing_rows,
    cusums_at,
    fixed_point,
    normal_scores,
    running_sums,
)
from driftwarden.core.events import Scalar
from driftwarden.core.state import State, StateError, StateReader, pack_array

#: Recent values kept to describe a change (its median, spread, normal-score shift).
RECENT = 512
#: After an alarm, ``update_many`` looks at least this many values ahead for the next one at a time.
MIN_HORIZON = 256
#: ``update_many`` takes at most this many values at a time (the fixed-point sums stay far from overflow).
CHUNK = 1 << 22
#: ``update_together``'s two stacked arrays (increments, running sums) up to this many values each are views of
#: buffers each thread keeps and reuses: a fresh array of megabytes costs its page faults on every batch.
SCRATCH_VALUES = 1 << 22
_scratch = threading.local()


def scratch(name: str, rows: int, columns: int) -> np.ndarray:
    """An int64 array of this shape, uninitialized: a view of this thread's buffer ``name`` when it is small
    enough (:data:`SCRATCH_VALUES`; the next call with the same name reuses it), else a new array."""
    size = rows * columns
    if size > SCRATCH_VALUES:
        return np.empty((rows, columns), np.int64)
    buffer: np.ndarray | None = getattr(_scratch, name, None)
    if buffer is None or len(buffer) < size:
        buffer = np.empty(size, np.int64)
        setattr(_scratch, name, buffer)
    return buffer[:size].reshape(rows, columns)


class RankCusumDetector(StreamingDetector):
    """A change in the distribution of one numeric stream, whatever its shape.

    Each value is ranked against the reference (a randomized probability integral transform of the
    reference's quantile summary, ties included) and turned into a normal score, which is exactly
    N(0, 1) while nothing changes, for any feature shape: heavy tails, counts, zero inflation,
    clipping. 29 CUSUMs watch the scores (location, spread, each tail, both tails, a small component
    beyond either side, and the ends of the rank scale emptied or heavier;
    :data:`~driftwarden.core.detectors.sequential.BANK`), 39 where
    the reference has an atom at an end of its range (location and spread also within the rest:
    :func:`~driftwarden.core.detectors.sequential.continuous_part`); their thresholds follow from
    ``arl``, the mean number of values between false alarms this detector may have, split evenly
    over them (Bonferroni). After an alarm every CUSUM restarts from zero. The increments are binned
    log-likelihood ratios looked up from the values (:class:`~driftwarden.core.detectors.sequential.RankIncrements`)
    and the CUSUMs run in fixed point: ``update`` in a loop and ``update_many`` agree bit for bit (every
    CUSUM that can alarm; one that is off is only held below 2^20 nats).

    Parameters
    ----------
    quantiles
        The reference's quantile summary (``NumericProfile.quantiles``).
    reference_n
        How many values the reference summarises (its sampling error raises the thresholds).
    arl
        Mean number of values between false alarms (the monitor derives it from the budget
        ``false_alarms_per_million`` over every streaming detector of the model).
    seed
        Seeds the randomization of ties (reproducible; a restored detector continues the sequence).
    masses
        A discrete reference, exactly: ``quantiles`` its distinct values, these their shares
        (:class:`~driftwarden.core.detectors.sequential.ReferenceCdf`; a categorical feature's
        frequency ranks, :func:`~driftwarden.core.detectors.sequential.frequency_ranks`).

    Examples
    --------
    >>> rng = np.random.default_rng(7)
    >>> reference = rng.lognormal(3.5, 1.0, 5_000)
    >>> detector = RankCusumDetector(np.quantile(reference, np.linspace(0, 1, 1_000)), 5_000, arl=1e6)
    >>> detector
    RankCusumDetector (quantiles=[1000 values], reference_n=5000, arl=1000000.0, seed=0)
    >>> stream = np.concatenate([rng.lognormal(3.5, 1.0, 50_000), rng.lognormal(3.5, 1.0, 2_000) * 1.5])
    >>> alarms = []
    >>> detector.update_many(stream, lambda i: alarms.append((i, detector.evidence())))
    >>> first, e = alarms[0]
    >>> first > 50_000, first - 50_000 < 300
    (True, True)
    >>> e["statistic"], e["direction"], 0.2 < e["shift_sigma"] < 1.0  # ln 1.5 = 0.41 σ of log(amount)
    ('location', 'up', True)
    >>> zeros = np.where(rng.random(5_000) < 0.4, 0.0, rng.gamma(2.0, 10.0, 5_000))  # 40 % zeros
    >>> len(RankCusumDetector(np.quantile(zeros, np.linspace(0, 1, 1_000)), 5_000).thresholds)
    39

    References
    ----------
    .. [1] Page, E. S. (1954). Continuous inspection schemes. Biometrika 41(1/2), 100-115.
    .. [2] Lorden, G. (1971). Procedures for reacting to a change in distribution. Annals of
       Mathematical Statistics 42(6), 1897-1908.
    .. [3] Brockwell, A. E. (2007). Universal residuals: a multivariate transformation. Statistics &
       Probability Letters 77(14), 1473-1478.
    """

    name = "rank_cusum"
    EVIDENCE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"statistic", "direction", "reference_median", "current_median", "shift_sigma", "spread_ratio",
         "values_since_change"}
    )  # fmt: skip

    def __init__(
        self,
        quantiles: Sequence[float],
        reference_n: int,
        arl: float = 1e6,
        seed: int = 0,
        masses: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.cdf = ReferenceCdf(quantiles, reference_n, masses)
        self.masses = None if masses is None else [float(v) for v in masses]
        if not arl > 1:
            raise ValueError("arl must exceed 1")
        self.quantiles = [float(v) for v in quantiles]
        self.reference_n = reference_n
        self.arl = float(arl)
        self.seed = seed
        self.part = continuous_part(self.cdf)
        self.bank = bank(self.part)
        self._increments = RankIncrements(self.cdf, self.part)
        self.thresholds = bank_thresholds(self.part, arl, reference_n)
        self.limits = np.full(len(self.bank), np.iinfo(np.int64).max)  # the thresholds in fixed point (off: never)
        on = self.thresholds < CUSUM_CAP
        self.limits[on] = np.ceil(self.thresholds[on] * SCALE)
        self.n_seen = 0
        self.cusums = np.zeros(len(self.bank))
        self.run_starts = np.zeros(len(self.bank), dtype=np.int64)  # value number where each CUSUM last left 0
        self.alarm: tuple[int, int, int] | None = None  # (CUSUM index, value number, values since change)
        self._recent = np.empty(0)  # the last RECENT values, oldest first

    def update(self, x: float) -> None:
        self.update_many([x])

    def update_many(self, values: Sequence[float] | np.ndarray, on_drift: Callable[[int], None] | None = None) -> None:
        """``update`` for each value (NaN skipped), calling ``on_drift(index)`` at each detection.

        The same result as ``update`` in a loop, vectorized (the hot path); inside ``on_drift`` the
        detector's state, ``evidence()`` included, is as of that value; ``drift_detected`` stays
        set after the call if the last value alarmed.
        """
        x = np.asarray(values, dtype=float)
        index = np.flatnonzero(np.isfinite(x))
        self._drift_detected = False
        for first in range(0, len(index), CHUNK):  # (bounds the fixed-point sums: sequential.CUSUM_CAP)
            piece = index[first : first + CHUNK]
            finite = x[piece]
            self._run(finite, piece, running_sums(self._increments(finite, self.n_seen, self.seed)), on_drift)

    @staticmethod
    def update_together(updates: Sequence[tuple[RankCusumDetector, np.ndarray, Callable[[int], None] | None]]) -> None:
        """``detector.update_many(values, on_drift)`` for each ``(detector, values, on_drift)``, in this order, with
        the same results (alarms, evidence, state), faster for many detectors.

        The columns of the first one's length without a missing value (a model's features in one batch) have
        their CUSUMs' running sums computed and searched for a crossing as one array (one numpy call per step
        for all of them, not one per detector); a detector none of whose CUSUMs reaches its threshold has its new
        state read off that array; the others (an alarm) and the columns with missing values run their own
        ``update_many``.

        >>> rng = np.random.default_rng(3)
        >>> quantiles = np.quantile(rng.normal(size=5_000), np.linspace(0, 1, 1_000))
        >>> columns = [rng.normal(size=3_000), rng.normal(size=3_000) + np.r_[np.zeros(1_500), np.ones(1_500)]]
        >>> apart, together = ([RankCusumDetector(quantiles, 5_000, seed=s) for s in (0, 1)] for _ in range(2))
        >>> alarms: tuple[list[int], list[int]] = ([], [])
        >>> for detector, values in zip(apart, columns):
        ...     detector.update_many(values, alarms[0].append)
        >>> RankCusumDetector.update_together([(d, v, alarms[1].append) for d, v in zip(together, columns)])
        >>> alarms[0] == alarms[1] != [], [d.state() for d in apart] == [d.state() for d in together]
        (True, True)
        """
        n = len(updates[0][1]) if updates else 0
        columns = [np.asarray(values, dtype=float) for _, values, _ in updates]
        joined = [i for i, x in enumerate(columns) if 0 < len(x) == n <= CHUNK and np.isfinite(x).all()]
        bounds = np.cumsum([0, *(len(updates[i][0].bank) for i in joined)]).tolist()
        rows = {i: slice(first, last) for i, first, last in zip(joined, bounds[:-1], bounds[1:], strict=True)}
        if rows:
            steps = scratch("steps", bounds[-1], n)
            for i, rows_of in rows.items():
                detector = updates[i][0]
                detector._increments(columns[i], detector.n_seen, detector.seed, out=steps[rows_of])
            sums = running_sums(steps, scratch("sums", bounds[-1], n + 1))
            floor = _floor(np.concatenate([updates[i][0].cusums for i in joined]))  # (one call for all)
            minima = block_minima(sums, 0, n)  # (one pass for the crossing screen and the CUSUMs at the end)
            marked = crossing_rows(sums, floor, np.concatenate([updates[i][0].limits for i in joined]), minima)
            cusums, last_zero = cusums_at(sums, floor, 0, n, minima)
        for i, (detector, _, on_drift) in enumerate(updates):
            span = rows.get(i)
            if span is None:
                detector.update_many(columns[i], on_drift)
            elif marked[span].any():
                detector._run(columns[i], np.arange(n), sums[span], on_drift)
            else:
                detector._advance(columns[i], 0, n, cusums[span], last_zero[span])

    def _run(
        self, finite: np.ndarray, index: np.ndarray, sums: np.ndarray, on_drift: Callable[[int], None] | None
    ) -> None:
        # A value's increments do not depend on the CUSUMs (its tie-breaking draw is numbered by its
        # position), so their running sums (``sums``) are computed once; after an alarm every CUSUM restarts
        # from zero, which only moves the floor (:func:`~driftwarden.core.detectors.sequential.first_crossing`),
        # and the next alarm is looked for over a horizon that doubles until it comes (a change that persists
        # alarms again soon: looking to the column's end each time is quadratic).
        floor = _floor(self.cusums)
        start, horizon = 0, len(finite)
        while start < len(finite):
            end = min(len(finite), start + horizon)
            crossing, cusums, last_zero = crossing_and_cusums(sums, floor, self.limits, start, end)
            stop = end if crossing is None else crossing
            self._advance(finite, start, stop, cusums, last_zero)
            floor = sums[:, stop] - cusums
            horizon = max(MIN_HORIZON, 2 * (stop - start)) if crossing is not None else 2 * horizon
            start = stop
            if crossing is not None:
                which = int(np.argmax(self.cusums - self.thresholds))
                self.alarm = (which, self.n_seen, int(self.n_seen - self.run_starts[which]))
                self.cusums[:] = 0.0
                self.run_starts[:] = self.n_seen
                floor = sums[:, stop].copy()
                self._drift_detected = True
                if on_drift is not None:
                    on_drift(int(index[stop - 1]))

    def _advance(self, finite: np.ndarray, start: int, stop: int, cusums: np.ndarray, last_zero: np.ndarray) -> None:
        """The state after the values ``finite[start:stop]``, none alarming: the CUSUMs and their last zeros
        (:func:`cusums_at`)."""
        self.run_starts = np.where(last_zero >= 0, self.n_seen + last_zero - start, self.run_starts)
        self.cusums = cusums / SCALE
        self.n_seen += stop - start
        self._recent = np.concatenate([self._recent, finite[max(start, stop - RECENT) : stop]])[-RECENT:]
        self._drift_detected = False

    def evidence(self) -> dict[str, Scalar]:
        """What changed (the last alarm's CUSUM and the values since its change point), on demand."""
        q = np.asarray(self.quantiles)
        evidence: dict[str, Scalar] = {
            "reference_median": float(np.quantile(q, 0.5)),
            "reference_iqr": float(np.quantile(q, 0.75) - np.quantile(q, 0.25)),
            "reference_size": self.reference_n,
            "values_seen": self.n_seen,
            "false_alarm_arl": self.arl,
        }
        if self.alarm is None:
            return evidence | {"statistic": None, "direction": None, "current_median": None, "shift_sigma": None,
                               "spread_ratio": None, "values_since_change": None}  # fmt: skip
        which, _, since = self.alarm
        spec = self.bank[which]
        segment = self.changed_values()
        z = normal_scores(self.cdf.transform(segment, 0, self.seed))
        return evidence | {
            "statistic": spec.statistic,
            "direction": spec.direction,
            "cusum": spec.name,
            "threshold": float(self.thresholds[which]),
            "values_since_change": since,
            "current_median": float(np.median(segment)),
            "current_iqr": float(np.quantile(segment, 0.75) - np.quantile(segment, 0.25)),
            "shift_sigma": float(z.mean()),
            "spread_ratio": float(z.std()) if len(z) > 1 else 1.0,
        }

    def changed_values(self) -> np.ndarray:
        """The last alarm's values since its change point (at most the last :data:`RECENT`; all kept if none)."""
        if self.alarm is None:
            return self._recent
        _, at, since = self.alarm
        behind = self.n_seen - at  # values seen after the alarm
        recent = self._recent
        segment = (
            recent[max(0, len(recent) - behind - since) : len(recent) - behind] if behind < len(recent) else recent
        )
        return segment if len(segment) else recent

    def summary(self, model_id: str, model_version: str) -> str:
        e = self.evidence()
        what = {"location": "location", "spread": "spread", "upper_tail": "upper tail", "lower_tail": "lower tail",
                "upper_end": "upper end", "lower_end": "lower end", "ends": "both ends"}.get(
            str(e["statistic"]), "distribution")  # fmt: skip
        direction = "heavier" if "tail" in what else ("moved up" if e["direction"] == "up" else "moved down")
        if what == "spread":
            direction = "widened" if e["direction"] == "up" else "narrowed"
        if "end" in what:  # the share of values at the end(s) of the reference's range
            direction = "fuller" if e["direction"] == "up" else "emptier"
        return (
            f"{what} {direction}: median {e['reference_median']:.4g} -> {e['current_median']:.4g}, "
            f"IQR {e['reference_iqr']:.4g} -> {e['current_iqr']:.4g} ({e['shift_sigma']:+.2f} σ shift, spread "
            f"x{e['spread_ratio']:.2f} in normal scores) over the last {e['values_since_change']} values "
            f"on {model_id} v{model_version}"
        )

    # -- state ---------------------------------------------------------------------------------

    def params(self) -> State:
        return {"quantiles": list(self.quantiles), "reference_n": self.reference_n, "arl": self.arl,
                "seed": self.seed, **({} if self.masses is None else {"masses": list(self.masses)})}  # fmt: skip

    @classmethod
    def from_params(cls, params: StateReader) -> Self:
        return build(
            cls,
            params,
            params.numbers("quantiles"),
            params.integer("reference_n", minimum=1),
            params.number("arl"),
            params.integer("seed", minimum=0),
            params.numbers("masses") if "masses" in params.data else None,
        )

    def dynamic_state(self) -> State:
        return {
            "n_seen": self.n_seen,
            "drift_detected": self._drift_detected,
            "cusums": pack_array(self.cusums),
            "run_starts": [int(v) for v in self.run_starts],
            "alarm": None if self.alarm is None else list(self.alarm),
            "recent": pack_array(self._recent),
        }

    def load_dynamic_state(self, state: StateReader) -> None:
        cusums, recent = state.array("cusums"), state.array("recent")
        run_starts = state.items("run_starts")
        size = len(self.bank)
        if len(cusums) != size or len(run_starts) != size or not all(type(v) is int for v in run_starts):
            raise StateError(f"{state.where}: expected {size} CUSUMs and run starts")
        if len(recent) > RECENT or not np.all(cusums >= 0):
            raise StateError(f"{state.where}: CUSUMs must be >= 0 and at most {RECENT} recent values")
        alarm = state.raw("alarm")
        if alarm is not None and not (
            isinstance(alarm, list) and len(alarm) == 3 and all(type(v) is int for v in alarm)
        ):
            raise StateError(f"{state.where}.alarm: expected [cusum, value number, values since change]")
        if alarm is not None and not 0 <= alarm[0] < size:
            raise StateError(f"{state.where}.alarm: no such CUSUM")
        self.n_seen = state.integer("n_seen")
        self._drift_detected = state.flag("drift_detected")
        self.cusums = cusums.astype(float)
        self.run_starts = np.array(run_starts, dtype=np.int64)
        self.alarm = None if alarm is None else (int(alarm[0]), int(alarm[1]), int(alarm[2]))
        self._recent = recent.astype(float)


def _floor(cusums: np.ndarray) -> np.ndarray:
    """The fixed-point floor of the running sums before the next value, given the CUSUMs
    (:func:`~driftwarden.core.detectors.sequential.first_crossing`)."""
    floor: np.ndarray = -fixed_point(np.minimum(cusums, CUSUM_CAP))
    return floor


def shift_in_sigma(evidence: dict[str, Scalar]) -> float:
    """The evidence's normal-score shift (0 when there is none): how far a change moved, in reference σ."""
    shift = evidence.get("shift_sigma")
    return abs(shift) if isinstance(shift, float) and math.isfinite(shift) else 0.0
