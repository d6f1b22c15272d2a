"""The pure monitor core on the load generator's scenarios and on hand-made streams (no Kafka)."""

from __future__ import annotations

import uuid
from collections import deque

import numpy as np
import orjson
import pytest

from driftwarden.core.config import ModelMonitorConfig, MonitoringConfig, RetrainPolicyConfig
from driftwarden.core.event_time import WATERMARK_QUORUM, RecentIds
from driftwarden.core.events import LabelEvent, PredictionEvent
from driftwarden.core.joins import LabelJoiner
from driftwarden.core.monitor import Monitor
from driftwarden.core.profile import FeatureSchema, to_columns
from driftwarden_load.scenarios import NUMERIC_FEATURES, Scenario, generate


def run_scenario(scenario: Scenario, monitor: Monitor | None = None, label_delay: int = 500, labels: bool = True):
    """Feed a scenario (predictions, then each label ``label_delay`` events later); return
    (alerts, commands, index of each event id, monitor)."""
    monitor = monitor or Monitor()
    alerts, commands, index, waiting = [], [], {}, deque()
    for chunk in generate(scenario, chunk_size=1_000):
        events = [PredictionEvent.model_validate(e) for e in chunk.prediction_events()]
        index.update((e.event_id, chunk.start + i) for i, e in enumerate(events))
        out = monitor.observe(events, now=123.0)
        alerts += out.alerts
        commands += out.commands
        if labels:
            waiting.extend(chunk.label_events())
            due = [LabelEvent.model_validate(waiting.popleft()) for _ in range(max(0, len(waiting) - label_delay))]
            out = monitor.observe_labels(due, now=123.0)
            alerts += out.alerts
            commands += out.commands
    return alerts, commands, index, monitor


def firing(alerts):
    return {(a.kind, a.subject) for a in alerts if a.state == "firing"}


@pytest.mark.parametrize("name", ["stable", "abrupt-shift", "gradual-shift", "categorical-shift", "concept-drift"])
def test_each_scenario_raises_exactly_the_expected_alerts(name):
    scenario = Scenario(name=name, n_events=50_000, onset=20_000, seed=5)
    alerts, _commands, _, _ = run_scenario(scenario)
    assert firing(alerts) == scenario.ground_truth().expected_alerts
    assert len({a.alert_id for a in alerts}) == len(alerts)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_abrupt_shift_data_drift_alerts_come_within_2000_events_of_onset(seed):
    scenario = Scenario(name="abrupt-shift", n_events=30_000, onset=10_000, seed=seed)
    alerts, _, index, _ = run_scenario(scenario, labels=False)
    data_drift = [a for a in alerts if a.kind == "data_drift"]
    assert sorted(a.subject for a in data_drift) == ["num_00", "num_01"]
    for alert in data_drift:
        assert 0 <= index[alert.trigger_event_id] - scenario.onset <= 2_000
        # Evidence an on-call engineer can trust: the shift was 1σ of the reference, which it names.
        assert 0.3 <= alert.evidence["shift_sigma"] <= 1.7
        assert (
            alert.evidence["statistic"] == "location"
            and alert.evidence["reference_size"] == ModelMonitorConfig().reference_size
        )


@pytest.mark.parametrize("seed", [1, 2])
def test_stable_streams_raise_nothing(seed):
    alerts, commands, _, monitor = run_scenario(Scenario(name="stable", n_events=40_000, seed=seed))
    assert alerts == [] and commands == []
    assert monitor.status("demo-model", 0).events_processed == 40_000


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_small_shift_spread_over_ten_features_is_caught_by_the_multivariate_detector(seed):
    scenario = Scenario(
        name="abrupt-shift", n_events=30_000, onset=15_000, drift_features=NUMERIC_FEATURES[6:16], magnitude=0.05,
        seed=seed,
    )  # fmt: skip
    alerts, _, index, _ = run_scenario(scenario, labels=False)
    first = next(a for a in alerts if a.state == "firing")
    assert (first.kind, first.subject) == ("multivariate_drift", "numeric_features")
    # within three windows: seeds 0-2 in the 3rd, 3rd and 1st (1st, 1st, 1st with the plain p-value at
    # 0.001; the p-value given a 5,000-event reference at the window tests' share of the budget costs power)
    assert index[first.trigger_event_id] - scenario.onset < 6_000
    assert first.evidence["features"] == 16


