"""docker-compose.yml cannot run here (no Docker engine), so check it as far as possible without one."""

from __future__ import annotations

import json
import os
import re
import tomllib
from importlib.util import find_spec
from pathlib import Path

import pytest
from jsonschema.validators import validator_for
from ruamel.yaml import YAML
from typer import TyperException
from typer.core import TyperGroup
from typer.main import get_command

from driftwarden.cli import cli
from driftwarden.kafka.clients import client_options
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


# The services built from the Dockerfile; every other one runs a pinned third-party image.
DRIFTWARDEN_SERVICES = sorted(name for name, service in COMPOSE["services"].items() if "build" in service)
# The Dockerfile's EXTRAS per service: each installs what it needs, the monitor image nothing more.
EXPECTED_EXTRAS = {"topics": "", "monitor": "", "notify": "", "trainer": "trainer", "serving": "serving", "ui": "ui"}


def test_every_service_is_built_here_or_runs_a_pinned_image():
    assert set(DRIFTWARDEN_SERVICES) == set(EXPECTED_EXTRAS)
    for name, service in COMPOSE["services"].items():
        if name not in EXPECTED_EXTRAS:
            assert re.fullmatch(r"[a-z]+/[a-z-]+:v?\d[\w.]*", service["image"]), name


def parse_strictly(command, words: list[str], name: str = "driftwarden", parent=None):
    """Parse a command line as the CLI would (every option checked) without running it; the leaf context."""
    ctx = command.make_context(name, list(words), parent=parent)
    if not isinstance(command, TyperGroup):
        return ctx
    sub_name, sub, rest = command.resolve_command(ctx, list(words))
    assert sub_name is not None and sub is not None
    return parse_strictly(sub, rest, sub_name, ctx)


@pytest.mark.parametrize("service", DRIFTWARDEN_SERVICES)
def test_compose_commands_are_real_cli_commands(service):
    words = COMPOSE["services"][service]["command"]
    ctx = parse_strictly(get_command(cli), words)
    assert ctx.info_name == words[1 if service == "topics" else 0]


@pytest.mark.parametrize(
    ("words", "error"),
    [
        (["monitor", "--metrics-prot", "9464"], "No such option: --metrics-prot"),
        (["monitr", "--metrics-port", "9464"], "No such command 'monitr'"),
        (["topics", "creat"], "No such command 'creat'"),
        (["serve", "--port", "eighty"], "Invalid value for '--port'"),
    ],
)
def test_a_typo_in_a_compose_command_fails(words, error):
    with pytest.raises(TyperException) as raised:
        parse_strictly(get_command(cli), words)
    assert error in raised.value.format_message()


@pytest.mark.parametrize("service", DRIFTWARDEN_SERVICES)
def test_every_service_keeps_the_shared_environment(service):
    shared = COMPOSE["x-driftwarden-env"]
    environment = COMPOSE["services"][service]["environment"]
    assert environment.items() >= shared.items()
    assert environment["DRIFTWARDEN_SESSION_TIMEOUT_S"] == "30"  # real Kafka, not the embedded broker's 6 s


def effective_environment(service: str) -> dict[str, str]:
    """A service's environment as Compose hands it over, a required ``${VAR:?message}`` set by the user."""
    return {
        name: re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: f"<{m[1]}>", str(value))
        for name, value in COMPOSE["services"][service]["environment"].items()
    }


@pytest.mark.parametrize("service", DRIFTWARDEN_SERVICES)
def test_every_service_effective_environment_is_valid_settings_for_the_compose_cluster(service, monkeypatch):
    for name in [n for n in os.environ if n.startswith("DRIFTWARDEN_")]:
        monkeypatch.delenv(name)
    for name, value in effective_environment(service).items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # what the service itself reads; a bad value would raise here
    brokers = [name for name, s in COMPOSE["services"].items() if s.get("image", "").startswith("apache/kafka")]
    kafka = COMPOSE["services"]["kafka"]["environment"]
    assert len(brokers) == len(str(kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"]).split(",")) == 1
    assert settings.kafka_bootstrap == kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")[0].removeprefix("PLAINTEXT://")
    assert settings.topic_replication_factor <= len(brokers)  # `topics create` would fail otherwise
    assert settings.topic_min_insync_replicas <= settings.topic_replication_factor
    assert (settings.session_timeout_s, settings.heartbeat_interval_s) == (30, 3)  # real Kafka, not 6 s / 1 s
    assert settings.partitions == 8 and settings.auto_offset_reset == "earliest"
    assert client_options(settings)["bootstrap_servers"] == "kafka:9092"
    if service == "serving":
        assert settings.serving_token is not None
        assert settings.serving_token.get_secret_value() == "<DRIFTWARDEN_SERVING_TOKEN>"


def test_serving_adds_its_token_to_the_shared_environment():
    environment = COMPOSE["services"]["serving"]["environment"]
    assert set(environment) - set(COMPOSE["x-driftwarden-env"]) == {"DRIFTWARDEN_SERVING_TOKEN"}


@pytest.mark.parametrize("service", DRIFTWARDEN_SERVICES)
def test_each_service_image_installs_the_extras_it_needs(service):
    build = COMPOSE["services"][service]["build"]
    extras = build["args"]["EXTRAS"]
    assert extras == EXPECTED_EXTRAS[service]
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras == "" or extras in declared


def test_an_image_name_always_means_the_same_install_kind():
    services = [COMPOSE["services"][name] for name in DRIFTWARDEN_SERVICES]
    kinds = {(service["image"], service["build"]["args"]["EXTRAS"]) for service in services}
    assert len(kinds) == len({image for image, _ in kinds}) == len(set(EXPECTED_EXTRAS.values()))


def test_dockerfile_installs_the_extras_named_by_its_build_argument():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG EXTRAS=\"\"$", dockerfile, re.MULTILINE)
    install = re.search(r"^RUN pip install (.*)$", dockerfile, re.MULTILINE)
    assert install and '".${EXTRAS:+[$EXTRAS]}"' in install.group(1)
