"""Embedding features: arrays in the contracts, the inferred type, the profile, the MMD detector's
calibration and power, and the monitor's alerts on the load generator's topic-mix drift."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import orjson
import pytest

from driftwarden.core.columnar import decode_columns
from driftwarden.core.config import ModelMonitorConfig, MonitoringConfig, RetrainPolicyConfig
from driftwarden.core.detectors import EmbeddingDriftDetector, decide
from driftwarden.core.detectors.embedding import WINDOW_SAMPLE
from driftwarden.core.events import Alert, LabelEvent, PredictionEvent, RetrainCommand
from driftwarden.core.features import FEATURE_TYPES, infer_types, is_number, is_vector
from driftwarden.core.monitor import Monitor
from driftwarden.core.profile import (
    EMBEDDING_SAMPLE,
    Columns,
    EmbeddingProfile,
    ReferenceProfile,
    build_profile,
    infer_schema,
    to_columns,
)
from driftwarden.core.profile_report import describe
from driftwarden.core.state import StateReader
from driftwarden.registry.onnx_model import OnnxModel
from driftwarden.registry.store import ModelRegistry
from driftwarden.trainer.model import NOT_SERVABLE, Dataset, TrainerConfig
from driftwarden.trainer.workflow import bootstrap
from driftwarden_load.scenarios import (
    EMBEDDING_DIMS,
    EMBEDDING_FEATURE,
    NUMERIC_FEATURES,
    TOPIC_CENTERS,
    TOPIC_NOISE,
    TOPIC_PROBS,
    Chunk,
    Scenario,
    generate,
)


def topics(n: int, rng: np.random.Generator, probs: np.ndarray = TOPIC_PROBS) -> np.ndarray:
    """``n`` vectors of the load generator's topic model."""
    return TOPIC_CENTERS[rng.choice(len(probs), n, p=probs)] + rng.normal(0, TOPIC_NOISE, (n, EMBEDDING_DIMS))


def window(vectors: np.ndarray) -> Columns:
    return Columns.of_rows(np.zeros((len(vectors), 0)), embeddings=[vectors])


def events(name: str, n: int, onset: int = 0, seed: int = 0, model_id: str = "m") -> list[PredictionEvent]:
    scenario = Scenario(name=name, n_events=n, onset=onset, seed=seed, model_id=model_id)  # type: ignore[arg-type]
    return [PredictionEvent.model_validate(e) for c in generate(scenario, 2_000) for e in c.prediction_events()]


def test_an_array_of_numbers_is_an_embedding_and_declared_types_win():
    rows = [{"e": [0.1, 2, -3.5], "x": 1.0}, {"e": None, "x": 2.0}, {"e": [1.0, 2.0, 3.0], "x": None}]
    assert infer_types(rows, {}).embedding == ("e",)
    assert infer_types(rows, {"e": "categorical"}).embedding == ()
    assert infer_types([*rows, {"e": "text"}], {}).categorical == ("e",)  # mixed values: categorical
    assert infer_types(rows, {}, ignored=["e"]).names == ("x",)


def test_types_read_a_column_at_a_time_follow_the_rule_value_by_value():
    """Numeric when every value seen is a number, an embedding when every one is an array of numbers,
    categorical otherwise (booleans, text, arrays holding anything else, any mix); only nulls: not seen."""
    pool = [1.0, 2, True, "a", None, [1.0, 2], [], [1.0, "x"], {"k": 1}]
    rng = np.random.default_rng(0)

    def by_value(rows):
        seen: dict[str, str] = {}
        for row in rows:
            for name, value in row.items():
                if value is not None:
                    kind = "numeric" if is_number(value) else "embedding" if is_vector(value) else "categorical"
                    seen[name] = kind if seen.get(name, kind) == kind else "categorical"
        return seen

    for _ in range(300):
        rows = [
            {f"f{j}": pool[rng.integers(len(pool))] for j in range(4) if rng.random() < 0.8}
            for _ in range(rng.integers(0, 4))
        ]
        types = infer_types(rows, {})
        inferred = {name: kind for kind in FEATURE_TYPES for name in getattr(types, kind)}
        assert inferred == by_value(rows), rows