def test_concept_drift_is_caught_by_labels_and_triggers_one_retrain_command():
    scenario = Scenario(name="concept-drift", n_events=40_000, onset=20_000)
    alerts, commands, index, monitor = run_scenario(scenario, label_delay=300)
    performance = [a for a in alerts if a.kind == "performance_drift"]
    assert performance and all(index[a.trigger_event_id] >= scenario.onset for a in performance)
    assert index[performance[0].trigger_event_id] - scenario.onset <= 2_000
    (command,) = commands
    assert command.reasons == [performance[0].fingerprint]
    assert command.window.start_ts <= command.window.end_ts
    status = monitor.status("demo-model", 0)
    assert status.retrain_commands == 1
    assert status.performance["accuracy"] < 0.6
    # Labels-free estimation cannot see a pure concept drift: inputs and scores did not change.
    assert not any(a.kind == "estimated_performance" for a in alerts)


def test_without_labels_concept_drift_raises_no_performance_alert():
    alerts, commands, _, _ = run_scenario(Scenario(name="concept-drift", n_events=30_000, onset=10_000), labels=False)
    assert alerts == [] and commands == []


# -- hand-made streams -----------------------------------------------------------------------------


def make_events(n, rng, *, model_version="1", features=None, scores=None, segment=None, latency=None, cost=None):
    """``n`` prediction events; each keyword is a function (rng, i) -> value for every event."""
    events = []
    for i in range(n):
        p = scores(rng, i) if scores else float(rng.uniform())
        events.append(
            PredictionEvent(
                event_id=str(uuid.UUID(int=int(rng.integers(0, 2**63)) * 2**64 + i, version=4)),
                model_id="hand",
                model_version=model_version,
                ts=1_000.0 + i,
                features=features(rng, i) if features else {"x": float(rng.normal()), "c": "a"},
                prediction=float(p >= 0.5),
                scores={"0": 1 - p, "1": p},
                segment=segment(rng, i) if segment else None,
                latency_ms=latency(rng, i) if latency else None,
                cost=cost(rng, i) if cost else None,
            )
        )
    return events


def small_config(**overrides) -> MonitoringConfig:
    defaults = {"reference_size": 1_000, "window_size": 500, "label_window": 200, "segment_min_labels": 50}
    return MonitoringConfig(defaults=ModelMonitorConfig(**(defaults | overrides)))


def observe_all(monitor, events, batch=250):
    alerts = []
    for i in range(0, len(events), batch):
        alerts += monitor.observe(events[i : i + batch], now=1.0).alerts
    return alerts


def test_estimated_accuracy_drops_when_scores_move_to_the_decision_boundary():
    rng = np.random.default_rng(0)
    confident = make_events(3_000, rng, scores=lambda r, i: float(r.choice([r.uniform(0, 0.1), r.uniform(0.9, 1)])))
    unsure = make_events(1_000, rng, scores=lambda r, i: float(r.uniform(0.4, 0.6)))
    alerts = observe_all(Monitor(small_config()), confident + unsure)
    (estimated,) = [a for a in alerts if a.kind == "estimated_performance"]
    assert estimated.evidence["reference_estimated_accuracy"] > 0.9
    assert estimated.evidence["estimated_accuracy"] < 0.6


