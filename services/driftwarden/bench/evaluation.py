"""Scoring drift detections against known drift points, in the CD-MOA tradition. Pure functions.

A drift starts at ``start`` and takes ``width`` events to complete (1 for an abrupt drift). The
first alarm in ``[start, start + width + tolerance)`` (cut short by the next drift's start) detects
it; the detection delay is counted from ``start``. Any other alarm inside a drift's window is a
repeat of that detection and counted as neither; an alarm outside every window is a false alarm. A
change that persists (``lasts_until``, e.g. a feature shift nobody reverts) keeps later alarms about
it from counting as false, but they still cannot detect it late.

>>> score = score_alarms([Drift(1_000), Drift(5_000)], alarms=[400, 1_120, 1_130, 9_000], n_events=10_000,
...                      tolerance=1_000)
>>> score.detected, score.missed, score.false_alarms, score.delays
(1, 1, 2, [120])
>>> round(score.precision, 2), round(score.recall, 2)
(0.33, 0.5)
>>> score_alarms([Drift(1_000, lasts_until=10_000)], [5_000], n_events=10_000, tolerance=1_000).false_alarms
0
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Drift:
    start: int
    width: int = 1
    #: Alarms before this event are about this change (not false alarms), even after the detection window.
    lasts_until: int | None = None


@dataclass
class DetectionScore:
    """Detections of one detector configuration on one or more streams (see :func:`combine`)."""

    drifts: int = 0
    detected: int = 0
    false_alarms: int = 0
    alarms: int = 0
    events: int = 0
    #: Events outside every drift's window: where a false alarm can happen.
    stable_events: int = 0
    delays: list[int] = field(default_factory=list)
    correct: int = 0  # prequential: correct predictions (concept streams only)
    predicted: int = 0

    @property
    def missed(self) -> int:
        return self.drifts - self.detected

    @property
    def missed_rate(self) -> float | None:
        return self.missed / self.drifts if self.drifts else None

    @property
    def mean_delay(self) -> float | None:
        return statistics.fmean(self.delays) if self.delays else None

    @property
    def median_delay(self) -> float | None:
        return float(statistics.median(self.delays)) if self.delays else None

    @property
    def false_alarms_per_100k(self) -> float | None:
        return self.false_alarms / self.stable_events * 100_000 if self.stable_events else None

    @property
    def mean_time_between_false_alarms(self) -> float:
        """Stable events per false alarm (infinite when there was none)."""
        return self.stable_events / self.false_alarms if self.false_alarms else math.inf

    @property
    def precision(self) -> float | None:
        flagged = self.detected + self.false_alarms
        return self.detected / flagged if flagged else None

    @property
    def recall(self) -> float | None:
        return self.detected / self.drifts if self.drifts else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p and r else (0.0 if p is not None and r is not None else None)

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.predicted if self.predicted else None

    def as_dict(self) -> dict[str, float | int | None]:
        mtfa = self.mean_time_between_false_alarms
        return {
            "drifts": self.drifts,
            "detected": self.detected,
            "missed_rate": self.missed_rate,
            "mean_delay": self.mean_delay,
            "median_delay": self.median_delay,
            "alarms": self.alarms,
            "false_alarms": self.false_alarms,
            "false_alarms_per_100k": self.false_alarms_per_100k,
            "mean_time_between_false_alarms": None if math.isinf(mtfa) else mtfa,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "prequential_accuracy": self.accuracy,
            "events": self.events,
        }


def score_alarms(drifts: Sequence[Drift], alarms: Iterable[int], n_events: int, tolerance: int) -> DetectionScore:
    """Score alarm positions (event indices) against the true drifts of an ``n_events`` stream."""
    ordered = sorted(drifts, key=lambda d: d.start)
    windows = []
    for k, drift in enumerate(ordered):
        end = drift.start + drift.width + tolerance
        if k + 1 < len(ordered):
            end = min(end, ordered[k + 1].start)
        windows.append((drift.start, min(end, n_events)))
    # Where alarms are about a drift: its detection window, or longer while the change lasts.
    about = [(lo, max(hi, min(d.lasts_until or hi, n_events))) for d, (lo, hi) in zip(ordered, windows, strict=True)]
    first_alarm: list[int | None] = [None] * len(windows)
    false_alarms = 0
    alarm_list = sorted(alarms)
    for alarm in alarm_list:
        inside = next((k for k, (lo, hi) in enumerate(windows) if lo <= alarm < hi), None)
        if inside is not None:
            if first_alarm[inside] is None:
                first_alarm[inside] = alarm
        elif not any(lo <= alarm < hi for lo, hi in about):
            false_alarms += 1
    delays = [a - lo for a, (lo, _) in zip(first_alarm, windows, strict=True) if a is not None]
    covered = sum(hi - lo for lo, hi in about)
    return DetectionScore(
        drifts=len(windows),
        detected=len(delays),
        false_alarms=false_alarms,
        alarms=len(alarm_list),
        events=n_events,
        stable_events=n_events - covered,
        delays=delays,
    )


def combine(scores: Iterable[DetectionScore]) -> DetectionScore:
    """Pool scores of several streams or seeds (counts add up; delays are pooled)."""
    total = DetectionScore()
    for s in scores:
        total.drifts += s.drifts
        total.detected += s.detected
        total.false_alarms += s.false_alarms
        total.alarms += s.alarms
        total.events += s.events
        total.stable_events += s.stable_events
        total.delays += s.delays
        total.correct += s.correct
        total.predicted += s.predicted
    return total
