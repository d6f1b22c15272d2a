"""Alert lifecycle: one open alert per (kind, subject), firing -> resolved, hysteresis, stable ids.

Detectors report :class:`Finding` s; the :class:`AlertBook` of a (model, version) turns them into
alert events:

* a drifted finding on a subject with no open alert fires one (``state="firing"``); further
  drifted findings on that subject, from any detector, are counted but not re-sent;
* an open alert resolves (``state="resolved"``, same fingerprint) only on evidence that the
  distribution is back: ``resolve_after`` consecutive *settled* window verdicts, i.e. tests that
  pass with a margin (p-value at least ``resolve_p_value``, far above the firing threshold, and no
  effect size over its floor; a rate at most half its limit; see :func:`passes_with_margin`). A
  window without that margin, or any drifted finding (streaming detectors included), restarts the
  count, so a shift that persists keeps its alert open;
* for ``cooldown_s`` of event time after resolving, a drifted finding that *repeats* the resolved
  one (same detector, same aspect and direction of change, size within ``repeat_tolerance``,
  see :mod:`driftwarden.core.changes`) is counted as suppressed; any other change fires at once:
  a cooldown never hides a new change;
* alert ids derive from (fingerprint, state, trigger event), so reprocessing the same events after a
  restart reproduces the same alert, which consumers dedupe by id.

>>> book = AlertBook("fraud", "3", resolve_after=2, cooldown_s=60)
>>> up = {"change": "location", "change_direction": "up", "change_size": 1.2}
>>> drifted = Finding("data_drift", "amount", "adwin", True, up, "amount moved")
>>> clean = Finding("data_drift", "amount", "ks_psi_wasserstein", False, {"p_value": 0.4}, "", settled=True)
>>> book.report(drifted, "e1", 100.0, 1.0).state
'firing'
>>> book.report(drifted, "e2", 101.0, 1.0) is None  # the same problem, still open
True
>>> book.report(clean, "e3", 102.0, 1.0) is None  # one settled window is not enough
True
>>> book.report(clean, "e4", 103.0, 1.0).state
'resolved'
>>> book.report(drifted, "e5", 110.0, 1.0) is None  # a repeat of the resolved finding, cooling down
True
>>> stronger = Finding("data_drift", "amount", "adwin", True, up | {"change_size": 2.5}, "amount moved more")
>>> book.report(stronger, "e6", 111.0, 1.0).state  # a new change fires despite the cooldown
'firing'
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

from driftwarden.core.events import Alert, AlertKind, Scalar, alert_fingerprint
from driftwarden.core.state import State, StateError, StateReader, pack_optional_float

ALERT_NAMESPACE = uuid.UUID("8f0b7a52-63a4-4b8e-9d0e-6c1c3f0f1d2a")
Severity = Literal["info", "warning", "critical"]


@dataclass
class Finding:
    """One detector's verdict on one subject."""

    kind: AlertKind
    subject: str
    detector: str
    drifted: bool
    evidence: dict[str, Scalar]
    summary: str
    severity: Severity = "warning"
    #: A clean verdict with a margin: evidence that the distribution is back (see passes_with_margin).
    settled: bool = False


def passes_with_margin(evidence: dict[str, Scalar], resolve_p_value: float) -> bool:
    """Whether a clean verdict clears its test with a margin (hysteresis for resolving).

    A test with a p-value: ``p_value >= resolve_p_value``. A data-quality rate: at most half its limit
    above the reference rate. Anything else (a budget): clean is enough.
    """
    p_value = evidence.get("p_value")
    if isinstance(p_value, float):
        return p_value >= resolve_p_value
    rate, reference, limit = (evidence.get(key) for key in ("rate", "reference_rate", "limit"))
    if isinstance(rate, float) and isinstance(reference, float) and isinstance(limit, float):
        return rate - reference <= limit / 2
    return True


@dataclass(frozen=True)
class Resolution:
    """What a resolved alert had found, to tell a repeat of it from a new change."""

    ts: float
    detector: str
    change: Scalar
    direction: Scalar
    size: float | None

    @classmethod
    def of(cls, alert: Alert, ts: float) -> Resolution:
        size = alert.evidence.get("change_size")
        return cls(ts, alert.detector, alert.evidence.get("change"), alert.evidence.get("change_direction"),
                   size if isinstance(size, float) else None)  # fmt: skip

    def state(self) -> State:
        return {"ts": self.ts, "detector": self.detector, "change": self.change, "direction": self.direction,
                "size": pack_optional_float(self.size)}  # fmt: skip

    @classmethod
    def from_state(cls, state: StateReader) -> Resolution:
        return cls(state.number("ts"), state.text("detector"), state.scalar("change"), state.scalar("direction"),
                   state.optional_number("size"))  # fmt: skip