def test_the_length_is_the_commonest_and_other_lengths_count_as_missing():
    batch = [
        PredictionEvent(event_id=str(i), model_id="m", model_version="1", ts=1.0, features={"e": v}, prediction=0.0)
        for i, v in enumerate([[1.0, 2.0], [3.0, 4.0], [5.0], None, [7.0, 8.0]])
    ]
    schema = infer_schema(batch, {}, ())
    assert schema.embedding == {"e": 2} and schema.numeric == schema.categorical == []
    columns = to_columns(batch, schema)
    assert np.isnan(columns.embeddings[0]).all(axis=1).tolist() == [False, False, True, True, False]
    profile = build_profile("m", "1", batch)
    assert profile.embedding["e"].centroid == pytest.approx([11 / 3, 14 / 3])
    assert profile.embedding["e"].distance.missing_rate == pytest.approx(0.4)


def test_an_embedding_profile_round_trips_through_json_and_state():
    profile = build_profile("m", "1", events("embedding-stable", 2_000))
    embedding = profile.embedding[EMBEDDING_FEATURE]
    assert (embedding.dim, len(embedding.sample)) == (EMBEDDING_DIMS, EMBEDDING_SAMPLE)
    assert ReferenceProfile.from_json(profile.to_json()) == profile
    shown = f"  {EMBEDDING_FEATURE}  embedding  64 dimensions  n=2,000  missing 0.0%  2,000 reference vectors  "
    assert shown in describe(profile)  # profile show
    assert ReferenceProfile.from_state(StateReader(orjson.loads(orjson.dumps(profile.state())), "p")) == profile


def test_a_columnar_batch_with_an_array_is_refused_row_by_row_with_a_clear_reason():
    chunk = next(generate(Scenario(n_events=3)))
    document = chunk.prediction_columns()
    document["features"][EMBEDDING_FEATURE] = [[0.5, 0.25], None, [1.0, 2.0]]
    decoded = decode_columns(document, b"")
    assert [(row, reason) for row, reason, _ in decoded.rejections] == [
        (i, f"features.{EMBEDDING_FEATURE}: no arrays (embeddings) in a columnar batch; send prediction.v1 events")
        for i in (0, 2)
    ]
    assert decoded.batch is not None and len(decoded.batch) == 1


@pytest.mark.slow
def test_the_detector_is_calibrated_and_within_its_false_alarm_budget_over_many_windows_of_no_change():
    """One profile (the same reference for every window, as in the monitor), 400 windows of the same
    distribution: the p-values hold given the reference (within the level, as for 95 % of references,
    test_window_calibration.py: windows of 500 vectors, 1.75 % below 0.05, none below 0.01, 32 % below
    0.5; with 250, 1.75 % and 0.25 %, the split null's gamma fit 3.75 % and 1.25 %), no window reaches
    the effect floor (largest MMD² 0.0016), and at the default level no window drifts."""
    rng = np.random.default_rng(6)
    detector = EmbeddingDriftDetector(EMBEDDING_FEATURE, 0, EmbeddingProfile.of(topics(5_000, rng), 0.0))
    p_values, drifted, mmd2 = [], 0, []
    for _ in range(400):
        assert detector.update(window(topics(WINDOW_SAMPLE, rng)))
        decide([detector], ModelMonitorConfig().window_level)
        p_values.append(detector.p_value)
        mmd2.append(detector.evidence()["mmd2"])
        drifted += detector.drift_detected
    p = np.array(p_values)
    assert np.mean(p <= 0.05) <= 0.05 and np.mean(p <= 0.01) <= 0.01 and 0.3 <= np.mean(p <= 0.5) <= 0.6
    assert drifted == 0 and max(mmd2) < detector.mmd_threshold


@pytest.mark.parametrize("shift", [0.5, 1.0])
def test_a_topic_mix_change_is_detected(shift: float):
    rng = np.random.default_rng(7)
    detector = EmbeddingDriftDetector(EMBEDDING_FEATURE, 0, EmbeddingProfile.of(topics(5_000, rng), 0.0))
    moved = (1 - shift) * TOPIC_PROBS + shift * TOPIC_PROBS[::-1]
    assert detector.update(window(topics(2_000, rng, moved)))
    decide([detector], ModelMonitorConfig().window_level)
    evidence = detector.evidence()
    assert detector.drift_detected, evidence
    assert evidence["p_value"] < 1e-6 and evidence["mmd2"] >= detector.mmd_threshold


