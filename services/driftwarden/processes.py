"""Start and stop driftwarden's own services as child processes (for the demo and the tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from driftwarden.settings import Settings


def child_env(settings: Settings) -> dict[str, str]:
    """This process's environment with ``settings`` as the only ``DRIFTWARDEN_*`` variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")} | settings.to_env()


def spawn(args: list[str], settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """Run ``driftwarden ARGS...`` with ``settings`` in its environment, output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "driftwarden", *args],
            env=child_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def terminate(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> int:
    """Stop gracefully (SIGTERM), then kill if it does not exit in time; return the exit code."""
    (code,) = terminate_all([process], timeout_s)
    return code


def terminate_all(processes: Sequence[subprocess.Popen[bytes]], timeout_s: float = 15.0) -> list[int]:
    """Stop them together: SIGTERM to each, then wait, killing any still running ``timeout_s`` after the
    signals; their exit codes in order. The shutdowns overlap instead of queueing."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + timeout_s
    for process in running:
        try:
            process.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return [process.returncode for process in processes]
