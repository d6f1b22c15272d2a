"""The detection benchmark's streams, scoring and command (tiny sizes; the full run is for the docs)."""

from __future__ import annotations

import sys

import numpy as np
import orjson
import pytest

from driftwarden.bench.detection import DRIFTWARDEN, DRIFTWARDEN_EMBEDDING, Row, Settings, run_feature_stream, targets
from driftwarden.bench.detection_corpus import (
    STREAMING,
    WINDOW_TESTS,
    CorpusSettings,
    _score,
    monitor_windows,
    one_feature_profile,
)
from driftwarden.bench.detection_streams import concept_stream, feature_stream
from driftwarden.bench.evaluation import Drift, combine, score_alarms
from driftwarden.cli import main
from driftwarden.core.columnar import PredictionColumns
from driftwarden.core.config import ModelMonitorConfig
from driftwarden.core.monitor import DRIFT_KINDS, ModelMonitor
from driftwarden_load.scenarios import EMBEDDING_FEATURE

# River's three STAGGER concepts (documented in river.datasets.synth.STAGGER).
STAGGER_RULES = (
    lambda x: int(x["size"] == 0 and x["color"] == 0),
    lambda x: int(x["color"] == 2 or x["shape"] == 0),
    lambda x: int(x["size"] in (1, 2)),
)


def test_an_abrupt_concept_stream_switches_concept_exactly_at_each_drift():
    stream = concept_stream("STAGGER", "abrupt", seed=4, n_concepts=3, concept_length=600, width=100)
    assert [(d.start, d.width) for d in stream.drifts] == [(600, 1), (1200, 1)]
    # STAGGER's three functions label the same features differently: each stretch follows its own.
    for k, (lo, hi) in enumerate([(0, 600), (600, 1200), (1200, 1800)]):
        assert all(STAGGER_RULES[k](x) == y for x, y in stream.samples[lo:hi]), f"concept {k}"


def test_a_gradual_change_mixes_old_and_new_concepts_over_its_width():
    stream = concept_stream("STAGGER", "gradual", seed=2, n_concepts=2, concept_length=4_000, width=2_000)
    (drift,) = stream.drifts
    assert (drift.start, drift.width) == (3_000, 2_000)
    old_rule, new_rule = STAGGER_RULES[:2]

    def new_share(lo: int, hi: int) -> float:
        # Only samples where the two concepts disagree tell which one produced them.
        telling = [(x, y) for x, y in stream.samples[lo:hi] if new_rule(x) != old_rule(x)]
        return float(np.mean([new_rule(x) == y for x, y in telling]))

    assert new_share(0, 3_000) == 0.0
    assert 0.05 < new_share(3_000, 3_500) < new_share(4_500, 5_000) < 0.95
    assert new_share(5_000, 8_000) == 1.0


def test_scores_pool_over_seeds_and_keep_delays():
    a = score_alarms([Drift(100)], [150], n_events=1_000, tolerance=200)
    b = score_alarms([Drift(100)], [50, 900], n_events=1_000, tolerance=200)
    total = combine([a, b])
    assert (total.drifts, total.detected, total.false_alarms, total.delays) == (2, 1, 2, [50])
    assert total.stable_events == 2 * (1_000 - 201)
    assert total.missed_rate == 0.5


def test_a_variance_stream_changes_the_spread_not_the_mean():
    stream = feature_stream("variance-1.5x", seed=1, n_events=20_000, onset=10_000)
    values = np.concatenate([c.numeric[:, 0] for c in stream.chunks])
    before, after = values[:10_000], values[10_000:]
    assert after.std() / before.std() == pytest.approx(1.5, rel=0.05)
    assert abs(after.mean() - before.mean()) < 0.1 * before.std()


def test_driftwarden_finds_a_1_sigma_shift_quickly_and_stays_quiet_on_a_stable_stream():
    settings = Settings(shift_events=14_000, shift_onset=8_000, stable_events=30_000)
    shifted = run_feature_stream("mean-1σ", 3, settings).scores[DRIFTWARDEN]
    assert (shifted.detected, shifted.false_alarms) == (1, 0)
    assert shifted.delays[0] < 500
    stable = run_feature_stream("stable", 3, settings).scores[DRIFTWARDEN]
    assert (stable.alarms, stable.false_alarms, stable.stable_events) == (0, 0, 30_000)