def test_every_fully_drifted_window_of_the_half_way_topic_mix_is_far_below_the_smallest_window_threshold():
    """The integration test's stream (seed 0, magnitude 0.5, onset 10,000; the monitor's reference of
    5,000 events, windows of 2,000): each whole window after the onset is far below the smallest
    Benjamini-Hochberg threshold of a window (~0.0005 / 22 tests). With a window sample of 250 the
    window 17,000-19,000 got p = 2.2e-4 (its 250 vectors an MMD² of 0.0053; 500 give 0.0099)."""
    scenario = Scenario(name="embedding-topic-mix", n_events=20_000, onset=10_000, magnitude=0.5)
    vectors = np.concatenate([c.embedding for c in generate(scenario) if c.embedding is not None])
    detector = EmbeddingDriftDetector(EMBEDDING_FEATURE, 0, EmbeddingProfile.of(vectors[:5_000], 0.0))
    p_values = []
    for start in range(11_000, 18_001, 2_000):
        assert detector.update(window(vectors[start : start + 2_000]))
        p_values.append(detector.p_value)
    assert max(p_values) < 1e-8, p_values


def test_the_monitor_alerts_on_the_topic_mix_drift_and_not_on_its_stable_twin():
    """Both embedding detectors find the drift; the feature gets one alert (the first detector's), the
    other finding is counted, as for a numeric feature's CUSUM and window test."""
    monitor = Monitor(MonitoringConfig())
    drift = events("embedding-topic-mix", 16_000, onset=10_000, model_id="drift")
    stable = events("embedding-stable", 16_000, model_id="stable")
    alerts = monitor.observe(drift, now=0.0).alerts + monitor.observe(stable, now=0.0).alerts
    (alert,) = alerts
    assert (alert.model_id, alert.state, alert.kind, alert.subject, alert.detector) == (
        "drift", "firing", "data_drift", EMBEDDING_FEATURE, "rank_cusum",
    )  # fmt: skip
    index = {e.event_id: i for i, e in enumerate(drift)}
    assert 10_000 <= index[alert.trigger_event_id or ""] < 11_000  # the distance CUSUM: within events
    assert alert.summary.startswith(f"{EMBEDDING_FEATURE} distance to the reference centroid: location moved up")
    (mmd,) = [d for d in monitor.models["drift"].versions["1"].window_detectors if d.name == "mmd"]
    assert isinstance(mmd, EmbeddingDriftDetector) and mmd.subject == EMBEDDING_FEATURE
    assert mmd.drift_detected  # the last window's verdict: counted under the same alert, not re-sent
    assert mmd.evidence()["p_value"] < 1e-6 and mmd.evidence()["mmd2"] >= mmd.mmd_threshold  # type: ignore[operator]
    assert monitor.status("drift", 0.0).alerts_suppressed >= 1


def test_an_embedding_drift_that_ends_resolves_its_one_alert():
    """The CUSUM's alert resolves on the MMD test's settled windows (the distance alert of state
    version 4, subject ``<embedding>/centroid_distance``, had no window verdict to resolve it)."""
    drift = events("embedding-topic-mix", 14_000, onset=8_000)
    back = [PredictionEvent.model_validate(e) for c in generate(Scenario(name="embedding-stable", n_events=12_000,
            seed=1, model_id="m", start_ts=Scenario().start_ts + 14.0)) for e in c.prediction_events()]  # fmt: skip
    alerts = Monitor().observe(drift + back, now=0.0).alerts
    index = {e.event_id: i for i, e in enumerate(drift + back)}
    assert [(a.state, a.subject, a.detector) for a in alerts] == [
        ("firing", EMBEDDING_FEATURE, "rank_cusum"), ("resolved", EMBEDDING_FEATURE, "rank_cusum"),
    ]  # fmt: skip
    assert alerts[0].fingerprint == alerts[1].fingerprint and index[alerts[1].trigger_event_id or ""] >= 14_000


def feed(monitor: Monitor, chunks: list[Chunk]) -> tuple[list[Alert], list[RetrainCommand]]:
    """Predictions, then their labels, chunk by chunk; the alerts and retrain commands raised."""
    alerts, commands = [], []
    for chunk in chunks:
        out = monitor.observe([PredictionEvent.model_validate(e) for e in chunk.prediction_events()], now=0.0)
        out += monitor.observe_labels([LabelEvent.model_validate(e) for e in chunk.label_events()], now=0.0)
        alerts += out.alerts
        commands += out.commands
    return alerts, commands


