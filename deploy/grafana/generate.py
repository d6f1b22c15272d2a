"""Build the Grafana dashboards in deploy/grafana/dashboards/ (run: python deploy/grafana/generate.py).

Every panel is one or more PromQL queries on metrics the services export today; the integration test
``tests/integration/test_oncall.py`` runs each query on a real Prometheus after a drifting stream and
requires data. ``$model_id`` is a multi-value variable (regex match), ``$__rate_interval`` Grafana's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
MODEL = 'model_id=~"$model_id"'

Panel = tuple[str, str, list[tuple[str, str]]]  # title, unit, [(expr, legend)]

OVERVIEW: list[Panel] = [
    ("Events processed per second", "ops",
     [("sum by (model_id) (rate(driftwarden_events_processed_total[$__rate_interval]))", "{{model_id}}")]),
    ("Events processed in the last hour", "short",
     [("sum by (model_id) (increase(driftwarden_events_processed_total[1h]))", "{{model_id}}")]),
    ("Drift alerts open (monitor)", "short",
     [("sum by (model_id, kind) (driftwarden_alert_firing)", "{{model_id}} {{kind}}")]),
    ("Drift alerts raised in the last hour", "short",
     [("sum by (model_id, kind) (increase(driftwarden_alerts_total[1h]))", "{{model_id}} {{kind}}")]),
    ("Alerts open (notify)", "short", [("sum(driftwarden_notify_open_alerts)", "open")]),
    ("Dead letters per second", "ops",
     [("sum by (source_topic) (rate(driftwarden_dead_letters_total[$__rate_interval]))", "{{source_topic}}")]),
    ("Undeliverable alerts in the last hour", "short",
     [("sum by (receiver) (increase(driftwarden_notify_dead_lettered_total[1h]))", "{{receiver}}")]),
    ("Alert deliveries in the last hour", "short",
     [("sum by (receiver, outcome) (increase(driftwarden_notify_deliveries_total[1h]))", "{{receiver}} {{outcome}}")]),
    ("Monitor consumer lag", "short", [("max by (topic) (driftwarden_consumer_lag)", "{{topic}}")]),
    ("Monitor batch time p99", "s",
     [("histogram_quantile(0.99, sum by (le) (rate(driftwarden_batch_seconds_bucket[$__rate_interval])))", "p99")]),
    ("Services up", "short", [('up{job=~"driftwarden-.*"}', "{{job}} {{instance}}")]),
    ("Operational alerts (Prometheus rules)", "short",
     [('count by (alertname, alertstate) (ALERTS{alertname=~"Driftwarden.*"})', "{{alertname}} {{alertstate}}")]),
]  # fmt: skip


def family(metric: str, extra: str = "") -> str:
    """One statistic family of the latest window, for the chosen models."""
    return f"{metric}{{{MODEL}{extra}}}"


FEATURE = "{{model_id}} v{{model_version}} {{subject}}"
MODEL_PANELS: list[Panel] = [
    ("Numeric feature drift (normed Wasserstein, per window)", "short",
     [(family("driftwarden_drift_wasserstein_normed", ', kind="data_drift"'), FEATURE)]),
    ("Numeric feature drift (PSI, per window)", "short", [(family("driftwarden_drift_psi", ', kind="data_drift"'),
                                                           FEATURE)]),
    ("Feature drift test p-values (KS numeric, chi-squared categorical)", "short",
     [(family("driftwarden_drift_p_value", ', kind="data_drift"'), FEATURE)]),
    ("Categorical feature drift (Jensen-Shannon distance)", "short", [(family("driftwarden_drift_js_distance"),
                                                                       FEATURE)]),
    ("Prediction drift (normed Wasserstein)", "short",
     [(family("driftwarden_drift_wasserstein_normed", ', kind="prediction_drift"'), FEATURE)]),
    ("Multivariate drift (Mahalanobis distance)", "short",
     [(family("driftwarden_drift_mahalanobis_distance"), "{{model_id}} v{{model_version}}")]),
    ("Data quality (share of the window)", "percentunit", [(family("driftwarden_data_quality_ratio"), FEATURE)]),
    ("Accuracy: labels and estimated from scores (no labels)", "percentunit",
     [(family("driftwarden_accuracy_ratio"), "{{model_id}} v{{model_version}} labels"),
      (family("driftwarden_estimated_accuracy_ratio"), "{{model_id}} v{{model_version}} estimated")]),
    ("Open alerts", "short", [(family("driftwarden_alert_firing"), "{{model_id}} {{kind}} {{subject}} {{severity}}")]),
    ("Alerts raised in the last hour", "short",
     [(f"sum by (model_id, kind, severity) (increase(driftwarden_alerts_total{{{MODEL}, state=\"firing\"}}[1h]))",
       "{{model_id}} {{kind}} {{severity}}")]),
    ("Throughput", "ops",
     [(f"sum by (model_id, model_version) (rate(driftwarden_events_processed_total{{{MODEL}}}[$__rate_interval]))",
       "{{model_id}} v{{model_version}}")]),
    ("Dead letters per second", "ops",
     [(f"sum by (model_id, source_topic) (rate(driftwarden_dead_letters_total{{{MODEL}}}[$__rate_interval]))",
       "{{model_id}} {{source_topic}}")]),
    ("Label joins waiting", "short", [(f"driftwarden_pending_label_joins{{{MODEL}}}", "{{model_id}} {{side}}")]),
    ("Prediction latency p99 (from events)", "s", [(family("driftwarden_prediction_latency_p99_seconds"),
                                                    "{{model_id}}")]),
    ("Cost per 1,000 predictions", "short", [(family("driftwarden_prediction_cost_per_1k_requests"), "{{model_id}}")]),
    ("Monitor consumer lag", "short", [("max by (topic) (driftwarden_consumer_lag)", "{{topic}}")]),
    ("Retrain commands in the last hour", "short",
     [(f"sum by (model_id) (increase(driftwarden_retrain_commands_total{{{MODEL}}}[1h]))", "{{model_id}}")]),
    ("Trainer verdicts in the last hour", "short",
     [(f"sum by (model_id, outcome) (increase(driftwarden_trainer_runs_total{{{MODEL}}}[1h]))",
       "{{model_id}} {{outcome}}")]),
    ("Retrain duration p90", "s",
     [("histogram_quantile(0.9, sum by (le) (rate(driftwarden_trainer_run_seconds_bucket[1h])))", "p90")]),
]  # fmt: skip


def panel(number: int, title: str, unit: str, queries: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "id": number,
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 12 * ((number - 1) % 2), "y": 8 * ((number - 1) // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "right"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(queries)
        ],
    }


def dashboard(uid: str, title: str, panels: list[Panel], with_model: bool) -> dict[str, Any]:
    variables: list[dict[str, Any]] = [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"}
    ]
    if with_model:
        variables.append({
            "name": "model_id", "label": "Model", "type": "query", "datasource": DATASOURCE,
            "query": {"query": "label_values(driftwarden_events_processed_total, model_id)", "refId": "models"},
            "definition": "label_values(driftwarden_events_processed_total, model_id)",
            "multi": True, "includeAll": True, "refresh": 2, "sort": 1,
        })  # fmt: skip
    return {
        "uid": uid,
        "title": title,
        "tags": ["driftwarden"],
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables},
        "panels": [panel(i, *p) for i, p in enumerate(panels, 1)],
    }


DASHBOARDS = {
    "overview.json": dashboard("driftwarden-overview", "driftwarden: all models", OVERVIEW, with_model=False),
    "model.json": dashboard("driftwarden-model", "driftwarden: one model", MODEL_PANELS, with_model=True),
}


def render(content: dict[str, Any]) -> str:
    return json.dumps(content, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    for name, content in DASHBOARDS.items():
        (HERE / "dashboards" / name).write_text(render(content))
    sys.stdout.write(f"wrote {', '.join(DASHBOARDS)} to {HERE / 'dashboards'}\n")


if __name__ == "__main__":
    main()
