"""docker-compose.yml cannot run here (no Docker engine), so check it as far as possible without one."""

from __future__ import annotations

import json
import re
from importlib.util import find_spec
from pathlib import Path

import pytest
from jsonschema.validators import validator_for
from ruamel.yaml import YAML

from driftwarden.cli import cli
from driftwarden.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())


def test_compose_file_follows_the_compose_specification():
    # The Compose Specification's schema, as vendored by check-jsonschema (located, not imported).
    package = Path(find_spec("check_jsonschema").origin).parent
    schema = json.loads((package / "builtin_schemas" / "vendor" / "compose-spec.json").read_text())
    errors = sorted(validator_for(schema)(schema).iter_errors(COMPOSE), key=str)
    assert errors == []


def test_compose_has_kafka_in_kraft_mode_prometheus_and_grafana():
    services = COMPOSE["services"]
    assert {"kafka", "monitor", "trainer", "serving", "prometheus", "grafana"} <= set(services)
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]


def test_files_mounted_or_built_by_compose_exist():
    assert (ROOT / "Dockerfile").is_file()
    for service in COMPOSE["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source


def test_driftwarden_settings_in_compose_are_real_settings():
    known = set(Settings().to_env()) | {f"DRIFTWARDEN_{name.upper()}" for name in Settings.model_fields}
    used = set(re.findall(r"DRIFTWARDEN_[A-Z_]+", (ROOT / "docker-compose.yml").read_text()))
    used |= set(re.findall(r"DRIFTWARDEN_[A-Z_]+", (ROOT / "Dockerfile").read_text()))
    assert used and used <= known


@pytest.mark.parametrize("service", ["topics", "monitor", "trainer", "serving"])
def test_compose_commands_are_real_cli_commands(service):
    from typer.main import get_command

    command = get_command(cli)
    words = COMPOSE["services"][service]["command"]
    ctx = command.make_context("driftwarden", list(words), resilient_parsing=True)
    assert command.resolve_command(ctx, list(words))[1] is not None
