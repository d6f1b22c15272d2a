"""The sharded path of a worker (driftwarden.core.sharded_models): alerts from the owners' decisions, and
state that a restart restores and replays on from without losing or double counting an event."""

from __future__ import annotations

import pytest

from driftwarden.core.config import MonitoringConfig
from driftwarden.core.events import PredictionEvent, WindowSummary
from driftwarden.core.profile import build_profile
from driftwarden.core.sharded_models import ShardedModels
from driftwarden.core.shards import stream_of
from driftwarden.core.state import decode, encode
from driftwarden_load.scenarios import Scenario, generate

REFERENCE_N = 5_000


def test_sharded_models_turn_the_owners_decisions_into_one_alert_per_drifted_feature():
    scenario = Scenario(name="abrupt-shift", n_events=REFERENCE_N + 20_000, onset=REFERENCE_N + 10_000, seed=4)
    rows = [PredictionEvent.model_validate(e) for chunk in generate(scenario) for e in chunk.prediction_events()]
    profile = build_profile(scenario.model_id, "1", rows[:REFERENCE_N])
    config = MonitoringConfig.from_dict({"models": {scenario.model_id: {"shards": 3}}})
    models = ShardedModels(config, lambda m, v: profile if (m, v) == (scenario.model_id, "1") else None)
    assert models.shards_of(scenario.model_id) == 3 and models.shards_of("other") == 1
    alerts = []
    for i in range(REFERENCE_N, len(rows), 500):
        shard = (i // 500) % 3
        for summary in models.summarize("predictions", shard, i, scenario.model_id, shard, rows[i : i + 500]):
            alerts += models.merge(0, WindowSummary.model_validate_json(summary.to_json()), now=0.0)
    assert sorted(a.subject for a in alerts) == sorted(scenario.drift_features)
    assert {a.detector for a in alerts} <= {"sharded_rank_cusum", "sharded_chi2"}
    assert all(a.state == "firing" and a.kind == "data_drift" for a in alerts)
    unknown = [e.model_copy(update={"model_version": "2"}) for e in rows[:10]]
    assert models.summarize("predictions", 0, 0, scenario.model_id, 0, unknown) == [] and models.unprofiled == 10


def test_a_sharded_models_alert_resolves_once_its_windows_pass_with_a_margin():
    scenario = Scenario(name="stable", n_events=REFERENCE_N + 30_000, seed=6)
    rows = [e for chunk in generate(scenario) for e in chunk.prediction_events()]
    profile = build_profile(scenario.model_id, "1", [PredictionEvent.model_validate(e) for e in rows[:REFERENCE_N]])
    shift = 2 * profile.numeric["num_03"].std
    for row in rows[REFERENCE_N + 10_000 : REFERENCE_N + 16_000]:  # num_03 moves for 6 s of event time, then is back
        row["features"]["num_03"] += shift
    events = [PredictionEvent.model_validate(e) for e in rows[REFERENCE_N:]]
    models = ShardedModels(
        MonitoringConfig.from_dict({"models": {scenario.model_id: {"shards": 2}}}), lambda m, v: profile
    )
    alerts = []
    for i in range(0, len(events), 500):
        shard = (i // 500) % 2
        for summary in models.summarize("predictions", shard, i, scenario.model_id, shard, events[i : i + 500]):
            alerts += models.merge(0, summary, now=0.0)
    assert [(a.subject, a.state) for a in alerts] == [("num_03", "firing"), ("num_03", "resolved")]
    firing, resolved = (int(a.trigger_event_id.rsplit("/", 1)[1]) - int(events[0].ts) for a in alerts)
    assert 10 <= firing < 16 and resolved >= 16 + 3 * 2 - 1  # the last bucket of three settled windows of 2 s


def test_a_partition_restored_from_its_checkpoint_and_replayed_counts_every_event_once():
    # a worker reads shards 0 and 1 of a model on partitions 0 and 1 (messages of 250 events), checkpoints at
    # message 30, goes on to message 45 (its summaries published), dies; its successor restores the
    # checkpoint and replays from message 30. The owner drops the replayed summaries and counts every event of
    # a closed bucket once.
    scenario = Scenario(name="stable", n_events=REFERENCE_N + 20_000, seed=8)
    rows = [PredictionEvent.model_validate(e) for chunk in generate(scenario) for e in chunk.prediction_events()]
    profile = build_profile(scenario.model_id, "1", rows[:REFERENCE_N])
    config = MonitoringConfig.from_dict({"models": {scenario.model_id: {"shards": 2, "shard_lateness_s": 2.0}}})
    messages = [rows[i : i + 250] for i in range(REFERENCE_N, len(rows), 250)]

    def read(models: ShardedModels, first: int, last: int) -> list[WindowSummary]:
        return [s for offset in range(first, last) for s in models.summarize(
            "predictions", offset % 2, offset, scenario.model_id, offset % 2, messages[offset])]  # fmt: skip

    worker = ShardedModels(config, lambda m, v: profile)
    published = read(worker, 0, 30)
    checkpoints = {p: encode("partition", 1, worker.export(p) or {}) for p in (0, 1)}
    lost_with_the_worker = read(worker, 30, 45)  # published; the state that made them is not checkpointed
    published += lost_with_the_worker
    successor = ShardedModels(config, lambda m, v: profile)
    for partition, raw in checkpoints.items():
        successor.restore(partition, decode(raw, "partition", 1))
    published += read(successor, 30, len(messages))
    owner = ShardedModels(config, lambda m, v: profile)
    for summary in published:
        owner.merge(2, WindowSummary.model_validate_json(summary.to_json()), now=0.0)
    ((_, merger),) = owner.mergers()
    still_open = sum(b.events for s in successor.summarizers.values() for z in s.values() for b in z.open.values())
    assert merger.duplicates == len(lost_with_the_worker) > 0
    assert merger.merged_events + still_open == len(rows) - REFERENCE_N
    assert merger.late_summaries == 0 and merger.held == {}
    foreign = read(ShardedModels(config, lambda m, v: profile, group="another-group"), 0, 30)
    for summary in foreign:  # of another group reading the same predictions: not merged here
        assert summary.group == "another-group" and owner.merge(2, summary, now=0.0) == []
    assert owner.foreign == len(foreign) > 0
    assert merger.merged_events + still_open == len(rows) - REFERENCE_N
    (status,) = owner.statuses(now=1.0)
    assert status.events_processed == merger.merged_events and status.model_id == scenario.model_id
    restored_owner = ShardedModels(config, lambda m, v: profile)
    restored_owner.restore(2, decode(encode("partition", 1, owner.export(2) or {}), "partition", 1))
    assert restored_owner.export(2) == owner.export(2) and restored_owner.export(0) is None


def test_an_owner_moves_past_a_refused_summary_and_a_gap_is_given_up_after_shard_idle_s():
    scenario = Scenario(name="stable", n_events=REFERENCE_N + 4_000, seed=9)
    rows = [PredictionEvent.model_validate(e) for chunk in generate(scenario) for e in chunk.prediction_events()]
    profile = build_profile(scenario.model_id, "1", rows[:REFERENCE_N])
    config = MonitoringConfig.from_dict(
        {
            "models": {
                scenario.model_id: {"shards": 2, "shard_idle_s": 5.0, "bucket_seconds": 0.25, "shard_lateness_s": 0.0}
            }
        }
    )
    models = ShardedModels(config, lambda m, v: profile if v == "1" else None)
    summaries = [s for i in range(REFERENCE_N, len(rows), 500)
                 for s in models.summarize("predictions", 0, i, scenario.model_id, 0, rows[i : i + 500])]  # fmt: skip
    assert [s.seq for s in summaries] == list(range(len(summaries))) and len(summaries) >= 6
    with pytest.raises(ValueError, match=f"no reference profile of {scenario.model_id} version 2 here"):
        models.merge(2, summaries[0].model_copy(update={"model_version": "2"}), now=100.0)
    with pytest.raises(ValueError, match="this owner merges 2"):  # the owner's count is its config's, not the first
        models.merge(2, summaries[0].model_copy(update={"shards": 3, "shard": 2}), now=100.0)  # summary's
    models.merge(2, summaries[0], now=100.0)
    of_another_count = summaries[1].model_copy(update={"shards": 3})  # e.g. a worker on another config
    with pytest.raises(ValueError, match="this owner merges 2"):
        models.merge(2, of_another_count, now=100.0)
    models.skip(2, of_another_count, now=100.0)  # dead-lettered by the service
    models.merge(2, summaries[2], now=100.0)
    ((_, merger),) = models.mergers()
    assert merger.held == {} and merger.skipped == 1
    assert merger.merged_events == summaries[0].events + summaries[2].events
    for summary in summaries[4:]:  # seq 3 lost (unreadable): what follows is held
        models.merge(2, summary, now=101.0)
    assert merger.held.keys() == {stream_of(summaries[0])}
    assert models.decide_idle(now=105.0)[1] == set()
    assert models.decide_idle(now=106.5)[1] == {2}  # held for shard_idle_s: the gap is given up
    assert merger.held == {} and merger.missing == 1
    assert merger.merged_events == sum(s.events for s in summaries) - summaries[1].events - summaries[3].events
