"""Every detector, and the monitor as a whole, survives a trip through bytes exactly: after restoring,
it behaves as if it had never stopped (the basis of restart-safe checkpoints)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from driftwarden.core.columnar import PredictionColumns
from driftwarden.core.config import ModelMonitorConfig
from driftwarden.core.decoding import PREDICTIONS
from driftwarden.core.detectors import RankCusumDetector, WindowDetector, window_detectors
from driftwarden.core.events import LabelEvent, PredictionEvent
from driftwarden.core.joins import Joined, LabelJoiner
from driftwarden.core.monitor import Monitor
from driftwarden.core.performance import PerformanceMonitor
from driftwarden.core.profile import build_profile, schema_of, to_columns
from driftwarden.core.state import StateError
from driftwarden_load.scenarios import Scenario, generate


def scenario_events(name: str, n: int, seed: int = 0, **kw) -> list[PredictionEvent]:
    return [
        PredictionEvent.model_validate(e)
        for chunk in generate(Scenario(name=name, n_events=n, onset=n // 2, seed=seed, **kw))
        for e in chunk.prediction_events()
    ]


def rank_cusum(seed: int = 0, discrete: bool = False) -> RankCusumDetector:
    rng = np.random.default_rng(seed)
    reference = rng.poisson(2.0, 2_000) if discrete else rng.normal(0, 1, 2_000)
    return RankCusumDetector(np.quantile(reference, np.linspace(0, 1, 500)), 2_000, arl=1e5, seed=seed)


def test_rank_cusum_detector_round_trips_mid_stream():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0, 1, 3_000), rng.normal(1, 1, 3_000)]).tolist()
    original = rank_cusum()
    for x in values[:2_000]:
        original.update(x)
    restored = RankCusumDetector.from_bytes(original.to_bytes())
    outputs = {"original": [], "restored": []}
    for label, detector in (("original", original), ("restored", restored)):
        detector.update_many(values[2_000:], lambda i, d=detector, out=outputs[label]: out.append((i, d.evidence())))
    assert outputs["original"] and outputs["original"] == outputs["restored"]


def test_update_many_matches_update_one_by_one():
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(0, 1, 3_000), rng.normal(2, 1, 1_000)]).tolist()
    one, many = rank_cusum(), rank_cusum()
    hits_one = []
    for i, x in enumerate(values):
        one.update(x)
        if one.drift_detected:
            hits_one.append(i)
    hits_many: list[int] = []
    many.update_many(values, hits_many.append)
    assert hits_one and hits_one == hits_many
    assert one.evidence() == many.evidence()


PROFILE = build_profile("m", "1", scenario_events("stable", 3_000))
WINDOWS = [
    to_columns(scenario_events(name, 2_000, seed=seed), schema_of(PROFILE))
    for name, seed in (("stable", 1), ("abrupt-shift", 2), ("categorical-shift", 3))
]
WINDOW_DETECTORS = window_detectors(PROFILE, ModelMonitorConfig(latency_p99_budget_ms=10.0, cost_per_1k_budget=1.0))


@pytest.mark.parametrize("detector", WINDOW_DETECTORS, ids=lambda d: f"{type(d).__name__}:{d.subject}")
def test_every_window_detector_round_trips(detector: WindowDetector):
    detector.update(WINDOWS[0])
    restored = type(detector).from_bytes(detector.to_bytes())
    for window in WINDOWS[1:]:
        assert detector.update(window) == restored.update(window)
        assert (detector.drift_detected, detector.p_value, detector.evidence()) == (
            restored.drift_detected,
            restored.p_value,
            restored.evidence(),
        )


def test_performance_monitor_and_label_joiner_round_trip():
    scenario = Scenario(name="concept-drift", n_events=1_000, onset=500)
    events = scenario_events("concept-drift", 1_000)
    labels = [label for chunk in generate(scenario) for label in chunk.label_events()]
    performance = PerformanceMonitor("classification", "1", ModelMonitorConfig(label_window=100))
    joiner = LabelJoiner(ttl_s=1e9, max_pending=10_000)
    for e in events:
        joiner.add_prediction(e.event_id, e.ts, e.model_version, e.prediction, max(e.scores.values()), ())
    first = [joiner.add_label(label["event_id"], label["label"], label["ts"]) for label in labels[:400]]
    performance.update([j for j in first if j])
    copies = (PerformanceMonitor.from_bytes(performance.to_bytes()), LabelJoiner.from_bytes(joiner.to_bytes()))
    results = []
    for perf, join in ((performance, joiner), copies):
        rest = [join.add_label(label["event_id"], label["label"], label["ts"]) for label in labels[400:]]
        findings = perf.update([j for j in rest if j])
        results.append(([(f.kind, f.subject, f.detector, f.drifted, f.evidence) for f, _ in findings], join.counts()))
    assert results[0][0] and results[0] == results[1]


def test_monitor_export_and_restore_continue_identically():
    events = scenario_events("abrupt-shift", 20_000)
    labels = [LabelEvent(event_id=e.event_id, model_id=e.model_id, ts=e.ts, label=e.prediction) for e in events]
    original = Monitor()
    for i in range(0, 8_000, 500):
        original.observe(events[i : i + 500], now=1.0)
        original.observe_labels(labels[i : i + 400], now=1.0)
    restored = Monitor()
    restored.restore(original.export(["demo-model"]))
    outputs = []
    for monitor in (original, restored):
        alerts = []
        for i in range(8_000, 20_000, 500):
            alerts += monitor.observe(events[i : i + 500], now=1.0).alerts
            alerts += monitor.observe_labels(labels[i : i + 400], now=1.0).alerts
        outputs.append(([a.alert_id for a in alerts], monitor.status("demo-model", 0).model_dump(exclude={"ts"})))
    assert outputs[0][0] and outputs[0] == outputs[1]


def test_a_columnar_reference_checkpointed_while_collected_is_written_as_columns_and_continues_identically():
    """A reference that comes as columnar batches is written as one ``prediction-columns.v1`` document (no
    events made); restored mid-collection, the monitor goes on exactly as one never checkpointed; a forged
    document is refused."""
    scenario = Scenario(name="abrupt-shift", n_events=9_000, onset=7_000, drift_features=("num_04",))
    batches = [PredictionColumns.concat(PREDICTIONS.decode(orjson.dumps(chunk.prediction_columns())).columns)
               for chunk in generate(scenario, chunk_size=500)]  # fmt: skip
    checkpointed, never = Monitor(), Monitor()
    for batch in batches[:6]:  # 3,000 of the reference's 5,000
        for monitor in (checkpointed, never):
            monitor.observe([batch], now=1.0)
    raw = checkpointed.export([scenario.model_id])
    version = orjson.loads(raw)["state"]["models"][scenario.model_id]["versions"]["1"]
    assert version["reference_events"] == [] and len(orjson.loads(version["reference_columns"])["event_id"]) == 3_000
    restored = Monitor()
    restored.restore(raw)
    alerts = {id(m): [a.alert_id for b in batches[6:] for a in m.observe([b], now=1.0).alerts]
              for m in (checkpointed, restored, never)}  # fmt: skip
    assert alerts[id(never)] and alerts[id(checkpointed)] == alerts[id(restored)] == alerts[id(never)]
    assert restored.export([scenario.model_id]) == never.export([scenario.model_id])
    document = orjson.loads(raw)
    forged = orjson.loads(version["reference_columns"]) | {"ts": ["yesterday"] * 3_000}
    document["state"]["models"][scenario.model_id]["versions"]["1"]["reference_columns"] = orjson.dumps(forged).decode()
    with pytest.raises(StateError, match="reference_columns: not a valid columnar batch"):
        Monitor().restore(orjson.dumps(document))


@pytest.mark.parametrize("discrete", [False, True])
def test_update_many_matches_update_in_any_split_with_gaps_and_repeated_detections(discrete):
    rng = np.random.default_rng(2)
    if discrete:  # ties: the randomized ranks must not depend on the batching either
        values = np.concatenate([rng.poisson(2.0, 2_000), rng.poisson(3.0, 1_500), rng.poisson(1.0, 1_500)]) * 1.0
    else:
        values = np.concatenate([rng.normal(0, 1, 2_000), rng.normal(3, 1, 1_500), rng.normal(-2, 1, 1_500)])
    values[rng.choice(len(values), 300, replace=False)] = np.nan
    one = rank_cusum(discrete=discrete)
    hits_one, evidence_one = [], []
    for i, x in enumerate(values.tolist()):
        if x == x:
            one.update(x)
            if one.drift_detected:
                hits_one.append(i)
                evidence_one.append(one.evidence())
    many = rank_cusum(discrete=discrete)
    hits_many, evidence_many = [], []
    for lo, hi in ((0, 700), (700, 2_001), (2_001, 2_002), (2_002, 5_000)):  # uneven batches, as replays give
        many.update_many(values[lo:hi].tolist(), lambda i, lo=lo: (hits_many.append(lo + i),
                                                                   evidence_many.append(many.evidence())))  # fmt: skip
    assert len(hits_one) >= 2 and hits_one == hits_many
    assert evidence_one == evidence_many
    assert (many.n_seen, list(many._recent)) == (one.n_seen, list(one._recent))


def test_update_many_in_one_call_matches_update_through_repeated_alarms_and_quiet_stretches():
    """One column holding a persisting change (an alarm every few dozen values), a long quiet stretch
    (``update_many`` looks ahead over a horizon that restarts small after each alarm and doubles), then
    the change again: the same alarms, evidence and state as one value at a time."""
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(2, 1, 1_500), rng.normal(0, 1, 6_000), rng.normal(-2, 1, 700)])
    one, many = rank_cusum(), rank_cusum()
    hits_one, evidence_one = [], []
    for i, x in enumerate(values.tolist()):
        one.update(x)
        if one.drift_detected:
            hits_one.append(i)
            evidence_one.append(one.evidence())
    hits_many, evidence_many = [], []
    many.update_many(values, lambda i: (hits_many.append(i), evidence_many.append(many.evidence())))
    assert len(hits_one) > 20 and hits_one[-1] > 7_500 and hits_one == hits_many
    assert evidence_one == evidence_many
    assert (many.n_seen, list(many._recent), many.alarm) == (one.n_seen, list(one._recent), one.alarm)
    assert np.allclose(many.cusums, one.cusums, rtol=0, atol=1e-9) and list(many.run_starts) == list(one.run_starts)


def test_a_full_joiner_evicts_its_oldest_and_its_records_keep_text_predictions_versions_and_segments():
    """75,000 predictions through a joiner bounded at 1,000: the oldest go (1 % at once), the dict is
    compacted along the way, and what remains joins with its exact fields, before and after a checkpoint."""
    joiner = LabelJoiner(ttl_s=1e9, max_pending=1_000)
    segments: list[tuple[tuple[str, str], ...]] = [(), (("region", "eu"),), (("region", "us"), ("tier", "gold"))]

    def fields(i: int) -> tuple:
        prediction = ("no", "yes")[i % 2] if i % 5 else 0.25 * i
        return f"e{i}", float(i), str(1 + i % 2), prediction, i / 80_000, segments[i % 3]

    for i in range(75_000):
        assert joiner.add_prediction(*fields(i)) is None
        assert len(joiner.predictions) <= 1_000
    counts = joiner.counts()
    assert counts["evicted"] == 75_000 - counts["pending_predictions"] and counts["pending_predictions"] > 980
    # (version, segment, "no" / "yes" / None for a number), each once: the version and the text go together
    assert len(joiner.kinds) == len(set(joiner.kinds)) == 4 * 3
    restored = LabelJoiner.from_bytes(joiner.to_bytes())
    for join in (joiner, restored):
        assert join.add_label("e0", "yes", 1.0) is None  # evicted long ago: an early label now
        for i in range(74_020, 75_000):  # the newest 980 (990 to 1,000 are pending)
            event_id, ts, version, prediction, confidence, segment = fields(i)
            assert join.add_label(event_id, "yes", ts + 1) == Joined(
                event_id, ts, version, prediction, "yes", confidence, segment
            )


@pytest.mark.parametrize("seed", range(8))
def test_a_columnar_batch_joins_as_its_rows_added_one_at_a_time(seed):
    """``LabelJoiner.add_predictions`` (a columnar batch) against ``add_prediction`` per row: the same joins and
    the same state (packed records, kinds, counters), batches that wait whole (packed at once) or not (labels
    come early, ids repeat, the joiner fills and evicts), numbers and texts, segments or none."""
    rng = np.random.default_rng([5, seed])
    batch, single = LabelJoiner(ttl_s=50.0, max_pending=int(rng.choice([40, 400]))), LabelJoiner(50.0, 0)
    single.max_pending = batch.max_pending
    next_id, ts = 0, 0.0
    for _ in range(30):
        n = int(rng.integers(1, 60))
        ids = [f"e{next_id + i}" if rng.random() < 0.9 else f"e{rng.integers(0, next_id + 1)}" for i in range(n)]
        next_id += n
        times = ts + np.arange(n, dtype=float)
        ts += n
        predictions = [str(rng.choice(["a", "b"])) if seed % 2 else int(rng.integers(0, 2)) for _ in range(n)]
        confidence = rng.random(n) if rng.random() < 0.7 else np.full(n, np.nan)
        segments = [(("country", str(rng.choice(["NL", "FR"]))),) if seed % 4 < 2 else () for _ in range(n)]
        rows = zip(ids, times.tolist(), predictions, confidence.tolist(), segments, strict=True)
        expected = [j for i, t, p, c, s in rows if (j := single.add_prediction(i, t, "1", p, c, s)) is not None]
        joined = batch.add_predictions(ids, times, "1", predictions, confidence, segments)
        assert repr(joined) == repr(expected)  # (repr: a NaN confidence is equal to itself there)
        for _ in range(int(rng.integers(0, 8))):  # labels: late, early or repeated
            label_id, label_ts = f"e{rng.integers(0, next_id + 20)}", ts + float(rng.random())
            assert repr(batch.add_label(label_id, 1.0, label_ts)) == repr(single.add_label(label_id, 1.0, label_ts))
        batch.expire(ts), single.expire(ts)
        assert batch.state() == single.state()
        assert batch.predictions == single.predictions
