"""The detection benchmark's streams, scoring and command (tiny sizes; the full run is for the docs)."""

from __future__ import annotations

import sys

import numpy as np
import orjson
import pytest

from driftwarden.bench.detection import DRIFTWARDEN, DRIFTWARDEN_EMBEDDING, Row, Settings, run_feature_stream, targets
from driftwarden.bench.detection_streams import concept_stream, feature_stream
from driftwarden.bench.evaluation import Drift, combine, score_alarms
from driftwarden.cli import main
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


def test_an_embeddings_topic_mix_change_is_found_by_its_detectors_and_its_stable_twin_stays_quiet():
    settings = Settings(shift_events=14_000, shift_onset=8_000, stable_events=30_000)
    shifted = run_feature_stream("embedding-topic-mix", 3, settings).scores
    assert (shifted[DRIFTWARDEN_EMBEDDING].detected, shifted[DRIFTWARDEN_EMBEDDING].false_alarms) == (1, 0)
    stable = run_feature_stream("embedding-stable", 3, settings).scores
    assert (stable[DRIFTWARDEN].alarms, stable[DRIFTWARDEN_EMBEDDING].alarms) == (0, 0)


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