@pytest.mark.slow
def test_an_embeddings_topic_mix_change_is_found_by_its_detectors_and_its_stable_twin_stays_quiet():
    settings = Settings(shift_events=14_000, shift_onset=8_000, stable_events=30_000)
    shifted = run_feature_stream("embedding-topic-mix", 3, settings).scores
    assert (shifted[DRIFTWARDEN_EMBEDDING].detected, shifted[DRIFTWARDEN_EMBEDDING].false_alarms) == (1, 0)
    stable = run_feature_stream("embedding-stable", 3, settings).scores
    assert (stable[DRIFTWARDEN].alarms, stable[DRIFTWARDEN_EMBEDDING].alarms) == (0, 0)


@pytest.mark.slow
def test_the_text_models_topic_mix_change_is_found_and_its_stable_twin_stays_quiet():
    """The text model's events carry the embedding alone; the change moves its score too."""
    settings = Settings(shift_events=14_000, shift_onset=8_000, stable_events=30_000)
    stream = feature_stream("text-model-topic-mix", seed=3, n_events=14_000, onset=8_000)
    assert list(stream.chunks[0].prediction_events()[0]["features"]) == [EMBEDDING_FEATURE]
    shifted = run_feature_stream("text-model-topic-mix", 3, settings)
    assert (shifted.scores[DRIFTWARDEN_EMBEDDING].detected, shifted.scores[DRIFTWARDEN].false_alarms) == (1, 0)
    assert shifted.scores["ADWIN"].alarms == 0 and list(shifted.signal) == ["score"]  # no numeric feature to watch
    stable = run_feature_stream("text-model-stable", 3, settings).scores
    assert (stable[DRIFTWARDEN].alarms, stable[DRIFTWARDEN_EMBEDDING].alarms) == (0, 0)


def test_the_targets_judge_the_text_models_embedding_detectors_and_its_whole_model_apart():
    quiet = score_alarms([], [], n_events=1_000_000, tolerance=5_000)
    noisy = score_alarms([], [612_935], n_events=1_000_000, tolerance=5_000)
    found = score_alarms([Drift(20_000, lasts_until=40_000)], [20_378], n_events=40_000, tolerance=5_000)
    rows = [
        Row("text-model-topic-mix", DRIFTWARDEN, found),
        Row("text-model-stable", DRIFTWARDEN, noisy),
        Row("text-model-stable", DRIFTWARDEN_EMBEDDING, quiet),
    ]
    assert targets(rows) == [
        ("text-model-topic-mix: the topic-mix change detected in every seed", True, "0 missed of 1"),
        ("text-model-stable: no false alarm of the embedding detectors", True, "0 in 1,000,000 events"),
        ("text-model-stable: no false alarm of the whole model", False, "1 in 1,000,000 events"),
    ]


@pytest.mark.slow
def test_the_command_writes_tables_json_and_one_plot_per_stream(monkeypatch, capsys, tmp_path):
    args = [
        "--out",
        str(tmp_path),
        "--seeds",
        "1",
        "--concepts",
        "2",
        "--concept-length",
        "500",
        "--gradual-width",
        "100",
        "--shift-seeds",
        "1",
        "--shift-events",
        "12000",
        "--stable-events",
        "10000",
        "--parts",
        "concepts,features",
    ]  # fmt: skip (the shape corpus has its own smoke test: test_bench.py)
    monkeypatch.setattr(sys, "argv", ["driftwarden", "bench", "detection", *args])
    main()
    out = capsys.readouterr().out
    assert "| SEA/abrupt | driftwarden (default) |" in out and "| stable | never retrain |" in out
    results = orjson.loads((tmp_path / "results.json").read_bytes())
    detectors = {r["detector"] for r in results["results"]}
    assert {DRIFTWARDEN, "ADWIN", "PageHinkley", "DDM", "EDDM", "HDDM_A", "HDDM_W", "KSWIN"} <= detectors
    assert {"retrain every 1,000", "never retrain"} <= detectors
    streams = {r["stream"] for r in results["results"]}
    assert len(streams) == 12 + 10  # concept streams, feature streams (four of them with an embedding)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(s.replace("/", "-") + ".png" for s in streams)
    report = (tmp_path / "results.md").read_text()
    assert all(f"| {r['stream']} | {r['detector']} |" in report for r in results["results"])
    assert "| driftwarden (default) |" in report.split("\n\n")[0]  # the pooled summary comes first


