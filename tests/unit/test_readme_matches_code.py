"""The README quotes the code: setting defaults, config defaults, option defaults and command lines."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from test_deployment_files import parse_strictly
from typer.main import get_command

from driftwarden.cli import cli
from driftwarden.core.config import ModelMonitorConfig, MonitoringConfig
from driftwarden.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
FIELDS = Settings.model_fields


def same(quoted: str, value: Any) -> bool:
    """A quoted default (``5,000``, ``6``, ``unset``) against the code's value."""
    if quoted == "unset":
        return value is None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(quoted.replace(",", "")) == float(value)
    return quoted == str(value)


def variables(cell: str) -> list[str]:
    """``DRIFTWARDEN_A_B`` / ``_C`` -> the setting names: a suffix replaces the first name's last words."""
    first, *suffixes = re.findall(r"`(DRIFTWARDEN)?_?([A-Z_]+)`", cell)
    words = first[1].lower().split("_")
    names = ["_".join(words)]
    for _, suffix in suffixes:
        tail = suffix.lower()
        candidates = ["_".join([*words[:cut], tail]) for cut in range(len(words) - 1, -1, -1)]
        names.append(next((c for c in candidates if c in FIELDS), f"<no setting for _{suffix}>"))
    return names


def environment_table() -> list[tuple[list[str], list[str]]]:
    section = README.split("Environment variables (`DRIFTWARDEN_*`", 1)[1].split("\n\n", 2)[1]
    rows = []
    for line in section.splitlines()[2:]:
        name_cell, default_cell = line.split(" | ")[:2]
        defaults = [d.strip().strip("`") for d in default_cell.split(" / ")]
        rows.append((variables(name_cell), defaults))
    return rows


def test_the_environment_table_names_real_settings_with_their_defaults():
    rows = environment_table()
    assert len(rows) >= 20
    for names, defaults in rows:
        assert all(name in FIELDS for name in names), names
        quoted = defaults * len(names) if len(defaults) == 1 else defaults
        assert len(quoted) == len(names), (names, defaults)
        for name, default in zip(names, quoted, strict=True):
            assert same(default, FIELDS[name].default), f"README says {name} defaults to {default}"


def test_every_setting_is_documented():
    documented = {name for names, _ in environment_table() for name in names}
    elsewhere = {"serving_token"}  # in the serving section, with `--token`
    assert set(FIELDS) - documented - elsewhere == set()
    assert all(f"DRIFTWARDEN_{name.upper()}" in README for name in elsewhere)


def config_default(dotted: str) -> Any:
    value: Any = ModelMonitorConfig()
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def test_config_defaults_quoted_in_the_text_are_the_code_defaults():
    quoted = re.findall(r"`([a-z_]+(?:\.[a-z_]+)*)` \(([\d,.]+)\)", README)
    assert {"reference_size", "retrain.min_examples"} <= {name for name, _ in quoted}
    for name, value in quoted:
        assert same(value, config_default(name)), f"README says {name} defaults to {value}"


def option_defaults() -> dict[str, set[str]]:
    """Every option of every command: its name -> the defaults it has (as text)."""
    found: dict[str, set[str]] = {}

    def walk(command: Any) -> None:
        for param in command.params:
            if param.param_type_name == "option":
                for opt in param.opts:
                    found.setdefault(opt, set()).add(str(param.default))
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(get_command(cli))
    return found


def test_option_defaults_quoted_in_the_text_are_the_code_defaults():
    defaults = option_defaults()
    quoted = re.findall(r"`(--[a-z-]+)` \(([\d.]+)\)|`(--[a-z-]+) ([\d.]+)`", README)
    pairs = [(a or c, b or d) for a, b, c, d in quoted]
    assert {"--promotion-margin", "--max-batch-rows", "--max-wait-ms"} <= {name for name, _ in pairs}
    for name, value in pairs:
        assert any(same(value, float(d)) for d in defaults[name] if re.fullmatch(r"[\d.]+", d)), (name, value)


def command_lines() -> list[str]:
    """Every ``driftwarden ...`` line of the README's shell blocks and command table (comments cut)."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("driftwarden "):
                lines.append(line.split("  #")[0].strip())
    table = README.split("## Command line", 1)[1].split("\n\n", 2)[1]
    for cell in re.findall(r"^\| `(driftwarden [^`]*)`", table, flags=re.M):
        lines.append(cell)
    return lines


@pytest.mark.parametrize("line", command_lines())
def test_readme_command_lines_parse_with_the_real_cli(line):
    words = shlex.split(re.sub(r"\[([^\]]*)\]", r"\1", line.replace(" ...", "")))[1:]  # optional parts included
    words = [w for w in words if w != "|" and not w.startswith("|")]
    parse_strictly(get_command(cli), words)


def test_the_readme_toml_example_is_a_valid_config():
    (block,) = re.findall(r"```toml\n(.*?)```", README, flags=re.S)
    config = MonitoringConfig.from_toml(block, "README.md")
    assert config.defaults.window_size == ModelMonitorConfig().window_size  # it quotes the defaults
    assert config.defaults.false_alarms_per_million == ModelMonitorConfig().false_alarms_per_million
    assert config.for_model("fraud").retrain.min_drifted_features == 2
