"""The package layout the README promises: the map matches the tree, serving stays free of the trainer."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "services" / "driftwarden"
README = (ROOT / "README.md").read_text()
# An entry line of the map: names at indent 0 (from the repository root) or 2 (inside the last
# top-level entry), then two or more spaces and the description. Deeper lines continue a description.
ENTRY = re.compile(r"^(?P<indent> {0,2})(?P<names>\S+(?: \S+)*?)(?: {2,}.*)?$")


def development_map() -> list[Path]:
    """Every path the README's development map names, resolved against the repository."""
    section = README.split("## Development", 1)[1]
    block = section.split("```", 2)[1].strip("\n")
    paths: list[Path] = []
    parent = ROOT
    for line in block.splitlines():
        match = ENTRY.match(line)
        if match is None:
            continue
        base = ROOT if not match["indent"] else parent
        named = [base / name for name in match["names"].split(" ")]
        if not match["indent"]:
            parent = named[0]
        paths += named
    return paths


def test_every_path_in_the_development_map_exists():
    paths = development_map()
    assert len(paths) > 10
    missing = [str(p.relative_to(ROOT)) for p in paths if not p.exists()]
    assert missing == []


def test_every_package_and_top_level_module_is_in_the_development_map():
    listed = set(development_map())
    packages = {p.parent for p in PACKAGE.glob("*/__init__.py")}
    modules = {p for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    assert packages and modules
    assert sorted(str(p.relative_to(ROOT)) for p in (packages | modules) - listed) == []


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (imports inside functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_serving_never_imports_the_trainer_nor_scikit_learn():
    text = "\n".join(p.read_text() for p in sorted((PACKAGE / "serving").rglob("*.py")))
    assert "driftwarden.trainer" not in text  # the grep
    forbidden = ("driftwarden.trainer", "sklearn", "skl2onnx", "pandas")
    for directory in ("serving", "registry"):  # serving imports the registry
        for path in sorted((PACKAGE / directory).rglob("*.py")):
            bad = {m for m in imported_modules(path) for f in forbidden if m == f or m.startswith(f"{f}.")}
            assert bad == set(), f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_starting_the_cli_or_a_worker_imports_neither_river_nor_scikit_learn_nor_numba():
    # River (with the scikit-learn its datasets pull in) costs about a second of CPU at every start of a
    # worker or a CLI command; only a model whose label monitor runs a River detector imports it. numba
    # (~0.2 s) only once a streaming detector is fed (core/compiled.py).
    code = ("import sys, driftwarden.cli, driftwarden.monitor.service, driftwarden.core.monitor; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'river', 'sklearn', 'numba'}))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"
