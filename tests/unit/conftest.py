"""The unit tests' order and BLAS threads, for ``make test``'s run over every core (pytest-xdist).

Each xdist worker is handed the next test in collection order when it is free: a test of a minute
collected last would run alone at the end, so the seconds-long ones (marked ``slow``) come first.
OpenBLAS's own threads (one per core by default) beside the other workers share the same cores: under
load a 400 x 400 ``eigvalsh`` took 0.9-5.3 s on 2 threads, 0.12 s on one. The variable is read when
numpy first loads, here before it does, and the workers inherit it.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked ``slow`` first, each group in its collection order."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # a stable sort
