"""The C allocator of a worker process: large blocks in mappings of their own (glibc).

A worker's largest allocations are short-lived: the values of fetched messages (~500 KB for a
prediction envelope of 1,000 events), the fetch responses they are cut from, checkpoint exports.
glibc's malloc maps a block of ``M_MMAP_THRESHOLD`` (128 KiB) or more on its own and unmaps it when
freed, but by default it raises that threshold to the size of each mapped block freed (up to 32 MiB):
after the first few messages, every value comes from the heap arenas, between small long-lived
objects, and the holes they leave when freed stay in the process. Measured on the monitor worker
through the broker (docs/benchmarks.md): 130-150 MB free inside its arenas at 0.4M events, RSS
566 MB at 1M events and 653 MB from 7.3M on; with the threshold fixed, 5 MB free.
"""

from __future__ import annotations

import ctypes
import os

#: ``mallopt``'s parameter for the mmap threshold (glibc's malloc.h).
M_MMAP_THRESHOLD = -3
#: glibc's own initial threshold: the messages' values and anything larger get mappings of their own.
MMAP_THRESHOLD_BYTES = 128 * 1024


def map_large_blocks(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process (the dynamic raise is off).

    Freed, a block of that size or more goes back to the system at once instead of staying in the
    heap; the cost is a mapping (and zeroed pages) per such block, i.e. per fetched message. A
    threshold set in the environment (``MALLOC_MMAP_THRESHOLD_``, or ``mmap_threshold`` in
    ``GLIBC_TUNABLES``) is left as it is. Returns whether the threshold was set (False where
    ``mallopt`` is missing or refuses, e.g. on a C library other than glibc).
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "mmap_threshold" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
