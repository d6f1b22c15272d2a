"""Prometheus metrics of the monitor worker (served on ``/metrics`` by ``driftwarden monitor``).

Conventions (https://prometheus.io/docs/practices/naming/): counts are counters (``_total``), units
are base units (seconds, bytes, ratios 0..1), and one metric is one statistic family, labelled by
``model_id``, ``model_version`` and, where it has one, the detector's ``kind`` and ``subject`` (a
feature, ``score``/``prediction`` or ``numeric_features``). A worker exports only the models of the
partitions it owns: :class:`ModelSeries` removes every series of a model when its partition is
revoked, and the gauges of a version when the model moves on to a newer one. The cardinality bound
per model is in docs/operations.md ("Metrics").

>>> from prometheus_client import REGISTRY
>>> labels = {"model_id": "fraud", "model_version": "2", "kind": "data_drift", "subject": "amount"}
>>> series = ModelSeries()
>>> series.sync("fraud", "2", {"data_drift": {"amount": {"psi": 0.4, "wasserstein_normed": 0.1}}}, set(), {})
>>> REGISTRY.get_sample_value("driftwarden_drift_psi", labels)
0.4
>>> series.sync("fraud", "3", {}, set(), {})  # v3 took over: v2's statistics are gone
>>> REGISTRY.get_sample_value("driftwarden_drift_psi", labels) is None
True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from driftwarden.core.monitor import ModelState

MODEL = ["model_id", "model_version"]
SUBJECT = [*MODEL, "kind", "subject"]

EVENTS_PROCESSED = Counter(
    "driftwarden_events_processed", "Prediction events validated and fed to the detectors.", MODEL
)
LABELS_RECEIVED = Counter("driftwarden_labels_received", "Label events validated and joined or kept.", ["model_id"])
DEAD_LETTERS = Counter(
    "driftwarden_dead_letters",
    "Inputs written to the dead-letter topic (model_id empty when the key names no model).",
    ["model_id", "source_topic"],
)
DUPLICATE_EVENTS = Counter(
    "driftwarden_duplicate_events",
    "Predictions dropped before detectors and joins: their event_id was among the model's last "
    "dedupe_horizon distinct ids.",
    ["model_id"],
)
ALERTS = Counter(
    "driftwarden_alerts", "Alert events published, firing and resolved.", [*MODEL, "kind", "severity", "state"]
)
RETRAIN_COMMANDS = Counter("driftwarden_retrain_commands", "Retrain commands published.", MODEL)
ALERT_FIRING = Gauge(
    "driftwarden_alert_firing", "1 while the monitor has this alert open; the series goes when it resolves.",
    [*SUBJECT, "severity"],
)  # fmt: skip

# One gauge per statistic family of the latest window; the statistic names are those of
# driftwarden.core.monitor.WINDOW_STATISTICS (data-quality rates go by their check's name).
DRIFT_PSI = Gauge("driftwarden_drift_psi", "Population stability index of the latest window.", SUBJECT)
DRIFT_P_VALUE = Gauge(
    "driftwarden_drift_p_value",
    "p-value of the latest window's test (KS for numeric, chi-squared for categorical, Hotelling T² for "
    "multivariate; before Benjamini-Hochberg).",
    SUBJECT,
)
DRIFT_WASSERSTEIN = Gauge(
    "driftwarden_drift_wasserstein_normed", "Wasserstein distance of the latest window, in reference σ.", SUBJECT
)
DRIFT_JS = Gauge("driftwarden_drift_js_distance", "Jensen-Shannon distance of the latest window (0..1).", SUBJECT)
DRIFT_MAHALANOBIS = Gauge(
    "driftwarden_drift_mahalanobis_distance", "Mahalanobis distance of the latest window's mean vector.", SUBJECT
)
DATA_QUALITY = Gauge(
    "driftwarden_data_quality_ratio",
    "Share of the latest window failing a data-quality check (subject <feature>/<check>).",
    [*MODEL, "subject"],
)
ESTIMATED_ACCURACY = Gauge(
    "driftwarden_estimated_accuracy_ratio", "Accuracy estimated from the scores (CBPE), no labels needed.", MODEL
)
ACCURACY = Gauge("driftwarden_accuracy_ratio", "Rolling accuracy on joined labels.", MODEL)
LATENCY_P99 = Gauge("driftwarden_prediction_latency_p99_seconds", "p99 latency the events report.", MODEL)
COST = Gauge("driftwarden_prediction_cost_per_1k_requests", "Cost of 1,000 predictions the events report.", MODEL)
PENDING_JOINS = Gauge(
    "driftwarden_pending_label_joins", "Predictions or labels waiting for their match.", ["model_id", "side"]
)

CONSUMER_LAG = Gauge("driftwarden_consumer_lag", "Messages behind the high-water mark.", ["topic", "partition"])
FETCH_BUFFER = Gauge(
    "driftwarden_fetch_buffer_bytes", "Bytes of fetched messages the worker holds that its agent has not processed yet."
)
CHECKPOINT_BYTES = Gauge("driftwarden_checkpoint_bytes", "Size of the latest state checkpoint of a partition.")
BATCH_SECONDS = Histogram(
    "driftwarden_batch_seconds",
    "Time to process one batch of Kafka messages, decode to publish.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CHECKPOINTS_REFUSED = Counter(
    "driftwarden_checkpoints_refused",
    "Checkpoints refused (never restored or saved): malformed, version, checksum, identity, foreign_log, payload.",
    ["reason"],
)
OFFSET_GAPS = Counter(
    "driftwarden_offset_gaps", "Times an input partition skipped offsets that never arrived.", ["topic"]
)
SHARD_SUMMARIES = Counter(
    "driftwarden_shard_summaries",
    "Window summaries of a sharded model its owner did not merge into their own bucket: outcome duplicate "
    "(a replay, dropped), late (its bucket was decided without it: merged into the next undecided one), "
    "skipped (refused or in a failed batch: dead-lettered) or missing (a gap in its stream given up).",
    [*MODEL, "outcome"],
)

#: Subject-level statistic -> its gauge (labels model_id, model_version, kind, subject).
SUBJECT_STATISTICS: dict[str, Gauge] = {
    "psi": DRIFT_PSI,
    "p_value": DRIFT_P_VALUE,
    "wasserstein_normed": DRIFT_WASSERSTEIN,
    "js_distance": DRIFT_JS,
    "mahalanobis_distance": DRIFT_MAHALANOBIS,
}

#: kind -> subject -> statistic -> value (one model version's latest window).
Statistics = Mapping[str, Mapping[str, Mapping[str, float]]]
#: (kind, subject, severity) of each open alert.
OpenAlerts = AbstractSet[tuple[str, str, str]]


def window_gauges(version: str, model_id: str, statistics: Statistics) -> dict[tuple[Gauge, tuple[str, ...]], float]:
    """The gauge series of one version's latest window statistics."""
    values: dict[tuple[Gauge, tuple[str, ...]], float] = {}
    model = (model_id, version)
    for kind, subjects in statistics.items():
        for subject, named in subjects.items():
            for statistic, value in named.items():
                gauge = SUBJECT_STATISTICS.get(statistic)
                if gauge is not None:
                    values[gauge, (*model, kind, subject)] = value
                elif kind == "data_quality":
                    values[DATA_QUALITY, (*model, subject)] = value
                elif statistic == "estimated_accuracy":
                    values[ESTIMATED_ACCURACY, model] = value
                elif kind == "latency":
                    values[LATENCY_P99, model] = value / 1000.0  # the events report milliseconds
                elif kind == "cost":
                    values[COST, model] = value
    return values