def test_data_quality_problems_are_alerted_by_check():
    rng = np.random.default_rng(1)
    normal = make_events(2_000, rng, features=lambda r, i: {"x": float(r.normal()), "y": float(r.normal()), "c": "a"})

    def broken(r, i):
        return {
            "x": None if i % 5 == 0 else float(r.normal()),  # 20 % missing
            "y": "oops" if i % 50 == 0 else float(r.normal() * 100),  # wrong type and out of range
            "c": "never-seen" if i % 10 == 0 else "a",
        }

    alerts = observe_all(Monitor(small_config()), normal + make_events(1_000, rng, features=broken))
    quality = {a.subject for a in alerts if a.kind == "data_quality"}
    assert {"x/missing", "y/type", "y/out_of_range", "c/unseen_categories"} <= quality
    assert "x/out_of_range" not in quality


def test_a_segment_that_does_worse_than_the_rest_raises_a_segment_alert():
    rng = np.random.default_rng(2)
    events = make_events(4_000, rng, segment=lambda r, i: {"country": ["NL", "DE", "FR"][i % 3]})
    monitor = Monitor(small_config())
    observe_all(monitor, events)
    labels = []
    for i, event in enumerate(events[1_000:]):
        correct = event.prediction if event.segment["country"] != "FR" or i % 10 < 5 else 1 - event.prediction
        labels.append(LabelEvent(event_id=event.event_id, model_id="hand", ts=event.ts, label=correct))
    alerts = monitor.observe_labels(labels, now=1.0).alerts
    assert firing(alerts) == {("segment_performance", "country=FR")}


def test_latency_and_cost_budgets():
    rng = np.random.default_rng(3)
    events = make_events(2_000, rng, latency=lambda r, i: float(r.uniform(1, 5) if i < 1_500 else r.uniform(50, 80)),
                         cost=lambda r, i: 0.001)  # fmt: skip
    config = small_config(latency_p99_budget_ms=40.0, cost_per_1k_budget=0.5)
    alerts = observe_all(Monitor(config), events)
    assert firing(alerts) >= {("latency", "p99_ms"), ("cost", "per_1k_requests")}


def test_a_drift_that_ends_is_resolved_and_then_cools_down():
    rng = np.random.default_rng(4)
    shift = lambda start, stop: lambda r, i: {"x": float(r.normal(2.0 if start <= i < stop else 0.0)), "c": "a"}  # noqa: E731
    events = make_events(6_000, rng, features=shift(2_000, 3_000))
    alerts = observe_all(Monitor(small_config(cooldown_s=10_000)), events)
    states = [(a.subject, a.state) for a in alerts if a.kind == "data_drift"]
    assert states == [("x", "firing"), ("x", "resolved")]
    resolved = next(a for a in alerts if a.state == "resolved")
    assert resolved.fingerprint == next(a for a in alerts if a.state == "firing" and a.subject == "x").fingerprint


def test_regression_models_are_judged_on_mae():
    rng = np.random.default_rng(5)
    events = [
        PredictionEvent(
            event_id=str(uuid.uuid4()), model_id="reg", model_version="1", ts=float(i),
            features={"x": float(rng.normal())}, prediction=float(rng.normal(10)),
        )
        for i in range(3_000)
    ]  # fmt: skip
    monitor = Monitor(small_config())
    observe_all(monitor, events)
    noise = [float(rng.normal(0, 1 if i < 1_500 else 3)) for i in range(len(events))]  # errors triple halfway
    labels = [
        LabelEvent(event_id=e.event_id, model_id="reg", ts=e.ts, label=e.prediction + n)
        for e, n in zip(events, noise, strict=True)
    ]
    alerts = monitor.observe_labels(labels, now=1.0).alerts
    assert ("performance_drift", "mae") in firing(alerts)
    assert monitor.status("reg", 0).performance["mae"] > 2