def test_the_command_rejects_a_gradual_change_longer_than_a_concept(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["driftwarden", "bench", "detection", "--concept-length", "500",
                                      "--gradual-width", "900"])  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().startswith("driftwarden: error:")


def _first_alert(values: np.ndarray, categorical: bool, reference: np.ndarray) -> tuple[int, str] | None:
    """The first drift alert of a real one-feature ModelMonitor on ``values``: (index, detector)."""
    profile = one_feature_profile(reference, categorical)
    monitor = ModelMonitor("shapes", "1", ModelMonitorConfig(), profile)
    feature = [str(int(v)) for v in values] if categorical else values
    batch = PredictionColumns("shapes", "1", [str(i) for i in range(len(values))], np.arange(len(values), dtype=float),
                              {"x": feature}, [0.0] * len(values))  # fmt: skip
    alerts = [a for a in monitor.observe(batch, now=0.0).alerts if a.state == "firing" and a.kind in DRIFT_KINDS]
    return (int(alerts[0].trigger_event_id or ""), alerts[0].detector) if alerts else None


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_the_shape_corpus_default_set_alarms_first_where_and_as_the_monitor_does(seed):
    # A 0.5σ shift from the first value: the rank CUSUMs (seed 0) or the window tests' early look at
    # 125 values (seeds 1 and 5) fire first; the bench must see what a one-feature monitor raises first.
    rng = np.random.default_rng(seed)
    reference, values = rng.normal(0, 1, 5_000), rng.normal(0.5, 1, 3_000)
    (row,) = [r for r in _score("normal", "location", 0.1, seed, values, 0, CorpusSettings(), reference, False)
              if r.configuration == DRIFTWARDEN]  # fmt: skip
    assert row.delay is not None and row.source is not None
    index, detector = _first_alert(values, False, reference) or (-1, "")
    assert (row.delay - 1, row.source) == (index, "streaming" if detector == "rank_cusum" else "window")
    assert row.source == ("streaming" if seed == 0 else "window")


def test_the_shape_corpus_default_set_of_a_categorical_feature_alarms_first_where_and_as_the_monitor_does():
    # The monitor runs the rank CUSUMs on the feature's frequency ranks too: they fire before the window
    # tests' first early look (125 values), and the bench's default set sees what a one-feature monitor raises.
    rng = np.random.default_rng(3)
    reference = rng.choice(4, size=5_000, p=[0.4, 0.3, 0.2, 0.1]).astype(float)
    values = rng.choice(4, size=3_000, p=[0.1, 0.2, 0.3, 0.4]).astype(float)
    rows = {r.configuration: r for r in _score("categorical", "mixture", 0.1, 3, values, 0, CorpusSettings(),
                                               reference, False)}  # fmt: skip
    default, window, streaming = rows[DRIFTWARDEN], rows[WINDOW_TESTS], rows[STREAMING]
    assert window.delay == 125 and streaming.delay is not None and streaming.delay < 125
    assert (default.delay, default.source) == (streaming.delay, "streaming")
    assert _first_alert(values, True, reference) == (streaming.delay - 1, "rank_cusum")


def test_the_shape_corpus_default_set_counts_the_false_alarms_of_both_its_parts():
    # Every value counted as unchanged (onset at the end): each part's alarms are false alarms.
    rng = np.random.default_rng(0)
    reference, values = rng.normal(0, 1, 5_000), rng.normal(1.5, 1, 4_000)
    rows = {r.configuration: r for r in _score("normal", "location", None, 0, values, len(values), CorpusSettings(),
                                               reference, False)}  # fmt: skip
    streaming, window, default = rows[STREAMING], rows[WINDOW_TESTS], rows[DRIFTWARDEN]
    assert window.false_alarms == 6 and window.critical_false_alarms == 6  # 4 early looks, 2 windows; W ≈ 1.5σ
    assert streaming.false_alarms > 10 and streaming.critical_false_alarms > 0
    assert default.false_alarms == streaming.false_alarms + window.false_alarms
    assert default.critical_false_alarms == streaming.critical_false_alarms + window.critical_false_alarms
    assert default.delay is None and default.source is None


def test_the_shape_corpus_windows_are_the_monitors():
    config = ModelMonitorConfig(window_size=400, early_looks=3, min_window_values=60)
    assert monitor_windows(1_000, config) == [(0, 100), (0, 200), (0, 400), (400, 800)]
    assert monitor_windows(150, config) == [(0, 100)]
