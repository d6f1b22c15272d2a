"""Trainer core and registry: train, parity, champion comparison, idempotency, integrity (no Kafka)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from driftwarden.core.events import RetrainCommand, TrainingWindow
from driftwarden.registry.store import ModelRegistry, RegistryError
from driftwarden.trainer.model import OnnxModel, TrainerConfig
from driftwarden.trainer.workflow import retrain
from driftwarden_load.scenarios import Scenario, generate


def examples(name: str, n: int, onset: int = 0, seed: int = 0) -> list[dict]:
    scenario = Scenario(name=name, n_events=n, onset=onset, seed=seed)
    return [example for chunk in generate(scenario) for example in chunk.training_examples()]


def command(key: str = "k") -> RetrainCommand:
    return RetrainCommand(
        command_id=str(uuid.uuid5(uuid.NAMESPACE_URL, key)),
        idempotency_key=key,
        model_id="demo-model",
        model_version="1",
        ts=1.0,
        reasons=["0123456789abcdef"],
        window=TrainingWindow(start_ts=0, end_ts=1),
    )


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry")


@pytest.fixture
def champion(registry) -> str:
    """v1: trained on the original concept."""
    published = retrain(command("bootstrap"), examples("stable", 4_000, seed=1), registry, TrainerConfig())
    assert (published.status, published.model_version) == ("promoted", "1")
    return published.model_version


def test_after_a_concept_drift_the_challenger_wins_and_becomes_champion(registry, champion):
    drifted = examples("concept-drift", 6_000, onset=0, seed=2)  # all after the drift
    published = retrain(command("after-drift"), drifted, registry, TrainerConfig())
    assert published.status == "promoted" and published.model_version == "2" and published.parent_version == "1"
    assert published.metrics["accuracy"] > published.metrics["champion_accuracy"] + 0.2
    assert published.metrics["parity_error"] < 1e-4
    manifest = registry.champion("demo-model")
    assert manifest.version == "2" and manifest.sha256 == published.sha256
    assert manifest.numeric_features[0] == "num_00" and manifest.categorical_features == [
        "cat_00", "cat_01", "cat_02", "cat_03",
    ]  # fmt: skip
    assert published.artifact_uri.startswith("file://") and published.artifact_uri.endswith("/2/model.onnx")


def test_a_worse_challenger_is_rejected_and_the_champion_stays(registry, champion):
    noisy = examples("stable", 4_000, seed=3)
    rng = np.random.default_rng(0)
    for example in noisy:  # labels unrelated to the features: the challenger learns nothing
        example["label"] = int(rng.integers(0, 2))
    published = retrain(command("noise"), noisy, registry, TrainerConfig())
    assert published.status == "rejected"
    assert "below the required" in published.reason
    assert registry.champion("demo-model").version == "1"
    assert [m.status for m in registry.manifests("demo-model")] == ["promoted", "rejected"]


def test_a_duplicate_command_trains_nothing_new(registry, champion):
    data = examples("concept-drift", 4_000, onset=0, seed=4)
    first = retrain(command("twice"), data, registry, TrainerConfig())
    second = retrain(command("twice"), data, registry, TrainerConfig())
    assert (second.model_version, second.sha256, second.status) == (first.model_version, first.sha256, first.status)
    assert registry.versions("demo-model") == ["1", "2"]


def test_a_replayed_command_completes_a_promotion_cut_short_and_never_undoes_a_later_one(registry, champion):
    """A trainer killed between registering a promoted version and moving the champion pointer: the
    replayed command (its offset was never committed) makes that version champion."""
    data = examples("concept-drift", 4_000, onset=0, seed=4)
    first = retrain(command("cut-short"), data, registry, TrainerConfig())
    assert (first.status, first.model_version) == ("promoted", "2")
    registry.set_champion("demo-model", "1")  # where the kill left it
    assert retrain(command("cut-short"), data, registry, TrainerConfig()).model_version == "2"
    assert registry.champion("demo-model").version == "2"
    registry.save("demo-model", b"v3", status="promoted", command_id=None)
    retrain(command("cut-short"), data, registry, TrainerConfig())  # replayed late: v3 stays
    assert registry.champion("demo-model").version == "3"


def test_too_few_examples_is_a_rejection_with_a_reason(registry):
    published = retrain(command("tiny"), examples("stable", 100), registry, TrainerConfig())
    assert published.status == "rejected" and "need at least 500" in published.reason
    assert registry.versions("demo-model") == []


def test_a_parity_failure_rejects_the_model(registry):
    strict = TrainerConfig(parity_tolerance=1e-15)
    published = retrain(command("parity"), examples("stable", 2_000), registry, strict)
    assert published.status == "rejected" and "parity error" in published.reason
    assert registry.champion("demo-model") is None


def test_training_is_deterministic(tmp_path):
    from driftwarden.trainer.model import Dataset

    data = examples("stable", 2_000)
    registries = [ModelRegistry(tmp_path / "a"), ModelRegistry(tmp_path / "b")]
    results = [retrain(command("a"), data, r, TrainerConfig()) for r in registries]
    drop = {"train_seconds"}
    assert {k: v for k, v in results[0].metrics.items() if k not in drop} == {
        k: v for k, v in results[1].metrics.items() if k not in drop
    }
    frame = Dataset.from_examples(examples("stable", 200, seed=5)).frame
    outputs = [OnnxModel(r.load("demo-model", "1")).predict(frame)[1] for r in registries]
    assert np.array_equal(outputs[0], outputs[1])


def test_gradient_boosting_family_exports_too(registry):
    published = retrain(
        command("gb"), examples("stable", 2_000), registry, TrainerConfig(model_family="gradient_boosting")
    )
    assert published.status == "promoted" and published.metrics["parity_error"] < 1e-4


def test_registry_refuses_a_corrupt_model_and_bad_ids(registry, champion):
    path = registry.root / "demo-model" / "1" / "model.onnx"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(RegistryError, match="does not match the sha256"):
        registry.load("demo-model", "1")
    with pytest.raises(RegistryError, match="no version"):
        registry.load("demo-model", "9")
    with pytest.raises(RegistryError, match="invalid model id"):
        registry.versions("../etc")
    assert not list((registry.root / "demo-model").glob(".staging-*"))


def test_onnx_model_scores_raw_feature_values(registry, champion):
    from driftwarden.trainer.model import Dataset

    model = OnnxModel(registry.load("demo-model", champion))
    frame = Dataset.from_examples(examples("stable", 50, seed=9)).frame
    labels, probabilities = model.predict(frame)
    assert set(labels) <= {"0", "1"} and probabilities.shape == (50, 2)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("rollout", ["canary", "shadow"])
def test_a_staged_rollout_registers_the_winner_without_making_it_champion(registry, champion, rollout):
    config = TrainerConfig(rollout=rollout, canary_fraction=0.25)
    published = retrain(command(rollout), examples("concept-drift", 4_000, onset=0, seed=6), registry, config)
    assert published.status == rollout and published.model_version == "2"
    assert published.traffic_fraction == (0.25 if rollout == "canary" else None)
    assert registry.champion("demo-model").version == "1"


@pytest.mark.parametrize("name", ["a.b", "a-b", "a b", "1st"])
def test_feature_names_that_are_not_identifiers_train_and_score_by_their_own_name(registry, name):
    data = [e | {"features": e["features"] | {name: float(i % 7)}} for i, e in enumerate(examples("stable", 1_000))]
    published = retrain(command(name), data, registry, TrainerConfig())
    assert published.status == "promoted", published.reason
    model = OnnxModel(registry.load("demo-model", "1"))
    assert name in model.numeric
    labels, _ = model.predict(
        {n: [d["features"].get(n, 0.0) for d in data[:5]] for n in model.numeric + model.categorical}
    )
    assert len(labels) == 5


def test_examples_with_a_number_beyond_float32_are_left_out_and_counted(registry):
    data = examples("stable", 1_000)
    for example in data[:10]:
        example["features"]["num_00"] = 1e39
    published = retrain(command("overflow"), data, registry, TrainerConfig())
    assert published.status == "promoted" and published.metrics["dropped_examples"] == 10
    assert published.metrics["train_examples"] + published.metrics["holdout_examples"] == 990


def test_a_window_of_only_overflowing_numbers_is_rejected_with_the_reason(registry):
    data = [e | {"features": e["features"] | {"num_00": -1e300}} for e in examples("stable", 600)]
    published = retrain(command("all-overflow"), data, registry, TrainerConfig())
    assert published.status == "rejected" and "600 more left out: a number beyond float32" in published.reason


@pytest.mark.parametrize("content", [b"{not json", b'{"model_id": "demo-model"}', b"\xff\xfe"])
def test_a_corrupt_champion_manifest_is_refused_and_a_challenger_still_gets_a_verdict(registry, champion, content):
    (registry.root / "demo-model" / "1" / "manifest.json").write_bytes(content)
    with pytest.raises(RegistryError, match="corrupt"):
        registry.champion("demo-model")
    published = retrain(command("after-corruption"), examples("stable", 1_000, seed=3), registry, TrainerConfig())
    assert (published.status, published.model_version, published.reason) == ("promoted", "2", "no champion yet")
    assert "champion_accuracy" not in published.metrics


def test_a_manifest_for_another_version_is_refused(registry, champion):
    (registry.root / "demo-model" / "2").mkdir()
    source = registry.root / "demo-model" / "1" / "manifest.json"
    (registry.root / "demo-model" / "2" / "manifest.json").write_bytes(source.read_bytes())
    with pytest.raises(RegistryError, match="describes demo-model v1"):
        registry.manifest("demo-model", "2")
    with pytest.raises(RegistryError, match="invalid version"):
        registry.manifest("demo-model", "../1")
