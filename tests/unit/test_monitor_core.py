"""The pure monitor core on the load generator's scenarios (no Kafka)."""

from __future__ import annotations

import pytest

from driftwarden.core.events import PredictionEvent
from driftwarden.core.monitor import Monitor, MonitorConfig
from driftwarden.load.scenarios import Scenario, generate


def run_scenario(scenario: Scenario, config: MonitorConfig | None = None):
    """Feed a scenario through a fresh Monitor; return (alerts, index of each event id)."""
    monitor = Monitor(config)
    alerts, index = [], {}
    for chunk in generate(scenario, chunk_size=1_000):
        events = [PredictionEvent.model_validate(e) for e in chunk.prediction_events()]
        index.update((e.event_id, chunk.start + i) for i, e in enumerate(events))
        alerts += monitor.observe(events, now=123.0)
    return alerts, index, monitor


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_abrupt_shift_alerts_exactly_the_drifting_features_soon_after_onset(seed):
    scenario = Scenario(name="abrupt-shift", n_events=30_000, onset=10_000, seed=seed)
    alerts, index, _ = run_scenario(scenario)
    truth = scenario.ground_truth()
    assert sorted(a.subject for a in alerts) == sorted(truth.drifting_features)
    for alert in alerts:
        delay = index[alert.trigger_event_id] - truth.onset
        assert 0 <= delay <= 2_000, (alert.subject, delay)
        assert 0.5 <= alert.evidence["shift_sigma"] <= 1.5  # a 1σ shift, estimated from the recent values


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stable_stream_raises_no_alert(seed):
    alerts, _, monitor = run_scenario(Scenario(name="stable", n_events=30_000, seed=seed))
    assert alerts == []
    assert monitor.models[("demo-model", "1")].events_seen == 30_000


def test_repeated_detections_of_one_problem_stay_one_open_alert():
    scenario = Scenario(name="abrupt-shift", n_events=20_000, onset=5_000, magnitude=3.0,
                        drift_features=("num_05",))  # fmt: skip
    alerts, _, monitor = run_scenario(scenario)
    assert [a.subject for a in alerts] == ["num_05"]
    assert alerts[0].severity == "critical"
    assert len(monitor.models[("demo-model", "1")].open_alerts) == 1


def test_no_alert_before_the_reference_is_complete():
    # The shift starts at event 100, inside the 1,000-event reference window: nothing to compare with yet.
    scenario = Scenario(name="abrupt-shift", n_events=900, onset=100, magnitude=5.0)
    alerts, _, _ = run_scenario(scenario)
    assert alerts == []


def test_a_new_model_version_gets_its_own_detectors_and_fingerprints():
    old = Scenario(name="abrupt-shift", n_events=15_000, onset=5_000, model_version="1")
    new = Scenario(name="abrupt-shift", n_events=15_000, onset=5_000, model_version="2", seed=9)
    monitor = Monitor()
    alerts = []
    for scenario in (old, new):
        for chunk in generate(scenario):
            alerts += monitor.observe(
                [PredictionEvent.model_validate(e) for e in chunk.prediction_events()], 0
            )
    assert sorted((a.model_version, a.subject) for a in alerts) == [
        ("1", "num_00"), ("1", "num_01"), ("2", "num_00"), ("2", "num_01"),
    ]  # fmt: skip
    assert len({a.fingerprint for a in alerts}) == 4


def test_alert_evidence_and_summary_name_the_numbers():
    alerts, _, _ = run_scenario(Scenario(name="abrupt-shift", n_events=15_000, onset=5_000))
    alert = alerts[0]
    assert alert.summary.startswith(f"{alert.subject} mean moved from ")
    assert "σ of reference" in alert.summary
    evidence = alert.evidence
    assert evidence["reference_size"] == 1_000
    assert evidence["values_seen"] > 5_000
    assert evidence["current_mean"] != evidence["reference_mean"]
