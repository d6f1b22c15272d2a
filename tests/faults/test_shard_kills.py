"""kill -9 of the workers of a sharded model under live load: the owner counts every event once.

A stable model on 4 shards is produced at a steady rate to two monitor workers; a worker (a shard's
counter, the model's owner, or both) is killed with SIGKILL three times and restarted. Afterwards the
owner's merged count equals the events produced exactly, every summary a restarted worker regenerated
equals the one published before the kill, and the distinct summaries add up to the events produced
(driftwarden.bench.shard_trials).
"""

from __future__ import annotations

import pytest

from driftwarden.bench.shard_trials import run_shard_kills

pytestmark = pytest.mark.integration


def test_kill_9_of_sharded_model_workers_loses_no_event_and_counts_none_twice(monitor_broker):
    settings, work = monitor_broker
    result = run_shard_kills(settings, work, seed=1701, kills=3)
    print(result)  # (shown with -rP)
    assert result.kills == 3 and not result.problems, (result, f"worker logs under {work}")
    assert result.merged == result.produced == result.distinct_events, result
