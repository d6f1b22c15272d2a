"""Two monitor groups reading the same topics (a canary deployment, a second team's monitor) each publish
their own status of a model, named by their group; the readers and ``driftwarden status`` tell them apart."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from helpers_integration import Worker, produce, unique_model

from driftwarden.kafka.broker import free_port
from driftwarden.kafka.reader import start_new_group_at_end
from driftwarden.monitor.status import latest_status, probe_monitor, wait_for_status
from driftwarden.processes import spawn, terminate
from driftwarden.settings import Settings
from driftwarden_load.scenarios import Scenario

pytestmark = pytest.mark.integration


def status_lines(settings: Settings, *args: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")} | settings.to_env()
    result = subprocess.run([sys.executable, "-m", "driftwarden", "status", *args], env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_two_monitor_groups_on_the_same_topics_each_publish_their_own_count_and_status_shows_both(
    kafka: Settings, monitor_worker: Worker, tmp_path
) -> None:
    model_id = unique_model("groups")
    before = Scenario(name="stable", n_events=600, model_id=model_id)
    after = Scenario(name="stable", n_events=400, model_id=model_id, seed=1,
                     start_ts=before.start_ts + before.n_events / before.events_per_second)  # fmt: skip
    produce(kafka, before, batch_size=100, label_fraction=0.0)
    asyncio.run(wait_for_status(kafka, model_id, lambda s: s.events_processed == 600, 120))
    # The canary group starts at the end of the inputs (committed here, as its first worker would with
    # "latest", but before the probe is sent): it counts only what comes after.
    canary = kafka.model_copy(update={"monitor_group": f"{kafka.monitor_group}-canary", "state_dir": tmp_path})
    topics = canary.topics
    inputs = [topics.predictions, topics.labels, topics.window_summaries]
    assert asyncio.run(start_new_group_at_end(canary, canary.monitor_group, inputs))
    process = spawn(["monitor", "--metrics-port", str(free_port())], canary, tmp_path / "canary.log")
    try:
        asyncio.run(probe_monitor(canary, timeout_s=120))
        produce(kafka, after, batch_size=100, label_fraction=0.0)
        mine = asyncio.run(wait_for_status(kafka, model_id, lambda s: s.events_processed == 1_000, 120))
        theirs = asyncio.run(wait_for_status(canary, model_id, lambda s: s.events_processed == 400, 120))
    finally:
        terminate(process)
    assert (mine.group, theirs.group) == (kafka.monitor_group, canary.monitor_group)
    assert theirs.worker.endswith(f":{process.pid}") and mine.worker.endswith(f":{monitor_worker.process.pid}")
    # Whichever group published last, a reader gets the status of the group it asks for (its own by default).
    latest = [asyncio.run(latest_status(kafka, model_id, group)) for group in (None, canary.monitor_group)]
    assert [s.events_processed if s else None for s in latest] == [1_000, 400]

    shown = {s["group"]: s for s in map(json.loads, status_lines(kafka, "--json", "--model-id", model_id))}
    assert {g: s["events_processed"] for g, s in shown.items()} == {kafka.monitor_group: 1_000,
                                                                    canary.monitor_group: 400}  # fmt: skip
    assert shown[kafka.monitor_group]["worker"] == mine.worker
    (line,) = status_lines(kafka, "--model-id", model_id, "--group", canary.monitor_group)
    assert f"group {canary.monitor_group} ({theirs.worker})" in line and "processed 400 " in line
