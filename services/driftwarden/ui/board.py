"""What the live page shows, built from the topics' records. Pure: no Kafka, no HTTP.

:class:`Board` takes monitor statuses, alerts and model verdicts as they come (in any interleaving)
and keeps, per model, a bounded history of the drift statistic of every feature, label-based and
estimated accuracy, open and resolved alerts with their evidence, and the versions with their
verdicts and rollouts. :meth:`Board.view` is the JSON the page renders; every change bumps the
model's revision so the server sends only what changed.

A page follows one monitor group's statuses (and v1 statuses, which name no group: those published
before statuses named theirs); other groups publishing statuses of a model are only named.

>>> from driftwarden.core.events import MonitorStatusV1
>>> board = Board("driftwarden-monitor")
>>> counters = MonitorStatusV1(model_id="fraud", ts=10.0, model_version="1", events_processed=6000,
...     events_dead_lettered=0, alerts_fired=0,
...     window_statistics=[("data_drift", "amount", "wasserstein_normed", 0.4)])
>>> board.status(counters.published("driftwarden-monitor", "host:1"))
>>> board.status(counters.published("canary", "host:2"))
>>> view = board.view("fraud")
>>> view["features"]["amount"], view["drift"]["amount"], view["other_groups"]
({'state': 'stable', 'statistic': 'wasserstein_normed', 'value': 0.4}, [0.4], ['canary'])
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from driftwarden.core.events import Alert, ModelPublished, MonitorStatusV1

#: Points of history kept per model (one per status that brought a new window).
HISTORY = 720
#: Resolved alerts kept per model.
RESOLVED_KEPT = 50
#: The statistic charted per feature: the first of these a feature's window has.
CHARTED = ("wasserstein_normed", "js_distance")
#: Alert kinds whose subject is a feature (or the prediction signal).
FEATURE_KINDS = ("data_drift", "prediction_drift")


@dataclass
class ModelBoard:
    model_id: str
    revision: int = 0
    status: dict[str, Any] = field(default_factory=dict)
    ts: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    drift: dict[str, deque[float | None]] = field(default_factory=dict)
    accuracy: deque[float | None] = field(default_factory=lambda: deque(maxlen=HISTORY))
    estimated: deque[float | None] = field(default_factory=lambda: deque(maxlen=HISTORY))
    latest: dict[str, tuple[str, float]] = field(default_factory=dict)  # feature -> (statistic, value)
    open: dict[str, Alert] = field(default_factory=dict)  # by fingerprint
    resolved: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RESOLVED_KEPT))
    versions: dict[str, list[ModelPublished]] = field(default_factory=dict)
    last_window: tuple[tuple[str, str, str, float], ...] = ()
    other_groups: set[str] = field(default_factory=set)  # monitor groups whose statuses the page leaves out


class Board:
    """Every model seen on the topics, by model id, with the statuses of monitor group ``group``."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.models: dict[str, ModelBoard] = {}
        self.revision = 0

    def _model(self, model_id: str) -> ModelBoard:
        board = self.models.get(model_id)
        if board is None:
            board = self.models[model_id] = ModelBoard(model_id)
        self.revision += 1
        board.revision = self.revision
        return board

    def status(self, status: MonitorStatusV1) -> None:
        group = status.published_by
        if group is not None and group != self.group:
            seen = self.models.get(status.model_id)
            if seen is None or group not in seen.other_groups:
                self._model(status.model_id).other_groups.add(group)
            return
        board = self._model(status.model_id)
        performance = status.performance or {}
        board.status = {
            "ts": status.ts,
            "model_version": status.model_version,
            "events_processed": status.events_processed,
            "events_dead_lettered": status.events_dead_lettered,
            "labels_received": status.labels_received,
            "alerts_fired": status.alerts_fired,
            "retrain_commands": status.retrain_commands,
            "accuracy": performance.get("accuracy"),
            "estimated_accuracy": performance.get("estimated_accuracy"),
        }
        window = tuple(status.window_statistics or ())
        if not window or window == board.last_window:
            return  # no new window since the last status: nothing to add to the history
        board.last_window = window
        charted: dict[str, tuple[str, float]] = {}
        for kind, subject, statistic, value in window:
            if kind in FEATURE_KINDS and statistic in CHARTED:
                known = charted.get(subject)
                if known is None or CHARTED.index(statistic) < CHARTED.index(known[0]):
                    charted[subject] = (statistic, value)
        board.latest = charted
        board.ts.append(status.ts)
        for subject in charted.keys() - board.drift.keys():
            board.drift[subject] = deque([None] * (len(board.ts) - 1), maxlen=HISTORY)
        for subject, values in board.drift.items():
            values.append(charted[subject][1] if subject in charted else None)
        board.accuracy.append(performance.get("accuracy"))
        board.estimated.append(performance.get("estimated_accuracy"))

    def alert(self, alert: Alert) -> None:
        board = self._model(alert.model_id)
        if alert.state == "firing":
            board.open[alert.fingerprint] = alert
            return
        opened = board.open.pop(alert.fingerprint, None)
        board.resolved.appendleft(_alert_view(alert) | {"fired_ts": opened.ts if opened else None})

    def verdict(self, event: ModelPublished) -> None:
        self._model(event.model_id).versions.setdefault(event.model_version, []).append(event)

    def view(self, model_id: str) -> dict[str, Any]:
        board = self.models[model_id]
        firing = {(a.kind, a.subject) for a in board.open.values()}
        subjects = sorted(board.latest.keys() | {s for k, s in firing if k in FEATURE_KINDS})
        features = {
            subject: {
                "state": "firing" if any((kind, subject) in firing for kind in FEATURE_KINDS) else "stable",
                "statistic": board.latest[subject][0] if subject in board.latest else None,
                "value": board.latest[subject][1] if subject in board.latest else None,
            }
            for subject in subjects
        }
        return {
            "model_id": model_id,
            "revision": board.revision,
            "group": self.group,
            "other_groups": sorted(board.other_groups),
            "status": board.status,
            "features": features,
            "ts": list(board.ts),
            "drift": {subject: list(values) for subject, values in sorted(board.drift.items())},
            "accuracy": list(board.accuracy),
            "estimated_accuracy": list(board.estimated),
            "open_alerts": [_alert_view(a) for a in sorted(board.open.values(), key=lambda a: a.ts)],
            "resolved_alerts": list(board.resolved),
            "versions": [_version_view(version, events) for version, events in sorted(board.versions.items(),
                                                                                      key=lambda v: v[1][0].ts)],
        }  # fmt: skip

    def changed_since(self, revisions: dict[str, int]) -> list[str]:
        """Models whose revision is newer than in ``revisions`` (what a client has seen)."""
        return sorted(m for m, board in self.models.items() if board.revision > revisions.get(m, 0))


def _alert_view(alert: Alert) -> dict[str, Any]:
    return alert.model_dump(
        mode="json",
        include={"alert_id", "fingerprint", "state", "severity", "kind", "model_version", "subject", "detector", "ts",
                 "summary", "evidence"},
    )  # fmt: skip


def _version_view(version: str, events: list[ModelPublished]) -> dict[str, Any]:
    latest = events[-1]
    return {
        "model_version": version,
        "status": latest.status,
        "ts": latest.ts,
        "reason": latest.reason,
        "traffic_fraction": latest.traffic_fraction,
        "parent_version": latest.parent_version,
        "accuracy": latest.metrics.get("accuracy"),
        "history": [{"status": e.status, "ts": e.ts, "reason": e.reason} for e in events],
    }
