"""Stopping child processes: together, gracefully, and killed only when they do not stop in time."""

from __future__ import annotations

import subprocess
import sys
import time

from driftwarden.processes import terminate, terminate_all

# Exits 0 one second after SIGTERM (a graceful shutdown that takes a while); "ready" once the handler is set.
SLOW_STOP = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(1.0), sys.exit(0)))\n"
    "print('ready', flush=True)\n"
    "while True: time.sleep(0.1)\n"
)
IGNORES_SIGTERM = SLOW_STOP.replace("lambda *_: (time.sleep(1.0), sys.exit(0))", "signal.SIG_IGN")


def start(script: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    return process


def test_terminate_all_stops_the_processes_together_and_returns_their_codes_in_order():
    processes = [start(SLOW_STOP) for _ in range(3)]
    started = time.monotonic()
    assert terminate_all(processes) == [0, 0, 0]
    assert time.monotonic() - started < 2.5  # one graceful second, not three in a row


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout_and_an_exited_one_keeps_its_code():
    done = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    done.wait()
    stubborn = start(IGNORES_SIGTERM)
    started = time.monotonic()
    assert terminate_all([done, stubborn], timeout_s=1.0) == [3, -9]
    assert 1.0 <= time.monotonic() - started < 5
    assert terminate(stubborn) == -9  # already stopped: nothing sent, the same code