def test_label_joins_handle_late_early_duplicate_and_missing_labels():
    rng = np.random.default_rng(6)
    events = make_events(400, rng)
    monitor = Monitor(small_config(label_ttl_s=1_000))  # events are 1 s apart
    label = lambda e: LabelEvent(event_id=e.event_id, model_id="hand", ts=e.ts, label=e.prediction)  # noqa: E731
    monitor.observe_labels([label(e) for e in events[:100]], now=1.0)  # early: before their predictions
    monitor.observe(events, now=1.0)
    monitor.observe_labels([label(e) for e in events[100:300]], now=1.0)  # late: the usual case
    monitor.observe_labels([label(e) for e in events[100:150]], now=1.0)  # duplicates
    later = [e.model_copy(update={"ts": 10_000.0}) for e in make_events(WATERMARK_QUORUM, np.random.default_rng(7))]
    monitor.observe(later[:-1], now=1.0)  # one short of the watermark's quorum: the clock stays
    assert monitor.status("hand", 0).label_joins["expired_predictions"] == 0
    monitor.observe(later[-1:], now=1.0)  # event time moves on: the 100 never labelled predictions expire
    joins = monitor.status("hand", 0).label_joins
    assert joins["joined"] == 300
    assert joins["early_labels"] == 100
    assert joins["duplicate_labels"] == 50
    assert joins["expired_predictions"] == 100
    assert joins["pending_predictions"] == WATERMARK_QUORUM


def test_a_profile_file_replaces_the_first_events_as_reference():
    from driftwarden.core.profile import build_profile

    rng = np.random.default_rng(8)
    reference = make_events(1_000, rng)
    profile = build_profile("hand", "1", reference)
    monitor = Monitor(small_config(), load_profile=lambda m, v: profile if (m, v) == ("hand", "1") else None)
    drifted = make_events(500, rng, features=lambda r, i: {"x": float(r.normal(3.0)), "c": "a"})
    alerts = observe_all(monitor, drifted)  # no reference phase: the very first window is tested
    assert ("data_drift", "x") in firing(alerts)


def test_results_do_not_depend_on_how_events_are_batched():
    """A replay after a restart arrives in far larger batches than live traffic: same alerts."""
    scenario = Scenario(name="abrupt-shift", n_events=20_000, onset=9_000)
    events = [PredictionEvent.model_validate(e) for chunk in generate(scenario) for e in chunk.prediction_events()]
    outcomes = []
    for batch in (137, 5_000, 20_000):
        monitor = Monitor()
        alerts = []
        for i in range(0, len(events), batch):
            alerts += monitor.observe(events[i : i + batch], now=1.0).alerts
        outcomes.append(sorted((a.alert_id, a.state) for a in alerts))  # order within a batch may vary
    assert outcomes[0] and outcomes[0] == outcomes[1] == outcomes[2]
    assert all(state == "firing" for _, state in outcomes[0])


