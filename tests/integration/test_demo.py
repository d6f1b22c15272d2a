"""`driftwarden demo` (what `make demo` runs) finishes by itself, finds the drift and cleans up."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end_and_stops_everything_it_started(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")}
    result = subprocess.run(
        [sys.executable, "-m", "driftwarden", "demo", "--events", "12000", "--rate", "6000",
         "--work-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=180, env=env, check=False,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "result               OK" in out
    assert re.search(r"events processed\s+12,000", out)
    expected = (
        "data_drift on num_00, data_drift on num_01, multivariate_drift on numeric_features, prediction_drift on score"
    )
    assert re.search(rf"alerts\s+4: {expected}", out)
    assert out.count("ALERT ") == 4

    monitor_pid = int(re.search(r"monitor worker started \(pid (\d+)\)", out).group(1))
    with pytest.raises(ProcessLookupError):
        os.kill(monitor_pid, 0)
    port = int(re.search(r"ready at 127\.0\.0\.1:(\d+)", out).group(1))
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
