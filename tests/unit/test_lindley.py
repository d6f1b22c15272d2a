"""The compiled loop of the rank CUSUMs (core/detectors/lindley.py): where it is compiled and cached."""

from __future__ import annotations

import numpy as np
import pytest
from numba.core import caching

from driftwarden.core.detectors import lindley as module
from driftwarden.core.detectors.lindley import lindley
from driftwarden.core.detectors.sequential import NO_PART


def run() -> tuple[int | None, list[int]]:
    table, cusums = np.array([[-2], [3]]), np.zeros(1, np.int64)
    bins = np.array([1, 1, 0, 1])
    return lindley(bins, table, bins, NO_PART, cusums, np.full(1, -1), np.array([5]), 0), cusums.tolist()


def test_with_no_writable_cache_directory_the_loop_is_compiled_in_the_process(monkeypatch):
    # numba (0.68) finds no place for its cache when none of its locators can write (a read-only install run by a
    # user without a home directory): it refuses `cache=True`. The loop is then compiled without a cache.
    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])
    module._compiled.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="no locator available"):  # (what numba does: the fallback's cause)
            caching.FunctionCache(module._recursion)
        assert run() == (2, [6])
        assert module._compiled(module._recursion)._cache.__class__.__name__ == "NullCache"
    finally:
        module._compiled.cache_clear()
    assert run() == (2, [6])