@pytest.mark.slow
def test_single_events_batched_as_the_service_batches_them_give_what_one_event_at_a_time_gives():
    """The worker feeds the single-event messages of a Kafka batch to the core together, the batch's
    predictions, then its labels (monitor/service.py): two models interleaved (one changes version, one
    drifts), duplicates and labels between them give the same alerts, counters and label joins as each
    event fed on its own in stream order."""
    drifting = [e for c in generate(Scenario(name="abrupt-shift", n_events=7_000, onset=4_000, magnitude=2.0,
                                             drift_features=("num_02",))) for e in c.prediction_events()]  # fmt: skip
    other = [e | {"model_id": "other", "model_version": "2" if i > 4_500 else "1", "segment": {"region": "eu"}}
             for i, e in enumerate(e for c in generate(Scenario(name="stable", n_events=6_000, seed=4))
                                   for e in c.prediction_events())]  # fmt: skip
    inputs: list[PredictionEvent | LabelEvent] = []
    for i in range(len(drifting)):
        for events in (drifting, other):
            if i < len(events):
                inputs.append(PredictionEvent.model_validate(events[i]))
                if i % 97 == 0:
                    inputs.append(inputs[-1])  # a duplicate
                if i % 5 == 0 and i >= 50:
                    old = events[i - 50]
                    inputs.append(LabelEvent(event_id=old["event_id"], model_id=old["model_id"], ts=old["ts"] + 1,
                                             label=old["prediction"]))  # fmt: skip

    def run(batch: int) -> tuple[list[str], list[dict[str, object]], list[dict[str, int]]]:
        monitor, alerts = Monitor(), []
        for start in range(0, len(inputs), batch):
            items = inputs[start : start + batch]
            alerts += monitor.observe([e for e in items if isinstance(e, PredictionEvent)], now=123.0).alerts
            alerts += monitor.observe_labels([e for e in items if isinstance(e, LabelEvent)], now=123.0).alerts
        counters = [monitor.models[m].counters.state() for m in ("demo-model", "other")]
        return sorted(a.to_json().decode() for a in alerts), counters, [monitor.models[m].joiner.counts()
                                                                        for m in ("demo-model", "other")]  # fmt: skip

    one_by_one = run(1)
    assert ("data_drift", "num_02") in {(a["kind"], a["subject"]) for a in map(orjson.loads, one_by_one[0])}
    assert all(c["duplicates"] and c["processed"] for c in one_by_one[1])
    assert all(c["joined"] for c in one_by_one[2])
    assert run(500) == one_by_one


def test_repeated_detections_of_one_problem_stay_one_open_alert_and_are_counted():
    scenario = Scenario(name="abrupt-shift", n_events=30_000, onset=10_000, magnitude=3.0, drift_features=("num_05",))
    alerts, _, _, monitor = run_scenario(scenario, labels=False)
    feature_alerts = [a for a in alerts if a.kind == "data_drift"]
    assert [(a.subject, a.state, a.severity) for a in feature_alerts] == [("num_05", "firing", "critical")]
    assert monitor.status("demo-model", 0).alerts_suppressed > 0  # later detections were counted, not re-sent


@pytest.mark.parametrize("drifted", [("num_05",), ("num_05", "num_06")])
def test_a_feature_counts_once_toward_min_drifted_features_whatever_number_of_its_detectors_fire(drifted):
    """Its rank CUSUM and its window test both find the shift: one feature, no retrain at
    ``min_drifted_features = 2``; two features (and the joint test, not a feature) make a command."""
    retrain = RetrainPolicyConfig(on_performance_drift=False, min_drifted_features=2, min_examples=1_000)
    monitor = Monitor(MonitoringConfig(defaults=ModelMonitorConfig(retrain=retrain)))
    scenario = Scenario(name="abrupt-shift", n_events=20_000, onset=10_000, magnitude=3.0, drift_features=drifted)
    alerts, commands, _, monitor = run_scenario(scenario, monitor)
    data = [a for a in alerts if a.kind == "data_drift"]
    assert sorted(a.subject for a in data) == list(drifted) and {a.detector for a in data} == {"rank_cusum"}
    assert monitor.status("demo-model", 0).alerts_suppressed >= len(drifted)  # the window tests', counted
    assert ("multivariate_drift", "numeric_features") in firing(alerts)
    if len(drifted) == 1:
        assert commands == []
    else:
        (command,) = commands
        assert command.reasons == sorted(a.fingerprint for a in data)


