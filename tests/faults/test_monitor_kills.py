"""kill -9 of monitor workers at random moments under live load (issue 14): 20 trials in 3 seeded runs.

Each run produces drifting streams with late labels and malformed messages at a steady rate while a
worker is killed with SIGKILL and restarted to a backlog (with two workers, the survivor takes over
meanwhile). Afterwards every produced input is processed or dead-lettered exactly once, every label is
counted once, each expected alert fired once with one id, and every worker is alive
(driftwarden.bench.kill_trials, also run as a soak by ``driftwarden faults``).
"""

from __future__ import annotations

import pytest

from driftwarden.bench.kill_trials import KillRun, RunResult, run_all

pytestmark = pytest.mark.integration

#: Run side by side (each has its own topics, group and workers): 20 kills in about the time of 7.
RUNS = [
    KillRun(seed=1401, kills=7),
    KillRun(seed=1402, kills=7, workers=2),
    KillRun(seed=1403, kills=6),
]


def test_kill_9_under_live_load_loses_nothing_counts_nothing_twice_and_alerts_once(monitor_broker):
    settings, work = monitor_broker
    results = run_all(settings, work, RUNS)
    table = "\n".join([RunResult.HEADER, *(r.as_row() for r in results)])
    assert all(r.ok for r in results), f"{table}\nworker logs under {work}"
    for run, result in zip(RUNS, results, strict=True):
        assert result.kills == run.kills
        assert result.produced == result.processed + result.dead_letters_on_topic
        assert result.produced == result.processed + result.dead_lettered
        assert result.alerts >= run.models  # every model's drift alerted (the exact subjects are checked per run)