Series = tuple[MetricWrapperBase, tuple[str, ...]]


@dataclass
class ModelSeries:
    """Every series each model exports (counters included), so that a model's series can go at once."""

    gauges: dict[str, set[Series]] = field(default_factory=dict)
    counters: dict[str, set[Series]] = field(default_factory=dict)
    totals: dict[Series, float] = field(default_factory=dict)

    def count(self, counter: Counter, labels: tuple[str, ...], n: float = 1.0) -> None:
        """Increase a counter whose first label is the model id."""
        counter.labels(*labels).inc(n)
        self.counters.setdefault(labels[0], set()).add((counter, labels))

    def advance(self, counter: Counter, labels: tuple[str, ...], total: float) -> None:
        """Bring a counter whose first label is the model id up to the core's cumulative ``total``."""
        seen = self.totals.get((counter, labels), 0.0)
        if total > seen:
            self.count(counter, labels, total - seen)
            self.totals[counter, labels] = total

    def sync(
        self, model_id: str, version: str, statistics: Statistics, open_alerts: OpenAlerts, rolling: Mapping[str, float]
    ) -> None:
        """Set the model's gauges to the latest version's state; remove series no longer in it (resolved
        alerts, statistics of a retired version)."""
        values = window_gauges(version, model_id, statistics)
        for kind, subject, severity in open_alerts:
            values[ALERT_FIRING, (model_id, version, kind, subject, severity)] = 1.0
        if (accuracy := rolling.get("accuracy")) is not None:
            values[ACCURACY, (model_id, version)] = accuracy
        for (gauge, labels), value in values.items():
            gauge.labels(*labels).set(value)
        self._remove(self.gauges.get(model_id, set()) - values.keys())
        self.gauges[model_id] = set(values)

    def pending_joins(self, model_id: str, predictions: int, labels: int) -> None:
        self._set(PENDING_JOINS, (model_id, "predictions"), predictions)
        self._set(PENDING_JOINS, (model_id, "labels"), labels)

    def _set(self, gauge: Gauge, labels: tuple[str, ...], value: float) -> None:
        gauge.labels(*labels).set(value)
        self.counters.setdefault(labels[0], set()).add((gauge, labels))  # kept until the model is forgotten

    def forget(self, model_ids: Iterable[str]) -> None:
        """Remove every series of these models (their partition went to another worker)."""
        for model_id in model_ids:
            gone = self.gauges.pop(model_id, set()) | self.counters.pop(model_id, set())
            self._remove(gone)
            for series in gone:
                self.totals.pop(series, None)

    @staticmethod
    def _remove(series: Iterable[Series]) -> None:
        for metric, labels in series:
            metric.remove(*labels)


def export_model(series: ModelSeries, model_id: str, state: ModelState) -> None:
    """Export one model's gauges from the core's state: its latest version's window statistics, open
    alerts and rolling accuracy, and its label joins."""
    counts = state.joiner.counts()
    series.pending_joins(model_id, counts["pending_predictions"], counts["pending_labels"])
    series.advance(DUPLICATE_EVENTS, (model_id,), state.counters.duplicates)
    version = state.counters.latest_version
    monitor = state.versions.get(version) if version else None
    if version is None or monitor is None:
        return
    statistics: dict[str, dict[str, dict[str, float]]] = {}
    for (kind, subject, statistic), value in monitor.latest_window.items():
        statistics.setdefault(kind, {}).setdefault(subject, {})[statistic] = value
    open_alerts = {(alert.kind, alert.subject, alert.severity) for alert in monitor.book.open.values()}
    rolling = monitor.performance.metrics if monitor.performance is not None else {}
    series.sync(model_id, version, statistics, open_alerts, {k: v for k, v in rolling.items() if v is not None})
