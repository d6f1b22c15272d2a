"""The monitor's core: events in, alerts out. Pure and synchronous; the Faust service is a thin adapter.

>>> from driftwarden.load.scenarios import Scenario, generate
>>> from driftwarden.core.events import PredictionEvent
>>> scenario = Scenario(name="abrupt-shift", n_events=6_000, onset=3_000, drift_features=("num_03",))
>>> monitor = Monitor()
>>> alerts = []
>>> for chunk in generate(scenario):
...     events = [PredictionEvent.model_validate(e) for e in chunk.prediction_events()]
...     alerts += monitor.observe(events, now=0.0)
>>> [(a.kind, a.subject, a.detector, a.state) for a in alerts]
[('data_drift', 'num_03', 'adwin', 'firing')]
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

from driftwarden.core.detectors import MeanShiftDetector
from driftwarden.core.events import Alert, PredictionEvent, alert_fingerprint

CRITICAL_SHIFT_SIGMA = 2.0


@dataclass(frozen=True)
class MonitorConfig:
    """Detector parameters; the defaults need no configuration file."""

    adwin_delta: float = 1e-5
    reference_size: int = 1_000


class ModelMonitor:
    """Detectors and open alerts of one (model_id, model_version).

    Numeric features get a :class:`MeanShiftDetector` each, created on first sight. At most one alert
    per fingerprint is open: further detections of the same problem are counted, not re-sent.
    """

    def __init__(self, model_id: str, model_version: str, config: MonitorConfig) -> None:
        self.model_id = model_id
        self.model_version = model_version
        self.config = config
        self.events_seen = 0
        self.suppressed = 0
        self.open_alerts: dict[str, Alert] = {}
        self._numeric: dict[str, MeanShiftDetector] = {}

    def observe(self, events: Sequence[PredictionEvent], now: float) -> list[Alert]:
        alerts = []
        for event in events:
            self.events_seen += 1
            for name, value in event.features.items():
                if type(value) is not float:  # categorical, boolean or missing: not monitored here
                    continue
                detector = self._numeric.get(name)
                if detector is None:
                    detector = self._numeric[name] = MeanShiftDetector(
                        self.config.adwin_delta, self.config.reference_size
                    )
                detector.update(value)
                if detector.drift_detected:
                    alert = self._fire(name, detector, event, now)
                    if alert is not None:
                        alerts.append(alert)
        return alerts

    def _fire(
        self, feature: str, detector: MeanShiftDetector, event: PredictionEvent, now: float
    ) -> Alert | None:
        fingerprint = alert_fingerprint(
            self.model_id, self.model_version, "data_drift", feature, detector.name
        )
        if fingerprint in self.open_alerts:
            self.suppressed += 1
            return None
        evidence = detector.evidence()
        shift, before, after = evidence["shift_sigma"], evidence["reference_mean"], evidence["current_mean"]
        critical = isinstance(shift, float) and abs(shift) >= CRITICAL_SHIFT_SIGMA
        shift_text = f" ({shift:+.2f} σ of reference)" if isinstance(shift, float) else ""
        alert = Alert(
            alert_id=str(uuid.uuid4()),
            fingerprint=fingerprint,
            state="firing",
            severity="critical" if critical else "warning",
            kind="data_drift",
            model_id=self.model_id,
            model_version=self.model_version,
            subject=feature,
            detector=detector.name,
            ts=now,
            summary=(
                f"{feature} mean moved from {before:.4g} to {after:.4g}"
                f"{shift_text} on {self.model_id} v{self.model_version}"
            ),
            trigger_event_id=event.event_id,
            evidence=evidence,
        )
        self.open_alerts[fingerprint] = alert
        return alert


class Monitor:
    """All monitored models. A new model version starts with fresh detectors and a new reference."""

    def __init__(self, config: MonitorConfig | None = None) -> None:
        self.config = config or MonitorConfig()
        self.models: dict[tuple[str, str], ModelMonitor] = {}

    def observe(self, events: Sequence[PredictionEvent], now: float) -> list[Alert]:
        """Feed events (any mix of models, in stream order); return the alerts they raise."""
        alerts: list[Alert] = []
        for key, run in groupby(events, key=lambda e: (e.model_id, e.model_version)):
            model = self.models.get(key)
            if model is None:
                model = self.models[key] = ModelMonitor(*key, self.config)
            alerts += model.observe(list(run), now)
        return alerts
