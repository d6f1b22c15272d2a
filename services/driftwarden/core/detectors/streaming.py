"""The streaming detector: one numeric value per update, ranked against the reference, CUSUMs on the ranks."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar, Self

import numpy as np

from driftwarden.core.compiled import lindley
from driftwarden.core.detectors.base import StreamingDetector, build, number, readable
from driftwarden.core.detectors.multimodal import MODES, shape_bank
from driftwarden.core.detectors.sequential import (
    ATOM_STATISTICS,
    BY_BIN,
    CUSUM_CAP,
    NO_PART,
    SCALE,
    Alternative,
    RankBins,
    RatioSpec,
    ReferenceCdf,
    bank,
    bank_thresholds,
    continuous_part,
    fixed_point,
    normal_scores,
    part_tables,
)
from driftwarden.core.events import Scalar
from driftwarden.core.state import State, StateError, StateReader, pack_array

#: Recent values kept to describe a change (its median, spread, normal-score shift).
RECENT = 512
#: A numeric reference of at most this many distinct values (a flag, a small count) has its alarms told by the share
#: of the value that moved most (:meth:`RankCusumDetector.evidence`): its median and IQR hardly move.
FEW_VALUES = 10
#: ``update_many`` takes at most this many values at a time (the fixed-point sums stay far from overflow).
CHUNK = 1 << 22


class RankCusumDetector(StreamingDetector):
    """A change in the distribution of one numeric stream, whatever its shape.

    Each value is ranked against the reference (a randomized probability integral transform of the
    reference's quantile summary, ties included) and turned into a normal score, which is exactly
    N(0, 1) while nothing changes, for any feature shape: heavy tails, counts, zero inflation,
    clipping. 33 CUSUMs watch the scores (location, spread, each tail, both tails, a small component
    beyond either side, the ends of the rank scale emptied or heavier, and mass moving smoothly between
    the middle of the rank scale and both ends; :data:`~driftwarden.core.detectors.sequential.BANK`); where
    the reference has an atom at an end of its range, 6 more watch its share (3 more for atoms at both ends:
    :func:`~driftwarden.core.detectors.sequential.atom_bank`), and beside an atom of more than 10 %, location
    and spread also within the rest (:func:`~driftwarden.core.detectors.sequential.continuous_part`): 49 for a
    feature with 40 % zeros; where the reference has several modes, 12 more whose alternatives are its own
    density shifted either way, blurred, and its modes reweighted
    (:func:`~driftwarden.core.detectors.multimodal.shape_bank`: both modes moving together, each widening, their
    weights moving); their thresholds follow from
    ``arl``, the mean number of values between false alarms this detector may have, split evenly
    over them (Bonferroni). After an alarm every CUSUM restarts from zero. The increments are binned
    log-likelihood ratios looked up by the values' bins (:class:`~driftwarden.core.detectors.sequential.RankBins`)
    and the CUSUMs run in fixed point (:func:`~driftwarden.core.compiled.lindley`): ``update`` in a
    loop and ``update_many`` agree bit for bit (every CUSUM that can alarm; one that is off is only held below
    2^20 nats).

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
    49

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
        shapes, shape_table = shape_bank(self.cdf, reference_n) if self.part is None else ((), NO_PART)
        self.bank = bank(self.part) + shapes
        self._bins = RankBins(self.cdf, self.part)
        # (a reference with several modes: its own alternatives' increments by the values' bins of ``z``)
        self._by_z = bool(shapes)
        self._tables = (BY_BIN, shape_table, NO_PART) if shapes else (BY_BIN, *part_tables(self.part))
        self.thresholds = bank_thresholds(self.part, arl, reference_n, shapes)
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
            self._run(finite, piece, on_drift)

    def _run(self, finite: np.ndarray, index: np.ndarray, on_drift: Callable[[int], None] | None) -> None:
        # A value's bins do not depend on the CUSUMs (its tie-breaking draw is numbered by its position), so
        # they are found for all values at once; after an alarm every CUSUM restarts from zero.
        bins = self._bins(finite, self.n_seen, self.seed)
        if self._by_z:
            bins = (bins[0], bins[0])
        cusums = _fixed(self.cusums)
        start = 0
        while start < len(finite):
            last_zero = np.full(len(cusums), -1)
            crossing = lindley(bins, self._tables, cusums, last_zero, self.limits, start)
            stop = len(finite) if crossing is None else crossing
            self._advance(finite, start, stop, cusums, last_zero)
            start = stop
            if crossing is not None:
                which = int(np.argmax(self.cusums - self.thresholds))
                self.alarm = (which, self.n_seen, int(self.n_seen - self.run_starts[which]))
                self.cusums[:] = 0.0
                self.run_starts[:] = self.n_seen
                cusums[:] = 0
                self._drift_detected = True
                if on_drift is not None:
                    on_drift(int(index[stop - 1]))

    def _advance(self, finite: np.ndarray, start: int, stop: int, cusums: np.ndarray, last_zero: np.ndarray) -> None:
        """The state after the values ``finite[start:stop]``: the CUSUMs (fixed point) and the number of values
        taken when each was last 0 (-1: not since ``start``; :func:`~driftwarden.core.compiled.lindley`)."""
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
        return (
            evidence
            | self._shares(spec, segment)
            | {
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
        )

    def _shares(self, spec: Alternative, segment: np.ndarray) -> dict[str, Scalar]:
        """An alarm of the atoms' CUSUMs (:func:`~driftwarden.core.detectors.sequential.atom_bank`): the atoms' values,
        their share in the reference and among the values since the change point (at or beyond the atom: a value
        beyond the reference's range counts with the atom at that end); of the modes' weights'
        (:func:`~driftwarden.core.detectors.multimodal.shape_bank`): the share of values above the valley between
        the modes, in the reference and since the change point."""
        if isinstance(spec, RatioSpec) and spec.valley is not None:
            reference = self.cdf.level_at(spec.valley)
            return {"valley": spec.valley, "reference_share": 1.0 - reference,
                    "recent_share": float((segment > spec.valley).mean()) if len(segment) else 0.0}  # fmt: skip
        if spec.statistic not in ATOM_STATISTICS or self.part is None:
            return self._value_share(segment)
        a, b = self.part
        low, high = self.quantiles[0], self.quantiles[-1]
        lower, upper = spec.statistic != "upper_atom", spec.statistic != "lower_atom"
        at = (segment <= low) & lower | (segment >= high) & upper
        return {
            "atom_values": ", ".join(f"{v:.6g}" for v, on in ((low, lower), (high, upper)) if on),
            "reference_share": float(a * lower + (1 - b) * upper),
            "recent_share": float(at.mean()) if len(segment) else 0.0,
        }

    def _value_share(self, segment: np.ndarray) -> dict[str, Scalar]:
        """A numeric reference of at most :data:`FEW_VALUES` distinct values (a 0/1 flag, a small count): the value
        whose share moved most since the change point (by its chi-square term), its share in the reference and
        since; nothing for any other reference (or a categorical one: its alarms are told by category)."""
        q = self.cdf.q
        values, first = np.unique(q, return_index=True)
        if self.masses is not None or len(values) > FEW_VALUES or len(values) < 2 or not len(segment):
            return {}
        last = np.searchsorted(q, values, "right") - 1
        reference = self.cdf.above[last] - self.cdf.below[first]
        recent = (segment[:, None] == values[None, :]).mean(axis=0)
        i = int(np.argmax((recent - reference) ** 2 / np.maximum(reference, 1e-12)))
        return {"value": float(values[i]), "reference_share": float(reference[i]), "recent_share": float(recent[i])}

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
        if e["statistic"] == MODES:
            return _share_summary(f"above {valley_text(e)} (between the modes)", e, model_id, model_version)
        if e["statistic"] in ATOM_STATISTICS:
            where = {"lower_atom": "the minimum", "upper_atom": "the maximum"}.get(str(e["statistic"]), "the limits")
            return _share_summary(f"at {where} ({e['atom_values']})", e, model_id, model_version)
        if "value" in e:
            return _share_summary(f"equal to {number(e, 'value'):.6g}", e, model_id, model_version)
        what = {"location": "location", "spread": "spread", "upper_tail": "upper tail", "lower_tail": "lower tail",
                "upper_end": "upper end", "lower_end": "lower end", "ends": "both ends"}.get(
            str(e["statistic"]), "distribution")  # fmt: skip
        direction = "heavier" if "tail" in what else ("moved up" if e["direction"] == "up" else "moved down")
        if what == "spread":
            direction = "widened" if e["direction"] == "up" else "narrowed"
        if "end" in what:  # the share of values at the end(s) of the reference's range
            direction = "fuller" if e["direction"] == "up" else "emptier"
        before, after = _medians(e)
        return (
            f"{what} {direction}: median {before} -> {after}, "
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


def _share_summary(where: str, e: dict[str, Scalar], model_id: str, model_version: str) -> str:
    """The summary of an alarm about a share of the values (an end atom's, or above the valley between two modes)."""
    before, after = _medians(e)
    return (
        f"share of values {where} {'rose' if number(e, 'recent_share') >= number(e, 'reference_share') else 'fell'}: "
        f"{e['reference_share']:.1%} -> "
        f"{e['recent_share']:.1%}, median {before} -> {after} over the last "
        f"{e['values_since_change']} values on {model_id} v{model_version}"
    )


def valley_text(evidence: dict[str, Scalar]) -> str:
    """A modes' alarm's valley, with the digits a tenth of the reference's IQR needs."""
    return readable([number(evidence, "valley")], number(evidence, "reference_iqr") / 10)[0]


def _medians(e: dict[str, Scalar]) -> list[str]:
    """The reference's median and the recent one, with the digits their difference (or the reference's IQR) needs."""
    before, after, iqr = number(e, "reference_median"), number(e, "current_median"), number(e, "reference_iqr")
    return readable([before, after], min((d for d in (abs(after - before), iqr) if d > 0), default=0.0))


def _fixed(cusums: np.ndarray) -> np.ndarray:
    """The CUSUMs (nats) in fixed point, those that are off held below :data:`CUSUM_CAP`."""
    fixed: np.ndarray = fixed_point(np.minimum(cusums, CUSUM_CAP))
    return fixed


def shift_in_sigma(evidence: dict[str, Scalar]) -> float:
    """The evidence's normal-score shift (0 when there is none): how far a change moved, in reference σ."""
    shift = evidence.get("shift_sigma")
    return abs(shift) if isinstance(shift, float) and math.isfinite(shift) else 0.0
