"""`driftwarden demo` (what `make demo` runs) finishes by itself, finds the drift, closes the loop and
cleans up after itself."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end_and_stops_everything_it_started(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")}
    result = subprocess.run(
        [sys.executable, "-m", "driftwarden", "demo", "--events", "12000", "--rate", "6000",
         "--loop-events", "30000", "--work-dir", str(tmp_path), "--no-wait"],
        capture_output=True, text=True, timeout=240, env=env, check=False,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert re.search(r"result\s+OK", out)
    assert re.search(r"events processed\s+12,000", out)
    expected = (
        "data_drift on num_00, data_drift on num_01, multivariate_drift on numeric_features, prediction_drift on score"
    )
    assert re.search(rf"alerts\s+4: {expected}", out)
    assert re.search(r"served by versions\s+1, 2", out)
    requests = re.search(r"requests\s+([\d,]+) rows, 0 failed", out)
    assert requests and 30_000 <= int(requests.group(1).replace(",", "")) <= 90_000, out
    end = re.search(r"accuracy at the end\s+[\d.]+ \(v2, ([\d,]+) rows after the change\)", out)
    assert end and int(end.group(1).replace(",", "")) >= 7_500, out
    assert "MODEL demo-served v2 PROMOTED" in out

    assert re.search(r"LIVE PAGE http://127\.0\.0\.1:\d+/", out)
    assert_nothing_left(out)


@pytest.mark.parametrize(("after", "started"), [("LIVE PAGE", 4), ("broker (Tansu", 0)])
def test_a_demo_sent_sigterm_stops_everything_it_started(tmp_path, after, started):
    """`kill` (or `timeout`, or a service manager) stops the demo as Ctrl-C does: its broker, monitor, trainer,
    serving and UI processes go with it (Python's default for SIGTERM left them all running), also when it comes
    during the set-up, once the broker runs and before the rest has started (the broker was left running)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")}
    demo = subprocess.Popen(
        [sys.executable, "-m", "driftwarden", "demo", "--events", "12000", "--rate", "6000",
         "--loop-events", "30000", "--work-dir", str(tmp_path), "--wait"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    assert demo.stdout is not None
    seen = []
    for line in demo.stdout:  # until that point
        seen.append(line)
        if after in line:
            break
    demo.send_signal(signal.SIGTERM)
    out = "".join(seen) + demo.communicate(timeout=60)[0]
    assert re.search(r"stopped (monitor \(exit code -?\d+\), trainer.* and )?the broker", out), out
    assert_nothing_left(out, started)


def assert_nothing_left(out: str, started: int = 4) -> None:
    """The processes the demo started (monitor, trainer, serving, ui: their pids in its output) have exited and its
    broker's port is closed."""
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", out)]
    assert len(pids) == started, out
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    port = int(re.search(r"ready at 127\.0\.0\.1:(\d+)", out).group(1))
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
