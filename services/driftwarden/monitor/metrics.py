"""Prometheus metrics of the monitor worker (served on ``/metrics`` by ``driftwarden monitor``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_PROCESSED = Gauge(
    "driftwarden_events_processed",
    "Prediction events validated and fed to the detectors (cumulative).",
    ["model_id"],
)
DUPLICATE_EVENTS = Gauge(
    "driftwarden_duplicate_events",
    "Predictions dropped before detectors and joins: their event_id was among the model's last "
    "dedupe_horizon distinct ids (cumulative).",
    ["model_id"],
)
EVENTS_DEAD_LETTERED = Counter(
    "driftwarden_events_dead_lettered", "Inputs written to the dead-letter topic.", ["source_topic"]
)
ALERTS_FIRED = Counter(
    "driftwarden_alerts", "Alert events published (firing and resolved).", ["model_id", "kind", "severity"]
)
RETRAIN_COMMANDS = Counter("driftwarden_retrain_commands", "Retrain commands published.", ["model_id"])
DRIFT_STATISTIC = Gauge(
    "driftwarden_drift_statistic",
    "Latest window statistic per subject (normed Wasserstein, JS distance, Mahalanobis distance, rates, ...).",
    ["model_id", "kind", "subject", "statistic"],
)
CONSUMER_LAG = Gauge("driftwarden_consumer_lag", "Messages behind the high-water mark.", ["topic", "partition"])
PENDING_JOINS = Gauge(
    "driftwarden_pending_label_joins", "Predictions or labels waiting for their match.", ["model_id", "side"]
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
