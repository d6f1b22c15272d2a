"""Alert lifecycle: one open alert per (kind, subject), firing -> resolved, cooldown, stable ids.

Detectors report :class:`Finding` s; the :class:`AlertBook` of a (model, version) turns them into
alert events:

* a drifted finding on a subject with no open alert fires one (``state="firing"``); further
  drifted findings on that subject, from any detector, are counted but not re-sent;
* ``resolve_after`` consecutive clean window verdicts on an open subject resolve it
  (``state="resolved"``, same fingerprint);
* after resolving, the subject stays quiet for ``cooldown_s`` of event time;
* alert ids derive from (fingerprint, state, trigger event), so reprocessing the same events after a
  restart reproduces the same alert, which consumers dedupe by id.

>>> book = AlertBook("fraud", "3", resolve_after=2, cooldown_s=60)
>>> drifted = Finding("data_drift", "amount", "adwin", True, {"shift_sigma": 1.2}, "amount moved")
>>> clean = Finding("data_drift", "amount", "ks_psi_wasserstein", False, {}, "")
>>> [a.state for a in (book.report(drifted, "6f1c2a7e-0d9b-4a57-9a43-5f0f3c1d2b11", 100.0, 1.0),)]
['firing']
>>> book.report(drifted, "6f1c2a7e-0d9b-4a57-9a43-5f0f3c1d2b12", 101.0, 1.0) is None
True
>>> book.report(clean, "6f1c2a7e-0d9b-4a57-9a43-5f0f3c1d2b13", 102.0, 1.0) is None
True
>>> book.report(clean, "6f1c2a7e-0d9b-4a57-9a43-5f0f3c1d2b14", 103.0, 1.0).state
'resolved'
>>> book.report(drifted, "6f1c2a7e-0d9b-4a57-9a43-5f0f3c1d2b15", 110.0, 1.0) is None  # cooling down
True
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

from driftwarden.core.events import Alert, AlertKind, Scalar, alert_fingerprint
from driftwarden.core.state import State, StateError, StateReader

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


@dataclass
class AlertBook:
    model_id: str
    model_version: str
    resolve_after: int = 2
    cooldown_s: float = 3600.0
    open: dict[tuple[str, str], Alert] = field(default_factory=dict)
    clean_streak: dict[tuple[str, str], int] = field(default_factory=dict)
    resolved_at: dict[tuple[str, str], float] = field(default_factory=dict)
    suppressed: int = 0

    def report(self, finding: Finding, trigger_event_id: str, event_ts: float, now: float) -> Alert | None:
        """Record a finding; return the alert event it causes, if any."""
        key = (finding.kind, finding.subject)
        if finding.drifted:
            self.clean_streak[key] = 0
            if key in self.open:
                self.suppressed += 1
                return None
            resolved = self.resolved_at.get(key)
            if resolved is not None and event_ts - resolved < self.cooldown_s:
                self.suppressed += 1
                return None
            alert = self._alert(finding, "firing", trigger_event_id, now)
            self.open[key] = alert
            return alert
        if key not in self.open:
            return None
        self.clean_streak[key] = self.clean_streak.get(key, 0) + 1
        if self.clean_streak[key] < self.resolve_after:
            return None
        opened = self.open.pop(key)
        self.resolved_at[key] = event_ts
        summary = f"resolved: {opened.summary}"
        finding = Finding(finding.kind, finding.subject, opened.detector, False, finding.evidence, summary, "info")
        return self._alert(finding, "resolved", trigger_event_id, now)

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
            "open": [[*key, alert.model_dump(mode="json", exclude_none=True)] for key, alert in self.open.items()],
            "clean_streak": [[*key, n] for key, n in self.clean_streak.items()],
            "resolved_at": [[*key, ts] for key, ts in self.resolved_at.items()],
            "suppressed": self.suppressed,
        }

    @classmethod
    def from_state(cls, state: StateReader) -> AlertBook:
        book = cls(
            state.text("model_id"),
            state.text("model_version"),
            state.integer("resolve_after", minimum=1),
            state.number("cooldown_s"),
            suppressed=state.integer("suppressed"),
        )
        for kind, subject, document in _keyed_rows(state, "open"):
            try:
                book.open[(kind, subject)] = Alert.model_validate(document)
            except ValueError as exc:
                raise StateError(f"{state.where}.open: not a valid alert ({exc})") from None
        for kind, subject, n in _keyed_rows(state, "clean_streak"):
            book.clean_streak[(kind, subject)] = StateReader({"n": n}, f"{state.where}.clean_streak").integer("n")
        for kind, subject, ts in _keyed_rows(state, "resolved_at"):
            book.resolved_at[(kind, subject)] = StateReader({"ts": ts}, f"{state.where}.resolved_at").number("ts")
        return book


def _keyed_rows(state: StateReader, key: str) -> list[tuple[str, str, object]]:
    """Rows ``[kind, subject, value]`` of an AlertBook table."""
    rows = []
    for row in state.items(key):
        if not (isinstance(row, list) and len(row) == 3 and type(row[0]) is str and type(row[1]) is str):
            raise StateError(f"{state.where}.{key}: expected [kind, subject, value] rows")
        rows.append((row[0], row[1], row[2]))
    return rows