def test_columns_separate_numbers_missing_values_and_type_violations():
    base = {"event_id": "6f1c2a7e-0d9b-4a57-9a43-5f0f3c1d2b11", "model_id": "m", "model_version": "1", "ts": 1.0,
            "prediction": 0}  # fmt: skip
    rows = [{"x": 1.5, "y": 2.0, "c": "a"}, {"x": None, "y": True, "c": 3.0}, {"y": "high", "c": None}]
    events = [PredictionEvent.model_validate(base | {"features": f}) for f in rows]
    schema = FeatureSchema(numeric=["x", "y"], categorical=["c"], task="classification", positive_class=None)
    columns = to_columns(events, schema)
    assert np.array_equal(columns.numeric, [[1.5, 2.0], [np.nan, np.nan], [np.nan, np.nan]], equal_nan=True)
    assert columns.numeric_missing.tolist() == [[False, False], [True, False], [True, False]]
    assert columns.type_violations.tolist() == [[False, False], [False, True], [False, True]]
    assert columns.categorical == [["a", "3", None]]  # one normalization: 3.0 reads "3"
    clean = to_columns(events[:1] * 3, schema)  # all numbers: the vectorized path
    assert clean.numeric.tolist() == [[1.5, 2.0]] * 3 and not clean.numeric_missing.any()


def test_columns_read_the_signal_and_confidence_from_scores_or_a_regression_prediction():
    base = {"event_id": "6f1c2a7e-0d9b-4a57-9a43-5f0f3c1d2b11", "model_id": "m", "model_version": "1", "ts": 1.0,
            "features": {}}  # fmt: skip
    events = [PredictionEvent.model_validate(base | e) for e in (
        {"prediction": "yes", "scores": {"yes": 0.7, "no": 0.3}}, {"prediction": "no", "scores": {"no": 0.9}},
        {"prediction": "no", "scores": {}}, {"prediction": 2.5}, {"prediction": "no"},
    )]  # fmt: skip

    def read(task: str, positive: str | None) -> tuple[list[float], list[float]]:
        schema = FeatureSchema(numeric=[], categorical=[], task=task, positive_class=positive)  # type: ignore[arg-type]
        columns = to_columns(events, schema)
        return np.nan_to_num(columns.signal, nan=-1).tolist(), np.nan_to_num(columns.confidence, nan=-1).tolist()

    assert read("classification", "yes") == ([0.7, -1, -1, -1, -1], [0.7, 0.9, -1, -1, -1])
    assert read("classification", None) == ([0.7, 0.9, -1, -1, -1], [0.7, 0.9, -1, -1, -1])
    assert read("regression", None) == ([0.7, 0.9, -1, 2.5, -1], [0.7, 0.9, -1, -1, -1])  # a number without scores


