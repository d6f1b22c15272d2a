"""Wait for a ``driftwarden serve`` process to answer ``/readyz`` (demo, benchmark, tests)."""

from __future__ import annotations

import asyncio
import subprocess
import time

import aiohttp

from driftwarden.errors import DriftwardenError


async def wait_until_ready(url: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Return once ``url``/readyz answers 200; raise if the process exits or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            try:
                async with session.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if process is not None and process.poll() is not None:
                raise DriftwardenError(f"the server at {url} exited with code {process.returncode}")
            if time.monotonic() > deadline:
                raise DriftwardenError(f"the server at {url} was not ready within {timeout_s:.0f} s")
            await asyncio.sleep(0.2)
