"""The shipped on-call files: Prometheus config and rules, Alertmanager config, dashboards, notify config."""

from __future__ import annotations

import json
import runpy
import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from driftwarden.notify.config import NotifyConfig

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: `make test` installs Debian's prometheus and prometheus-alertmanager as root")
    return path


@pytest.mark.parametrize(
    ("args", "cwd"),
    [
        (["promtool", "check", "config", "prometheus.yml"], DEPLOY / "prometheus"),
        (["promtool", "check", "rules", *sorted(p.name for p in (DEPLOY / "prometheus/rules").glob("*.yml"))],
         DEPLOY / "prometheus/rules"),
        (["amtool", "check-config", "alertmanager.yml"], DEPLOY / "alertmanager"),
    ],
)  # fmt: skip
def test_promtool_and_amtool_accept_the_shipped_files(args, cwd):
    result = subprocess.run([tool(args[0]), *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_prometheus_config_loads_the_rule_files_and_sends_to_alertmanager():
    config = YAML(typ="safe").load((DEPLOY / "prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["rules/*.yml"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert {job["job_name"] for job in config["scrape_configs"]} >= {"driftwarden-monitor", "driftwarden-notify"}


def test_dashboards_are_what_the_generator_writes():
    generator = runpy.run_path(str(DEPLOY / "grafana/generate.py"))
    for name, content in generator["DASHBOARDS"].items():
        assert (DEPLOY / "grafana/dashboards" / name).read_text() == generator["render"](content), (
            f"{name} is stale: run python deploy/grafana/generate.py"
        )


def test_every_dashboard_panel_has_promql_and_a_unique_id():
    for path in (DEPLOY / "grafana/dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text())
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)) and ids, path
        for panel in dashboard["panels"]:
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]


def test_compose_runs_alertmanager_notify_and_mounts_rules_and_dashboards():
    services = COMPOSE["services"]
    assert {"alertmanager", "notify"} <= set(services)
    mounts = [v.split(":")[0] for s in services.values() for v in s.get("volumes", [])]
    for source in ("./deploy/prometheus/rules", "./deploy/grafana/dashboards", "./deploy/alertmanager/alertmanager.yml",
                   "./deploy/notify/notify.toml"):  # fmt: skip
        assert source in mounts and (ROOT / source).exists()


# Strict parsing of every compose command: tests/unit/test_deployment_files.py.
DRIFTWARDEN_SERVICES = sorted(name for name, service in COMPOSE["services"].items() if "build" in service)


def test_compose_notify_uses_the_shipped_config():
    assert "notify" in DRIFTWARDEN_SERVICES
    words = COMPOSE["services"]["notify"]["command"]
    assert words[words.index("--config") + 1] == "/etc/driftwarden/notify.toml"
    config = NotifyConfig.from_file(DEPLOY / "notify/notify.toml")
    assert [r.type for r in config.receivers] == ["alertmanager"]
    assert str(config.receivers[0].url).startswith("http://alertmanager:9093")
