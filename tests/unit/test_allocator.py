"""A worker's large blocks get mappings of their own (glibc's fixed mmap threshold), so they are
returned to the system when freed instead of fragmenting the heap: see driftwarden.allocator."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# Builds a worker's Faust app, then frees a mapped block of a fetched envelope's size (which raises
# glibc's default, dynamic threshold past it) and allocates one again: prints whether it was mapped.
SCRIPT = """
import asyncio, ctypes

from driftwarden.kafka.faust_app import create_faust_app
from driftwarden.settings import Settings

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                     "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

async def build():
    create_faust_app("allocator-test", Settings(kafka_bootstrap="localhost:9092"))

asyncio.run(build())
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.free.argtypes, libc.mallinfo2.restype = ctypes.c_void_p, [ctypes.c_void_p], MallInfo2
libc.free(libc.malloc(500_000))
before = libc.mallinfo2().hblks
block = libc.malloc(500_000)
print(libc.mallinfo2().hblks - before)
"""

glibc_only = pytest.mark.skipif(not hasattr(__import__("ctypes").CDLL(None), "mallinfo2"), reason="glibc >= 2.33 only")


def mapped_after_a_free(env: dict[str, str]) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@glibc_only
def test_a_worker_maps_large_blocks_even_after_freeing_one():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    assert mapped_after_a_free(env) == 1


@glibc_only
def test_a_threshold_set_in_the_environment_is_left_as_it_is():
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLIBC_TUNABLES")}
    assert mapped_after_a_free(env | {"MALLOC_MMAP_THRESHOLD_": str(1024 * 1024)}) == 0