@pytest.mark.parametrize("numeric_shift", [False, True])
def test_an_embedding_counts_once_toward_the_drifted_features_of_a_retrain(numeric_shift: bool):
    """``min_drifted_features = 2``: the embedding alone (both its detectors fire) is one feature, no
    retrain; the embedding and a numeric feature are two, and the command names both alerts."""
    retrain = RetrainPolicyConfig(on_performance_drift=False, min_drifted_features=2, min_examples=1_000)
    monitor = Monitor(MonitoringConfig(defaults=ModelMonitorConfig(retrain=retrain)))
    chunks = list(generate(Scenario(name="embedding-topic-mix", n_events=16_000, onset=10_000), 1_000))
    if numeric_shift:
        for chunk in chunks[10:]:
            chunk.numeric[:, NUMERIC_FEATURES.index("num_03")] += 3.0
    alerts, commands = feed(monitor, chunks)
    data = {a.subject: a for a in alerts if a.kind == "data_drift" and a.state == "firing"}
    assert set(data) == ({EMBEDDING_FEATURE, "num_03"} if numeric_shift else {EMBEDDING_FEATURE})
    assert monitor.status("demo-model", 0.0).alerts_suppressed >= 1  # more than one detector fired
    if numeric_shift:
        (command,) = commands
        assert command.reasons == sorted(a.fingerprint for a in data.values())
    else:
        assert commands == []


def test_a_restored_checkpoint_continues_exactly_with_embeddings_pending():
    stream = events("embedding-topic-mix", 12_000, onset=8_000)
    whole, first = Monitor(), Monitor()
    expected = whole.observe(stream, now=0.0).alerts
    before = first.observe(stream[:7_300], now=0.0).alerts  # a partial window pending
    restored = Monitor()
    restored.restore(first.export(["m"]))
    after = restored.observe(stream[7_300:], now=0.0).alerts
    assert [(a.kind, a.subject, a.trigger_event_id) for a in before + after] == [
        (a.kind, a.subject, a.trigger_event_id) for a in expected
    ]
    assert expected
    assert mmd_of(whole).drift_detected and mmd_of(restored).evidence() == mmd_of(whole).evidence()
    assert restored.status("m", 0.0).alerts_suppressed == whole.status("m", 0.0).alerts_suppressed > 0


def test_the_trainer_leaves_embeddings_out_of_its_model_and_says_so_in_the_manifest(tmp_path):
    """Serving's inference requests carry no arrays, so the model takes the 20 scalar features; the
    manifest names the embedding as excluded, with the reason; examples with an embedding only give a
    rejection naming it, not a crash."""
    examples = [e for c in generate(Scenario(name="embedding-stable", n_events=3_000)) for e in c.training_examples()]
    dataset = Dataset.from_examples(examples)
    assert dataset.schema.embedding == (EMBEDDING_FEATURE,) and EMBEDDING_FEATURE not in dataset.frame.columns
    assert len(dataset.frame.columns) == 20 and dataset.excluded == {EMBEDDING_FEATURE: NOT_SERVABLE}
    registry = ModelRegistry(tmp_path)
    published = bootstrap(registry, "demo-model", examples, TrainerConfig())
    assert published.status == "promoted" and published.metrics["accuracy"] > 0.8
    manifest = registry.manifest("demo-model", published.model_version)
    assert manifest.excluded_features == {EMBEDDING_FEATURE: NOT_SERVABLE}
    assert len(manifest.numeric_features) == 16 and len(manifest.categorical_features) == 4
    model = OnnxModel(registry.load("demo-model", published.model_version))
    assert EMBEDDING_FEATURE not in model.numeric + model.categorical and len(model.numeric) == 16

    only_embedding = [{**e, "features": {EMBEDDING_FEATURE: e["features"][EMBEDDING_FEATURE]}} for e in examples]
    rejected = bootstrap(registry, "embedding-only", only_embedding, TrainerConfig())
    assert rejected.status == "rejected" and rejected.reason == (
        f"no challenger: no feature a model can take: left out {EMBEDDING_FEATURE} ({NOT_SERVABLE})"
    )


def test_the_text_models_topic_mix_raises_its_ground_truth_and_its_stable_twin_nothing():
    """The text model's events carry the embedding alone; the topic mix moves its score too."""
    monitor = Monitor(MonitoringConfig())
    drift = Scenario(name="text-model-topic-mix", n_events=16_000, onset=10_000, magnitude=0.5, model_id="drift")
    observed = [PredictionEvent.model_validate(e) for c in generate(drift, 2_000) for e in c.prediction_events()]
    alerts = monitor.observe(observed, now=0.0).alerts
    alerts += monitor.observe(events("text-model-stable", 16_000, model_id="stable"), now=0.0).alerts
    assert {(a.model_id, a.kind, a.subject) for a in alerts} == {
        ("drift", *k) for k in drift.ground_truth().expected_alerts
    }
    assert drift.ground_truth().expected_alerts == {("data_drift", EMBEDDING_FEATURE), ("prediction_drift", "score")}


