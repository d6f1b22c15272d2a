"""Model performance once labels arrive: rolling metrics, degradation tests, per-segment bias.

The first ``label_window`` joined labels of a version are its performance reference; every later
window of ``label_window`` joined labels is tested against it (one-sided: only degradation alerts).
A sequential detector also watches the per-label error stream for a faster signal: for a classifier,
Bernoulli CUSUMs against the reference's error rate with thresholds from the false-alarm budget
(:class:`~driftwarden.core.detectors.error_rate.BernoulliCusumDetector`, ``ModelMonitorConfig.label_arl``),
or a River detector (``error_detector``; for a regression model's absolute errors, ADWIN in place of
the CUSUMs). Per-segment accuracy is compared with the rest of the traffic in each window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import lru_cache
from typing import Literal, Protocol

import numpy as np

from driftwarden.core.alerting import Finding, Severity
from driftwarden.core.config import ModelMonitorConfig, model_config_from_state
from driftwarden.core.detectors.error_rate import BernoulliCusumDetector
from driftwarden.core.events import Scalar
from driftwarden.core.features import value_text
from driftwarden.core.joins import Joined, Value
from driftwarden.core.state import State, StateError, Stateful, StateReader, pack_array, pack_float
from driftwarden.core.stats import benjamini_hochberg, mean_increase_z, two_proportion_z

Task = Literal["classification", "regression"]


@lru_cache(maxsize=4_096, typed=True)
def _normalized(value: Value) -> str:
    """Labels and predictions compare by :func:`driftwarden.core.features.value_text` (1, 1.0 and "1" match;
    remembered per value and type: a classifier's few classes are normalized once, not twice a label)."""
    return value_text(value) or ""


class ErrorStreamDetector(Protocol):
    """A River detector watching the error stream (``ModelMonitorConfig.error_detector``)."""

    @property
    def drift_detected(self) -> bool: ...

    def update(self, x: float) -> None: ...


#: The River detectors :func:`error_detector` builds, by their name in the config.
RIVER_DETECTORS = ("adwin", "ddm", "eddm", "hddm_a", "hddm_w", "page_hinkley")


def error_detector(name: str, delta: float) -> ErrorStreamDetector | None:
    """A River concept-drift detector for the error stream, by name (None for "none").

    River is imported here, not with this module: its import (with scikit-learn's, which River's
    datasets pull in) costs about a second of CPU, which only a model using a River detector pays.
    """
    if name not in RIVER_DETECTORS:
        return None
    from river import drift

    factories: dict[str, Callable[[], ErrorStreamDetector]] = {
        "adwin": lambda: drift.ADWIN(delta=delta),
        "ddm": drift.binary.DDM,
        "eddm": drift.binary.EDDM,
        "hddm_a": drift.binary.HDDMA,
        "hddm_w": drift.binary.HDDMW,
        "page_hinkley": drift.PageHinkley,
    }
    return factories[name]()


def _river_state(detector: ErrorStreamDetector) -> State:
    from driftwarden.core.river_adapter import river_state  # (River is imported only where one runs)

    return river_state(detector)


class PerformanceMonitor(Stateful):
    """Performance of one (model, version) from joined labels."""

    def __init__(self, task: Task, positive_class: str | None, config: ModelMonitorConfig) -> None:
        self.task = task
        self.positive_class = positive_class
        self.config = config
        self.reference: dict[str, float] | None = None
        self.window: list[Joined] = []
        #: The window's errors (as :meth:`_error` gives them), kept beside it rather than computed again.
        self.window_errors: list[float] = []
        self.metrics: dict[str, float | None] = {}
        self.detector_name = config.error_detector
        # (Page-Hinkley watches a mean: for a classifier's 0/1 errors ADWIN does that job; the Bernoulli
        # CUSUMs need 0/1 errors: for a regression model's absolute errors ADWIN does theirs)
        replaced = "page_hinkley" if task == "classification" else "bernoulli_cusum"
        self.detector_name_used = "adwin" if self.detector_name == replaced else self.detector_name
        self.detector = error_detector(self.detector_name_used, config.adwin_delta)
        #: The error-rate CUSUMs (``bernoulli_cusum``), built once the reference's error rate is known:
        #: a rise alerts; a fall (the same CUSUMs on the correct labels) re-takes the reference.
        self.cusum: BernoulliCusumDetector | None = None
        self.improvement: BernoulliCusumDetector | None = None
        #: The errors of a reference being re-taken (after the error rate fell below the reference's).
        self.retake: list[float] | None = None
        self.recent_errors: deque[float] = deque(maxlen=config.label_window)
        self.recent_ts: deque[float] = deque(maxlen=config.label_window)

    def update(self, joined: list[Joined]) -> list[tuple[Finding, Joined]]:
        """Feed joined labels; return findings, each with the joined event that triggered it.

        The same findings and state as feeding them one at a time, a run of labels at a time: a run ends where
        a window closes or a reference being re-taken is complete (both change what follows), or at an alarm of
        the improvement CUSUM (which starts a re-take); the error-rate CUSUMs take a run in one call.
        """
        items, values = [], []
        for item in joined:
            error = self._error(item)
            if error is not None:
                items.append(item)
                values.append(error)
        findings: list[tuple[Finding, Joined]] = []
        start, size = 0, self.config.label_window
        while start < len(items):
            room = size - len(self.window) if self.retake is None else size - max(len(self.window), len(self.retake))
            start = self._feed(items, values, start, start + max(room, 1), findings)
        return findings

    def _feed(
        self, items: list[Joined], errors: list[float], start: int, stop: int, findings: list[tuple[Finding, Joined]]
    ) -> int:
        """Labels ``start`` up to at most ``stop`` (a run: see :meth:`update`); returns where the run ended."""
        stop = min(stop, len(items))
        run = errors[start:stop]
        fed = start  # the labels in ``recent_errors`` and ``recent_ts`` so far

        def recent_up_to(end: int) -> None:
            nonlocal fed
            self.recent_errors.extend(errors[fed:end])
            self.recent_ts.extend([item.ts for item in items[fed:end]])
            fed = end

        if self.cusum is not None and self.improvement is not None:
            cusum = self.cusum
            # A reference is the version's performance level: once the error rate is shown to have fallen below
            # it (a model that learns online, a hard reference period), the next ``label_window`` labels, a fresh
            # sample, become the reference if they confirm it (fewer errors than the reference had: a rise that
            # began meanwhile must not become the new level); the old CUSUMs watch until then.
            if self.retake is None:
                alarm = self.improvement.advance([1.0 - error for error in run])
                if alarm is not None:
                    stop, run, self.retake = start + alarm + 1, run[: alarm + 1], []
            else:
                self.retake += run

            def alarmed(i: int) -> None:
                recent_up_to(start + i + 1)
                findings.append((self._cusum_finding(cusum), items[start + i]))

            cusum.update_many(run, alarmed)
        elif self.reference is not None and self.detector is not None:
            for i in range(start, stop):
                recent_up_to(i + 1)
                self.detector.update(errors[i])
                if self.detector.drift_detected and float(np.mean(self.recent_errors)) > self.reference["error"]:
                    findings.append((self._detector_finding(), items[i]))
        recent_up_to(stop)
        self.window += items[start:stop]
        self.window_errors += run
        if self.retake is not None and len(self.retake) >= self.config.label_window:
            retaken, self.retake = np.array(self.retake), None
            if self.reference is not None and retaken.mean() < self.reference["error"]:
                self._take_reference(retaken)
        if len(self.window) >= self.config.label_window:
            findings += [(f, items[stop - 1]) for f in self._close_window()]
        return stop

    def _error(self, item: Joined) -> float | None:
        if self.task == "classification":
            return float(_normalized(item.prediction) != _normalized(item.label))
        if isinstance(item.prediction, float) and isinstance(item.label, float):
            return abs(item.prediction - item.label)
        return None

    @property
    def subject(self) -> str:
        return "accuracy" if self.task == "classification" else "mae"

    def _window_metrics(self, window: list[Joined], errors: np.ndarray) -> dict[str, float | None]:
        if self.task == "regression":
            return {
                "mae": float(errors.mean()),
                "error_std": float(errors.std()),
                "labels": float(len(errors)),
            }
        metrics: dict[str, float | None] = {
            "accuracy": float(1 - errors.mean()),
            "labels": float(len(errors)),
        }
        if self.positive_class is not None:
            predicted = np.array([_normalized(j.prediction) == self.positive_class for j in window])
            actual = np.array([_normalized(j.label) == self.positive_class for j in window])
            tp = float(np.sum(predicted & actual))
            denominator = 2 * tp + float(np.sum(predicted & ~actual)) + float(np.sum(~predicted & actual))
            metrics["f1"] = 2 * tp / denominator if denominator else None
        return metrics

    def _close_window(self) -> list[Finding]:
        window, self.window = self.window, []
        errors, self.window_errors = np.array(self.window_errors, dtype=float), []
        metrics = self._window_metrics(window, errors)
        self.metrics = metrics
        if self.reference is None:
            self._take_reference(errors)
            return []
        findings = [self._window_finding(errors, metrics, window)]
        findings += self._segment_findings(window, errors)
        return findings

    def _take_reference(self, errors: np.ndarray) -> None:
        """``errors`` (a window of labels) become the reference, and the error-rate CUSUMs start on it."""
        self.reference = {"error": float(errors.mean()), "std": float(errors.std()), "n": float(len(errors))}
        if self.detector_name_used == "bernoulli_cusum":
            wrong, n = int(errors.sum()), len(errors)
            self.cusum = BernoulliCusumDetector(wrong, n, self.config.label_arl)
            self.improvement = BernoulliCusumDetector(n - wrong, n, self.config.label_arl)

    def _window_finding(self, errors: np.ndarray, metrics: dict[str, float | None], window: list[Joined]) -> Finding:
        reference = self.reference or {}
        current = float(errors.mean())
        n = len(errors)
        if self.task == "classification":
            p_value = two_proportion_z(reference["error"], int(reference["n"]), current, n)
            degradation = current - reference["error"]
            drifted = p_value < self.config.fdr_q and degradation >= self.config.accuracy_drop
            threshold = self.config.accuracy_drop
        else:
            p_value = mean_increase_z(reference["error"], reference["std"], int(reference["n"]), errors)
            degradation = (current - reference["error"]) / reference["error"] if reference["error"] else 0.0
            drifted = p_value < self.config.fdr_q and degradation >= self.config.error_increase
            threshold = self.config.error_increase
        evidence: dict[str, Scalar] = {
            "statistic": "two_proportion_z" if self.task == "classification" else "mean_z",
            "p_value": p_value,
            f"reference_{self.subject}": 1 - reference["error"]
            if self.task == "classification"
            else reference["error"],
            self.subject: metrics.get(self.subject),
            "degradation": degradation,
            "threshold": threshold,
            "window_labels": n,
            "window_start_ts": min(j.ts for j in window),
        }
        if "f1" in metrics:
            evidence["f1"] = metrics["f1"]
        severity: Severity = "critical" if degradation >= 2 * threshold else "warning"
        summary = (
            f"{self.subject} fell from {evidence[f'reference_{self.subject}']:.3f} to {evidence[self.subject]:.3f} "
            f"over the last {n} labels (p={p_value:.2g})"
            if self.task == "classification"
            else f"MAE rose from {reference['error']:.4g} to {current:.4g} over the last {n} labels (p={p_value:.2g})"
        )
        return Finding("performance_drift", self.subject, "window", drifted, evidence, summary, severity)

    def _detector_finding(self) -> Finding:
        reference = self.reference or {}
        recent = float(np.mean(self.recent_errors))
        # ADWIN keeps the values since the change it found: their first one dates the drift.
        width = int(getattr(self.detector, "width", len(self.recent_ts)) or len(self.recent_ts))
        evidence: dict[str, Scalar] = {
            "reference_error": reference.get("error"),
            "recent_error": recent,
            "recent_labels": len(self.recent_errors),
            "window_start_ts": self.recent_ts[-min(width, len(self.recent_ts))],
        }
        summary = f"{self.detector_name} saw the error rate rise from {reference.get('error', 0):.3f} to {recent:.3f}"
        return Finding("performance_drift", self.subject, self.detector_name, True, evidence, summary)

    def _cusum_finding(self, cusum: BernoulliCusumDetector) -> Finding:
        e = cusum.evidence()
        since = int(e["labels_since_change"] or 1)
        evidence: dict[str, Scalar] = e | {
            "recent_labels": since,
            # (the change point, as far back as the recent labels go)
            "window_start_ts": self.recent_ts[-min(since, len(self.recent_ts))],
        }
        recent = e["recent_error"]
        summary = (
            f"{self.subject} fell from {1 - float(e['reference_error'] or 0):.3f} to "
            f"{1 - float(recent if recent is not None else 0):.3f} over the last {since} labels "
            f"(Bernoulli CUSUM, error odds x{e['odds_ratio']})"
        )
        return Finding("performance_drift", self.subject, cusum.name, True, evidence, summary)

    def _segment_findings(self, window: list[Joined], errors: np.ndarray) -> list[Finding]:
        if self.task != "classification":
            return []
        groups: dict[tuple[str, str], list[int]] = {}
        for i, item in enumerate(window):
            for field, value in item.segment:
                if not self.config.segments or field in self.config.segments:
                    groups.setdefault((field, value), []).append(i)
        per_field: dict[str, int] = {}
        for field, _ in groups:
            per_field[field] = per_field.get(field, 0) + 1
        tested = [
            (key, idx)
            for key, idx in sorted(groups.items())
            if len(idx) >= self.config.segment_min_labels
            and len(window) - len(idx) >= self.config.segment_min_labels
            and per_field[key[0]] <= self.config.segment_max_values
        ]
        if not tested:
            return []
        stats = []
        for _, idx in tested:
            mask = np.zeros(len(window), dtype=bool)
            mask[idx] = True
            segment_error, rest_error = float(errors[mask].mean()), float(errors[~mask].mean())
            p_value = two_proportion_z(rest_error, int((~mask).sum()), segment_error, int(mask.sum()))
            stats.append((segment_error, rest_error, p_value, int(mask.sum())))
        reject = benjamini_hochberg(np.array([s[2] for s in stats]), self.config.fdr_q)
        findings = []
        for ((field, value), _), (seg_err, rest_err, p_value, n), rejected in zip(tested, stats, reject, strict=True):
            gap = seg_err - rest_err
            drifted = bool(rejected) and gap >= self.config.segment_accuracy_gap
            evidence: dict[str, Scalar] = {
                "segment_accuracy": 1 - seg_err,
                "rest_accuracy": 1 - rest_err,
                "gap": gap,
                "p_value": p_value,
                "segment_labels": n,
            }
            summary = f"accuracy of segment {field}={value} is {1 - seg_err:.3f} against {1 - rest_err:.3f} elsewhere"
            findings.append(
                Finding("segment_performance", f"{field}={value}", "two_proportion_z", drifted, evidence, summary)
            )
        return findings

    # -- state -----------------------------------------------------------------------------------

    def state(self) -> State:
        return {
            "task": self.task,
            "positive_class": self.positive_class,
            "config": self.config.model_dump(mode="json"),
            "reference": None if self.reference is None else {k: pack_float(v) for k, v in self.reference.items()},
            "window": [j.state() for j in self.window],
            "metrics": {k: None if v is None else pack_float(v) for k, v in self.metrics.items()},
            "detector": None if self.detector is None else _river_state(self.detector),
            "cusum": None if self.cusum is None else self.cusum.state(),
            "improvement": None if self.improvement is None else self.improvement.state(),
            "retake": None if self.retake is None else pack_array(self.retake),
            "recent_errors": pack_array(list(self.recent_errors)),
            "recent_ts": pack_array(list(self.recent_ts)),
        }

    @classmethod
    def from_state(cls, state: StateReader) -> PerformanceMonitor:
        task = state.text("task")
        if task not in ("classification", "regression"):
            raise StateError(f"{state.where}.task: expected classification or regression")
        config = model_config_from_state(state, "config")
        monitor = cls(
            "classification" if task == "classification" else "regression",
            state.optional_text("positive_class"),
            config,
        )
        reference = state.optional_child("reference")
        if reference is not None:
            monitor.reference = {key: reference.number(key) for key in ("error", "std", "n")}
        monitor.window = [Joined.from_state(item) for item in state.children("window")]
        monitor.window_errors = [error for error in map(monitor._error, monitor.window) if error is not None]
        metrics = state.child("metrics")
        monitor.metrics = {key: metrics.optional_number(key) for key in metrics.data}
        detector = state.optional_child("detector")
        fresh = monitor.detector
        restored = None
        if detector is not None:
            from driftwarden.core.river_adapter import river_from_state  # (River only when a River detector ran)

            restored = river_from_state(detector)
        if type(restored) is not type(fresh):
            raise StateError(f"{state.where}.detector: not the detector the config names")
        monitor.detector = restored  # (of the type just checked)
        cusums = [state.optional_child(key) for key in ("cusum", "improvement")]
        expected = monitor.detector_name_used == "bernoulli_cusum" and reference is not None
        if any((cusum is not None) != expected for cusum in cusums):
            raise StateError(f"{state.where}.cusum: error-rate CUSUMs exactly when the config names them and "
                             "the reference is set")  # fmt: skip
        monitor.cusum, monitor.improvement = [
            None if c is None else BernoulliCusumDetector.from_state(c) for c in cusums
        ]
        retake = state.raw("retake")
        monitor.retake = None if retake is None else state.array("retake").tolist()
        if monitor.retake is not None and (not expected or len(monitor.retake) >= config.label_window):
            raise StateError(f"{state.where}.retake: a reference being re-taken needs the CUSUMs and a short run")
        monitor.recent_errors.extend(state.array("recent_errors").tolist())
        monitor.recent_ts.extend(state.array("recent_ts").tolist())
        return monitor
