"""When to ask for a retrain: confirmed performance drift, or data drift on several features.

>>> from driftwarden.core.alerting import AlertBook, Finding
>>> from driftwarden.core.config import RetrainPolicyConfig
>>> book = AlertBook("fraud", "3")
>>> alert = book.report(Finding("performance_drift", "accuracy", "window", True,
...     {"window_start_ts": 50.0}, "accuracy fell"), "6f1c2a7e-0d9b-4a57-9a43-5f0f3c1d2b11", 100.0, 1.0)
>>> policy = RetrainPolicy(RetrainPolicyConfig())
>>> command = policy.evaluate(book, [alert], event_ts=100.0, now=1.0)
>>> command.reasons == [alert.fingerprint], command.window.start_ts, command.window.end_ts
(True, 50.0, 100.0)
>>> policy.evaluate(book, [alert], event_ts=200.0, now=2.0) is None  # cooling down
True
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from driftwarden.core.alerting import ALERT_NAMESPACE, AlertBook
from driftwarden.core.config import RetrainPolicyConfig
from driftwarden.core.events import Alert, RetrainCommand, TrainingWindow


@dataclass
class RetrainPolicy:
    config: RetrainPolicyConfig
    last_command_ts: float | None = None
    commands: int = 0

    def evaluate(self, book: AlertBook, fired: list[Alert], event_ts: float, now: float) -> RetrainCommand | None:
        """A command if ``fired`` (alerts just raised) completes a trigger and no cooldown applies."""
        firing = [a for a in fired if a.state == "firing"]
        if not firing:
            return None
        if self.last_command_ts is not None and event_ts - self.last_command_ts < self.config.cooldown_s:
            return None
        open_alerts = list(book.open.values())
        performance = [a for a in open_alerts if a.kind == "performance_drift"]
        data = [a for a in open_alerts if a.kind == "data_drift"]
        if self.config.on_performance_drift and any(a.kind == "performance_drift" for a in firing):
            reasons = performance
        elif len(data) >= self.config.min_drifted_features and any(a.kind == "data_drift" for a in firing):
            reasons = data
        else:
            return None
        starts = [float(a.evidence.get("window_start_ts") or event_ts) for a in reasons]  # type: ignore[arg-type]
        start = max(min(starts), event_ts - self.config.training_window_s)
        fingerprints = sorted(a.fingerprint for a in reasons)
        digest = hashlib.blake2b("/".join(fingerprints).encode(), digest_size=6).hexdigest()
        key = f"{book.model_id}:{book.model_version}:{digest}"
        self.last_command_ts = event_ts
        self.commands += 1
        return RetrainCommand(
            command_id=str(uuid.uuid5(ALERT_NAMESPACE, key)),
            idempotency_key=key,
            model_id=book.model_id,
            model_version=book.model_version,
            ts=now,
            reasons=fingerprints,
            window=TrainingWindow(start_ts=start, end_ts=event_ts),
        )