def test_the_monitor_service_runs_the_first_mmd_window_off_the_event_loop_with_the_same_p_values():
    """The first MMD window computes the reference's kernel spectrum (seconds): the service runs the
    core in a thread, so its event loop keeps turning (heartbeats, timers; measured: longest gap
    0.15 s in 17.8 s, on the loop one gap of the whole 20.9 s); the MMD p-value after each chunk (the
    first window's last early look, then its whole window) is bit-identical to the core's own."""
    from driftwarden.monitor.service import MonitorService
    from driftwarden.settings import Settings

    stream = events("text-model-stable", 8_000)
    chunks = [stream[i : i + 1_000] for i in range(0, len(stream), 1_000)]  # the reference: 5 chunks
    direct = Monitor()
    expected = []
    for chunk in chunks:
        direct.observe(chunk, now=0.0)
        expected.append(mmd_p_value(direct))
    service = MonitorService(Settings(kafka_bootstrap="127.0.0.1:1"))

    async def observe_while_ticking() -> tuple[list[float | None], float, float]:
        ticks = [time.monotonic()]

        async def tick() -> None:
            while True:
                await asyncio.sleep(0.01)
                ticks.append(time.monotonic())

        ticker = asyncio.create_task(tick())
        p_values = []
        for chunk in chunks:
            await service.observe(list(chunk), [], 0.0)
            p_values.append(mmd_p_value(service.core))
        took = time.monotonic() - ticks[0]
        ticker.cancel()
        return p_values, float(np.diff([*ticks, time.monotonic()]).max()), took

    p_values, longest_gap, took = asyncio.run(observe_while_ticking())
    assert p_values == expected and None not in expected[5:]  # the early looks and the first window
    assert longest_gap < took / 4, (longest_gap, took)  # on the loop, one gap would hold the whole spectrum


def mmd_of(monitor: Monitor) -> EmbeddingDriftDetector:
    (detector,) = [d for d in monitor.models["m"].versions["1"].window_detectors if d.name == "mmd"]
    assert isinstance(detector, EmbeddingDriftDetector)
    return detector


def mmd_p_value(monitor: Monitor) -> float | None:
    """The MMD test's last p-value (None before the reference is built or before its first window)."""
    return mmd_of(monitor).p_value if monitor.models["m"].versions["1"].profile is not None else None


def test_the_monitor_service_runs_a_quick_batch_on_the_event_loop_and_the_rest_in_a_thread():
    """Single events of a tabular model past its reference take a few ms in the core: the service runs them on
    the event loop (in a thread, Faust's fetch loop beside them cost the worker a fifth to a quarter of its
    single-event rate: docs/benchmarks.md); a reference's build, more than ``QUICK_EVENTS`` events and a model with
    embeddings (its MMD windows) go to a thread. Where it runs does not change what the core gives."""
    from driftwarden.core.monitor import QUICK_EVENTS
    from driftwarden.monitor.service import MonitorService
    from driftwarden.settings import Settings

    tabular, text = events("stable", 8_000), events("text-model-stable", 5_050, model_id="t")
    service = MonitorService(Settings(kafka_bootstrap="127.0.0.1:1"))
    observe, where = service.core.observe, []

    def recording(predictions, now):  # which thread the core ran each call in
        where.append(threading.get_ident())
        return observe(predictions, now)

    service.core.observe = recording  # type: ignore[method-assign]
    calls = [tabular[:5_000], tabular[5_000:5_500], tabular[5_500 : 5_501 + QUICK_EVENTS], text[:5_000], text[5_000:]]

    async def feed() -> int:
        for chunk in calls:
            await service.observe(list(chunk), [], 0.0)
        return threading.get_ident()

    loop_thread = asyncio.run(feed())
    assert [w == loop_thread for w in where] == [False, True, False, False, False]
    direct = Monitor()
    for chunk in calls:
        direct.observe(list(chunk), 0.0)
    assert service.core.export(["demo-model", "t"]) == direct.export(["demo-model", "t"])