@dataclass
class AlertBook:
    model_id: str
    model_version: str
    resolve_after: int = 3
    cooldown_s: float = 3600.0
    repeat_tolerance: float = 0.5
    open: dict[tuple[str, str], Alert] = field(default_factory=dict)
    settled_streak: dict[tuple[str, str], int] = field(default_factory=dict)
    resolved: dict[tuple[str, str], Resolution] = field(default_factory=dict)
    suppressed: int = 0

    def report(self, finding: Finding, trigger_event_id: str, event_ts: float, now: float) -> Alert | None:
        """Record a finding; return the alert event it causes, if any."""
        key = (finding.kind, finding.subject)
        if finding.drifted:
            if self.counted_while_open(finding.kind, finding.subject):
                return None
            self.settled_streak[key] = 0
            if self._repeats(key, finding, event_ts):
                self.suppressed += 1
                return None
            alert = self._alert(finding, "firing", trigger_event_id, now)
            self.open[key] = alert
            return alert
        if key not in self.open:
            return None
        self.settled_streak[key] = self.settled_streak.get(key, 0) + 1 if finding.settled else 0
        if self.settled_streak[key] < self.resolve_after:
            return None
        opened = self.open.pop(key)
        self.resolved[key] = Resolution.of(opened, event_ts)
        summary = f"resolved: {opened.summary}"
        finding = Finding(finding.kind, finding.subject, opened.detector, False, finding.evidence, summary, "info")
        return self._alert(finding, "resolved", trigger_event_id, now)

    def counted_while_open(self, kind: AlertKind, subject: str) -> bool:
        """Whether the subject's alert is open; if so, a drifted finding on it is counted, as ``report`` does.

        What ``report`` does with a drifted finding on an open subject needs no evidence, so a detector
        that keeps alarming on a persisting change need not build any (the evidence is read only to fire
        or to tell a repeat of a resolved alert).
        """
        key = (kind, subject)
        if key not in self.open:
            return False
        self.settled_streak[key] = 0
        self.suppressed += 1
        return True

    def _repeats(self, key: tuple[str, str], finding: Finding, event_ts: float) -> bool:
        """Whether a drifted finding repeats the subject's resolved alert within the cooldown."""
        last = self.resolved.get(key)
        if last is None or event_ts - last.ts >= self.cooldown_s:
            return False
        evidence = finding.evidence
        if (finding.detector, evidence.get("change"), evidence.get("change_direction")) != (
            last.detector, last.change, last.direction,
        ):  # fmt: skip
            return False
        size = evidence.get("change_size")
        if not isinstance(size, float) or last.size is None:
            return True
        band = 1.0 + self.repeat_tolerance
        return last.size / band <= size <= last.size * band

    def _alert(self, finding: Finding, state: Literal["firing", "resolved"], trigger: str, now: float) -> Alert:
        fingerprint = alert_fingerprint(
            self.model_id, self.model_version, finding.kind, finding.subject, finding.detector
        )
        return Alert(
            alert_id=str(uuid.uuid5(ALERT_NAMESPACE, f"{fingerprint}/{state}/{trigger}")),
            fingerprint=fingerprint,
            state=state,
            severity=finding.severity,
            kind=finding.kind,
            model_id=self.model_id,
            model_version=self.model_version,
            subject=finding.subject,
            detector=finding.detector,
            ts=now,
            summary=finding.summary,
            trigger_event_id=trigger,
            evidence=finding.evidence,
        )

    # -- state -----------------------------------------------------------------------------------

    def state(self) -> State:
        return {
            "model_id": self.model_id,
            "model_version": self.model_version,
            "resolve_after": self.resolve_after,
            "cooldown_s": self.cooldown_s,
            "repeat_tolerance": self.repeat_tolerance,
            "open": [[*key, alert.model_dump(mode="json", exclude_none=True)] for key, alert in self.open.items()],
            "settled_streak": [[*key, n] for key, n in self.settled_streak.items()],
            "resolved": [[*key, resolution.state()] for key, resolution in self.resolved.items()],
            "suppressed": self.suppressed,
        }

    @classmethod
    def from_state(cls, state: StateReader) -> AlertBook:
        book = cls(
            state.text("model_id"),
            state.text("model_version"),
            state.integer("resolve_after", minimum=1),
            state.number("cooldown_s"),
            state.number("repeat_tolerance"),
            suppressed=state.integer("suppressed"),
        )
        for kind, subject, document in _keyed_rows(state, "open"):
            try:
                book.open[(kind, subject)] = Alert.model_validate(document)
            except ValueError as exc:
                raise StateError(f"{state.where}.open: not a valid alert ({exc})") from None
        for kind, subject, n in _keyed_rows(state, "settled_streak"):
            book.settled_streak[(kind, subject)] = StateReader({"n": n}, f"{state.where}.settled_streak").integer("n")
        for kind, subject, resolution in _keyed_rows(state, "resolved"):
            book.resolved[(kind, subject)] = Resolution.from_state(StateReader(resolution, f"{state.where}.resolved"))
        return book


def _keyed_rows(state: StateReader, key: str) -> list[tuple[str, str, object]]:
    """Rows ``[kind, subject, value]`` of an AlertBook table."""
    rows = []
    for row in state.items(key):
        if not (isinstance(row, list) and len(row) == 3 and type(row[0]) is str and type(row[1]) is str):
            raise StateError(f"{state.where}.{key}: expected [kind, subject, value] rows")
        rows.append((row[0], row[1], row[2]))
    return rows