def test_a_run_of_single_events_is_deduplicated_and_left_waiting_for_labels_at_once(monkeypatch):
    """A worker's batch of single-event messages: each model's events, however interleaved with another
    model's, go through the dedupe ring and into the label joiner as one run (``add_many``,
    ``add_predictions``), not one call per event or per message (the same answers:
    tests/unit/test_event_time.py, test_state_roundtrip.py)."""
    calls: deque[str] = deque()
    for cls, name in ((RecentIds, "add"), (RecentIds, "add_many"), (LabelJoiner, "add_prediction"),
                      (LabelJoiner, "add_predictions")):  # fmt: skip
        original = getattr(cls, name)
        monkeypatch.setattr(cls, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    chunks = [next(generate(Scenario(name="stable", n_events=300, seed=seed))).prediction_events() for seed in range(3)]
    events = [
        PredictionEvent.model_validate(e | {"model_id": m})
        for m, chunk in zip("aba", chunks, strict=True)
        for e in chunk
    ]
    monitor = Monitor()
    outputs = monitor.observe([*events, events[0]], now=2e9)  # (the last one a duplicate of the first)
    assert outputs.processed == {("a", "1"): 600, ("b", "1"): 300}
    assert monitor.models["a"].counters.duplicates == 1
    assert list(calls) == ["add_many"] * 2 + ["add_predictions"] * 2  # a's 600 events in one call
    assert [len(monitor.models[m].joiner.predictions) for m in "ab"] == [600, 300]


def test_distribution_comparison_matches_scipy():
    from scipy import stats

    from driftwarden.core.stats import compare_distributions

    rng = np.random.default_rng(4)
    reference, current = np.sort(rng.normal(0, 2, 3_000)), rng.normal(0.3, 2.5, 1_500)
    statistic, p_value, distance = compare_distributions(reference, current, reference_std=2.0)
    expected = stats.ks_2samp(reference, current, method="asymp")
    assert statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert p_value == pytest.approx(expected.pvalue, rel=0.25)  # plain Kolmogorov limit (scipy corrects for n)
    assert distance == pytest.approx(stats.wasserstein_distance(reference, current) / 2.0, rel=1e-9)


def test_category_test_matches_scipy_chi2_contingency():
    from scipy import stats

    from driftwarden.core.stats import category_test

    rng = np.random.default_rng(5)
    for _ in range(200):
        k = int(rng.integers(2, 12))
        reference, current = rng.integers(1, 500, k).astype(float), rng.integers(1, 300, k).astype(float)
        chi2, p_value, _, _ = stats.chi2_contingency(np.vstack([reference, current]), correction=False)
        assert category_test(reference, current, given_reference=False)[:2] == pytest.approx(
            (chi2, p_value), rel=1e-12, abs=1e-300
        )


def test_a_feature_named_with_a_colon_works_end_to_end():
    """Statistics are keyed by (kind, subject, statistic), never by a joined string split again later."""
    from driftwarden.core.detectors import StatisticKey

    rng = np.random.default_rng(9)
    events = make_events(
        3_000, rng, features=lambda r, i: {"a:b": float(r.normal(3.0 if i >= 2_000 else 0.0)), "c": "a"}
    )
    monitor = Monitor(small_config())
    alerts = observe_all(monitor, events)
    assert ("data_drift", "a:b") in firing(alerts)
    latest = monitor.model("hand", "1").latest_window
    assert latest[StatisticKey("data_drift", "a:b", "wasserstein_normed")] > 1.0
    restored = Monitor(small_config())
    restored.restore(monitor.export(["hand"]))
    assert restored.model("hand", "1").latest_window == latest


@pytest.mark.parametrize("scores", [True, False])
def test_a_reference_of_columnar_batches_profiles_as_the_same_rows_as_events(scores):
    """The reference is profiled from the batches' columns, events are never made: the same profile, detectors
    and state as the rows sent as events, for mixed categories (numbers, booleans, nulls), a feature that is
    always null, text or numeric predictions, latency and cost; batches with other features fall back to events."""
    import orjson

    from driftwarden.core.decoding import PREDICTIONS
    from driftwarden.core.monitor import ModelMonitor

    rng = np.random.default_rng(11)
    config = ModelMonitorConfig(reference_size=1_200, min_reference_size=300, window_size=300)
    batches, row_batches = [], []
    for k in range(8):
        n = 150
        document = {
            "schema": "prediction-columns.v1", "model_id": "m", "model_version": "1",
            "event_id": [f"e{k}-{i}" for i in range(n)], "ts": (1.7e9 + k * n + np.arange(n)).tolist(),
            "features": {"x": rng.normal(0, 1, n).round(3).tolist(),
                         "mixed": [["a", 1, 2.5, True, None][int(v)] for v in rng.integers(0, 5, n)],
                         "empty": [None] * n},
            "prediction": (["yes", "no"] if not scores else [0, 1])[0:1] * n,
            "latency_ms": rng.uniform(1, 9, n).round(2).tolist(), "cost": rng.uniform(0, 1, n).round(3).tolist(),
        }  # fmt: skip
        if scores:
            p = rng.uniform(0, 1, n).round(4)
            document["scores"] = {"0": (1 - p).round(4).tolist(), "1": p.tolist()}
        if k == 5:
            document["features"]["late"] = rng.normal(0, 1, n).round(3).tolist()  # one more feature: events from here
        batches.append(PREDICTIONS.decode(orjson.dumps(document)).columns[0])
        row_batches.append(batches[-1].events())
    monitors = {way: ModelMonitor("m", "1", config) for way in ("columns", "events")}
    for columns, events in zip(batches, row_batches, strict=True):
        assert monitors["columns"].observe(columns, 0.0).alerts == monitors["events"].observe(events, 0.0).alerts
        assert monitors["columns"].reference_events == monitors["events"].reference_events
        assert monitors["columns"].profile == monitors["events"].profile
    # (a state writes the batches' rows as events)
    assert orjson.dumps(monitors["columns"].state()) == orjson.dumps(monitors["events"].state())
    profile = monitors["columns"].profile
    assert profile is not None and profile.n_events == 1_200 and profile.categorical["mixed"].counts.keys() == {
        "1", "2.5", "a", "true"
    }  # fmt: skip
    assert (profile.task, list(profile.numeric)) == ("classification", ["late", "x"])


@pytest.mark.parametrize("varying", [0, 1, 2])
def test_a_reference_with_constant_numeric_features_builds_and_is_monitored(varying):
    """np.cov of one varying column is 0-d (pinv raised LinAlgError for exactly one); the joint test needs two."""
    from driftwarden.core.profile import build_profile

    rng = np.random.default_rng(3)
    features = lambda r, i: {"a": float(r.normal()) if varying >= 1 else 1.0,  # noqa: E731
                             "b": float(r.normal()) if varying >= 2 else 2.0, "c": 3.0}  # fmt: skip
    profile = build_profile("m", "1", make_events(1_000, rng, features=features))
    assert profile.multivariate_features == (["a", "b"] if varying == 2 else [])
    monitor = Monitor(small_config())
    observe_all(monitor, make_events(3_000, rng, features=features))
    assert monitor.status("hand", 0).events_processed == 3_000


def test_quick_is_true_only_for_a_few_events_of_models_past_their_reference_and_changes_nothing():
    """``Monitor.quick`` tells the worker a call takes only a moment (it then runs it on its event loop): at most
    ``QUICK_EVENTS`` predictions (a columnar batch's rows counted) and labels, all of versions with a profile."""
    from driftwarden.core.columnar import decode_rows
    from driftwarden.core.monitor import QUICK_EVENTS

    chunks = generate(Scenario(n_events=7_000))
    stream = [PredictionEvent.model_validate(e) for c in chunks for e in c.prediction_events()]
    monitor = Monitor()
    assert not monitor.quick(stream[:10], labels=0) and monitor.models == {}  # its reference's build is to come
    monitor.observe(stream[:5_000], now=0.0)
    assert monitor.quick(stream[5_000:5_500], labels=QUICK_EVENTS - 500)
    assert not monitor.quick(stream[5_000:5_500], labels=QUICK_EVENTS - 499)
    assert not monitor.quick(stream[5_000 : 5_001 + QUICK_EVENTS], labels=0)
    assert not monitor.quick([*stream[5_000:5_010], stream[5_010].model_copy(update={"model_version": "2"})], 0)
    columns = decode_rows({"schema": "prediction-batch.v1", "model_id": "demo-model",
                           "events": [e.model_dump(mode="json") for e in stream[5_000:5_600]]})  # fmt: skip
    assert columns is not None and len(columns) == 600
    assert monitor.quick([columns], labels=400) and not monitor.quick([columns, columns], labels=0)
    assert list(monitor.models["demo-model"].versions) == ["1"]
    growing = Monitor(MonitoringConfig(defaults=ModelMonitorConfig(min_reference_size=1_000)))
    growing.observe(stream[:1_000], now=0.0)  # a first profile of 1,000, doubling to 5,000 (each doubling a build)
    assert growing.models["demo-model"].versions["1"].profile is not None
    assert not growing.quick(stream[1_000:1_010], labels=0)
    growing.observe(stream[1_000:5_000], now=0.0)
    assert growing.quick(stream[5_000:5_010], labels=0)
