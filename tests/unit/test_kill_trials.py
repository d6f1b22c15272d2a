"""The pieces of the monitor kill trials that need no broker (driftwarden.bench.kill_trials)."""

from __future__ import annotations

import itertools

import pytest
from aiokafka.partitioner import murmur2

from driftwarden.bench.kill_trials import KillRun, RunResult, default_runs, model_ids, wait_counts


def test_the_two_models_land_on_the_first_and_the_last_partition():
    ids = model_ids("kills7", 4)
    assert [(murmur2(m.encode()) & 0x7FFFFFFF) % 4 for m in ids] == [0, 3]


def test_default_runs_add_up_to_the_trials_and_alternate_one_and_two_workers():
    runs = default_runs(20, seed=5)
    assert sum(r.kills for r in runs) == 20 and max(r.kills for r in runs) <= 6
    assert [r.workers for r in runs] == [1, 2, 1, 2][: len(runs)]
    assert [r.seed for r in runs] == list(range(5, 5 + len(runs)))


def test_a_run_paces_enough_events_for_its_kills_and_starts_the_drift_after_the_reference():
    assert KillRun(seed=1, kills=7).events_per_model == 300 * 12 * 7
    assert KillRun(seed=1, kills=1).events_per_model == 9_000  # at least the reference, the onset and a drift


def test_wait_counts_returns_once_every_count_is_reached():
    counts = itertools.count(0, 40)
    wait_counts(lambda: {"a": next(counts)}, {"a": 100}, stall_s=5)
    assert next(counts) >= 120


def test_wait_counts_gives_up_when_nothing_moves_however_long_it_has_run():
    with pytest.raises(TimeoutError, match="stuck"):
        wait_counts(lambda: {"a": 3}, {"a": 4}, stall_s=0.2)


def test_a_failed_run_says_why_in_its_row():
    result = RunResult(KillRun(seed=3, kills=2), kills=2, produced=10, processed=9, problems=["m: 1 lost"])
    assert not result.ok and result.as_row().endswith("| FAILED: m: 1 lost |")
    assert RunResult(KillRun(seed=3, kills=2)).as_row().endswith("| ok |")
