"""Prometheus metrics of the monitor worker (served on ``/metrics`` by ``driftwarden monitor``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVENTS_PROCESSED = Counter(
    "driftwarden_events_processed", "Prediction events validated and fed to the detectors.", ["model_id"]
)
EVENTS_DEAD_LETTERED = Counter(
    "driftwarden_events_dead_lettered", "Inputs written to the dead-letter topic.", ["source_topic"]
)
ALERTS_FIRED = Counter("driftwarden_alerts_fired", "Alerts published.", ["model_id", "kind", "severity"])
BATCH_SECONDS = Histogram(
    "driftwarden_batch_seconds",
    "Time to process one batch of Kafka messages, decode to publish.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
