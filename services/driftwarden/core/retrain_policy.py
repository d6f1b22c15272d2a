"""When to ask for a retrain: confirmed performance drift, or data drift on several features.

A trigger opens a pending retrain from the drift's start (the label window where the degradation was
measured, or the first trigger's event time). Detection is fast, so at that moment few labelled
examples exist after the drift; the command goes out once ``min_examples`` joined labels have
arrived since that start, with the window [start, latest label], and a cooldown then applies.

Drifted features are counted by their open ``data_drift`` alerts: the alert book keeps one per
(kind, subject), and every detector of a feature reports under the feature's name (a numeric
feature's rank CUSUM and window test; an embedding's MMD test and distance-to-centroid CUSUM), so a
feature counts once however many of its detectors fire.

>>> from driftwarden.core.alerting import AlertBook, Finding
>>> from driftwarden.core.config import RetrainPolicyConfig
>>> book = AlertBook("fraud", "3")
>>> alert = book.report(Finding("performance_drift", "accuracy", "window", True,
...     {"window_start_ts": 50.0}, "accuracy fell"), "6f1c2a7e-0d9b-4a57-9a43-5f0f3c1d2b11", 100.0, 1.0)
>>> policy = RetrainPolicy(RetrainPolicyConfig(min_examples=3))
>>> policy.evaluate(book, [alert], event_ts=100.0)
>>> policy.on_labels([40.0, 60.0, 70.0], now=1.0) is None  # two since the drift started: not enough yet
True
>>> command = policy.on_labels([80.0], now=2.0)
>>> command.reasons == [alert.fingerprint], command.window.start_ts, command.window.end_ts
(True, 50.0, 80.0)
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field

from driftwarden.core.alerting import ALERT_NAMESPACE, AlertBook
from driftwarden.core.config import RetrainPolicyConfig
from driftwarden.core.events import Alert, RetrainCommand, TrainingWindow


@dataclass
class PendingRetrain:
    model_id: str
    model_version: str
    start_ts: float
    reasons: list[str]
    examples: int = 0
    latest_ts: float = 0.0


@dataclass
class RetrainPolicy:
    config: RetrainPolicyConfig
    last_command_ts: float | None = None
    pending: PendingRetrain | None = field(default=None)

    def evaluate(self, book: AlertBook, fired: list[Alert], event_ts: float) -> None:
        """Open a pending retrain if ``fired`` (alerts just raised) completes a trigger."""
        firing = [a for a in fired if a.state == "firing"]
        if not firing or self.pending is not None:
            return
        if self.last_command_ts is not None and event_ts - self.last_command_ts < self.config.cooldown_s:
            return
        open_alerts = list(book.open.values())
        data = [a for a in open_alerts if a.kind == "data_drift"]
        if self.config.on_performance_drift and any(a.kind == "performance_drift" for a in firing):
            reasons = [a for a in open_alerts if a.kind == "performance_drift"]
        elif len(data) >= self.config.min_drifted_features and any(a.kind == "data_drift" for a in firing):
            reasons = data
        else:
            return
        starts = [float(a.evidence.get("window_start_ts") or event_ts) for a in reasons]
        start = max(min(starts), event_ts - self.config.training_window_s)
        fingerprints = sorted(a.fingerprint for a in reasons)
        self.pending = PendingRetrain(book.model_id, book.model_version, start, fingerprints)

    def on_labels(self, joined_ts: list[float], now: float) -> RetrainCommand | None:
        """Count labelled examples since the drift started; the command once there are enough."""
        pending = self.pending
        if pending is None:
            return None
        after = [ts for ts in joined_ts if ts >= pending.start_ts]
        pending.examples += len(after)
        pending.latest_ts = max([pending.latest_ts, *after])
        if pending.examples < self.config.min_examples:
            return None
        self.pending = None
        self.last_command_ts = pending.latest_ts
        digest = hashlib.blake2b("/".join(pending.reasons).encode(), digest_size=6).hexdigest()
        key = f"{pending.model_id}:{pending.model_version}:{digest}"
        return RetrainCommand(
            command_id=str(uuid.uuid5(ALERT_NAMESPACE, key)),
            idempotency_key=key,
            model_id=pending.model_id,
            model_version=pending.model_version,
            ts=now,
            reasons=pending.reasons,
            window=TrainingWindow(start_ts=pending.start_ts, end_ts=pending.latest_ts),
        )
