"""Run the docstring examples of every driftwarden module (they are part of the docs).

Every module must show at least one example, or be listed in ``NO_EXAMPLES`` with the reason it has
nothing to show; a listed module that gains an example fails until it is taken off the list.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import driftwarden
import driftwarden_load

MODULES = sorted(
    [package.__name__ for package in (driftwarden, driftwarden_load)]
    + [
        m.name
        for package in (driftwarden, driftwarden_load)
        for m in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
        if not m.name.endswith("__main__")
    ]
)

PACKAGE_MARKER = "a package's __init__: a docstring only"
NEEDS_BROKER = "talks to a Kafka broker or a worker process: shown by the integration tests"
NEEDS_FILES = "works on processes, sockets or model files: shown by the integration tests"
BENCHMARK = "a benchmark: its results are in docs/benchmarks.md, its runs in tests/integration/test_bench.py"
# TEMPORARY: these modules are owned by the core and monitor work running in parallel; their owners
# give them examples (or a reason) when they land.
OWNED_ELSEWHERE = "owned by the core / monitor work"

# Modules with nothing to show in a docstring example, and why.
NO_EXAMPLES: dict[str, str] = {
    "driftwarden": PACKAGE_MARKER,
    "driftwarden_load": PACKAGE_MARKER,
    "driftwarden.bench": PACKAGE_MARKER,
    "driftwarden.core": PACKAGE_MARKER,
    "driftwarden.kafka": PACKAGE_MARKER,
    "driftwarden.monitor": PACKAGE_MARKER,
    "driftwarden.notify": PACKAGE_MARKER,
    "driftwarden.registry": PACKAGE_MARKER,
    "driftwarden.serving": PACKAGE_MARKER,
    "driftwarden.trainer": PACKAGE_MARKER,
    "driftwarden.ui": PACKAGE_MARKER,
    "driftwarden.bench.core": BENCHMARK,
    "driftwarden.bench.detection": BENCHMARK,
    "driftwarden.bench.detection_plots": BENCHMARK,
    "driftwarden.bench.empty_agent": BENCHMARK,
    "driftwarden.bench.loadtests": BENCHMARK,
    "driftwarden.bench.serving": BENCHMARK,
    "driftwarden.allocator": "sets the process's C allocator: shown by tests/unit/test_allocator.py in a subprocess",
    "driftwarden.demo": "the demo: run by tests/integration/test_demo.py",
    "driftwarden.errors": "one exception base class, nothing to compute",
    "driftwarden.kafka.broker": NEEDS_FILES,
    "driftwarden.kafka.reader": NEEDS_BROKER,
    "driftwarden.monitor.service": NEEDS_BROKER,
    "driftwarden.monitor.status": NEEDS_BROKER,
    "driftwarden.notify.service": NEEDS_BROKER,
    "driftwarden.core.performance": OWNED_ELSEWHERE,
    "driftwarden.processes": NEEDS_FILES,
    "driftwarden.serving.readiness": NEEDS_FILES,
    "driftwarden.serving.supervisor": "restarts asyncio tasks: shown by tests/unit/test_supervision.py",
    "driftwarden.trainer.service": NEEDS_BROKER,
    "driftwarden.trainer.workflow": NEEDS_FILES,
    "driftwarden.ui.server": "serves the page: shown by tests/integration/test_ui.py in a real browser",
}


def run_examples(module_name: str) -> doctest.TestResults:
    module = importlib.import_module(module_name)
    return doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)


@pytest.mark.parametrize("module_name", [m for m in MODULES if m not in NO_EXAMPLES])
def test_docstring_examples(module_name: str):
    result = run_examples(module_name)
    assert result.attempted >= 1, f"{module_name} has no docstring example (add one, or list it in NO_EXAMPLES)"
    assert result.failed == 0


@pytest.mark.parametrize("module_name", sorted(NO_EXAMPLES))
def test_modules_listed_without_examples_really_have_none(module_name: str):
    assert module_name in MODULES, f"{module_name} is listed in NO_EXAMPLES but does not exist"
    assert run_examples(module_name).attempted == 0, f"{module_name} has examples now: take it off NO_EXAMPLES"
