"""Serving without Kafka: which announced versions may be activated, float32 limits, write-back envelopes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from driftwarden.core.columnar import PredictionColumns
from driftwarden.core.decoding import PREDICTIONS
from driftwarden.core.events import ModelPublished
from driftwarden.registry.store import ModelRegistry, RegistryError
from driftwarden.serving.models import ActiveModels, BadRequestError
from driftwarden.serving.writer import envelopes
from driftwarden.trainer.model import TrainerConfig
from driftwarden.trainer.workflow import bootstrap
from driftwarden_load.scenarios import Scenario, generate


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> ModelRegistry:
    registry = ModelRegistry(tmp_path_factory.mktemp("serving") / "registry")
    examples = [e for chunk in generate(Scenario(n_events=1_000, seed=2)) for e in chunk.training_examples()]
    assert bootstrap(registry, "served", examples, TrainerConfig()).status == "promoted"
    return registry


def announcement(registry: ModelRegistry, **changes: object) -> ModelPublished:
    manifest = registry.manifest("served", "1")
    event = ModelPublished(model_id="served", model_version="1", status="promoted", ts=time.time(), metrics={},
                           command_id="00000000-0000-4000-8000-000000000000", sha256=manifest.sha256)  # fmt: skip
    return event.model_copy(update=changes)


def test_an_announced_version_is_loaded_only_with_the_announced_sha256(registry):
    models = ActiveModels(registry)
    assert models.load_announced(announcement(registry)).version == "1"
    with pytest.raises(RegistryError, match="event sha256 does not match"):
        models.load_announced(announcement(registry, sha256="f" * 64))
    with pytest.raises(RegistryError, match="carries no sha256"):
        models.load_announced(announcement(registry, sha256=None))


def test_a_version_whose_manifest_says_rejected_is_never_loaded(registry, tmp_path):
    copy = ModelRegistry(tmp_path / "registry")
    manifest = registry.manifest("served", "1")
    fields = manifest.model_dump(exclude={"model_id", "version", "sha256", "created_ts", "status"})
    copy.save("served", registry.load("served", "1"), status="rejected", **fields)
    with pytest.raises(RegistryError, match="its manifest says 'rejected'"):
        ActiveModels(copy).load_announced(announcement(copy))


def test_numbers_beyond_float32_are_refused_naming_the_instance_and_feature(registry):
    served = ActiveModels(registry).load("served", "1")
    features = next(generate(Scenario(n_events=2, seed=3), chunk_size=2)).prediction_events()[0]["features"]
    assert len(served.frame([{"features": features | {"num_00": 3.4e38}}])["num_00"]) == 1
    for value in (3.5e38, -1e39, float("nan"), float("inf"), 10**400):
        with pytest.raises(BadRequestError, match=r"instances\[0\]\.features\.num_00: .* outside the float32 range"):
            served.frame([{"features": features | {"num_00": value}}])


def test_instances_become_columns_of_the_values_sent_and_the_first_bad_row_is_named(registry):
    served = ActiveModels(registry).load("served", "1")
    rows = [{"features": e["features"]} for e in next(generate(Scenario(n_events=50, seed=4))).prediction_events()]
    frame = served.frame(rows)
    for name in served.onnx.numeric:
        assert frame[name].dtype == np.float64 and frame[name].tolist() == [r["features"][name] for r in rows]
    for name in served.onnx.categorical:
        assert frame[name].tolist() == [r["features"][name] for r in rows]
    numeric, categorical = served.onnx.numeric[1], served.onnx.categorical[0]
    cases = [
        ({numeric: None}, rf"instances\[7\]\.features\.{numeric}: missing \(model v1 needs it\)"),
        ({numeric: "1.5"}, rf"instances\[7\]\.features\.{numeric}: expected a number, got '1.5'"),
        ({numeric: True}, rf"instances\[7\]\.features\.{numeric}: expected a number, got True"),
        ({categorical: None}, rf"instances\[7\]\.features\.{categorical}: missing"),
        ({categorical: ["NL"]}, rf"instances\[7\]\.features\.{categorical}: expected a category, got \['NL'\]"),
    ]
    for change, message in cases:
        bad = [*rows[:7], {"features": rows[7]["features"] | change}, *rows[8:]]
        bad[9] = {"features": rows[9]["features"] | {numeric: None}}  # a later bad row is not the one named
        with pytest.raises(BadRequestError, match=message):
            served.frame(bad)
    with pytest.raises(BadRequestError, match=r"instances\[3\]: expected an object with a 'features' object"):
        served.frame([*rows[:3], {"features": [1.0]}])


def test_a_micro_batch_is_converted_at_once_and_a_bad_request_is_refused_alone(registry):
    served = ActiveModels(registry).load("served", "1")
    rows = [{"features": e["features"]} for e in next(generate(Scenario(n_events=12, seed=5))).prediction_events()]
    requests = [rows[:1], rows[1:6], rows[6:]]
    frame, refusals = served.frames(requests)
    assert all(np.array_equal(frame[name], served.frame(rows)[name]) for name in frame)
    assert refusals == [None] * 3
    numeric = served.onnx.numeric[0]
    bad = [{"features": rows[7]["features"] | {numeric: "x"}}]
    frame, refusals = served.frames([rows[:1], bad, rows[6:]])
    assert [type(r) for r in refusals] == [type(None), BadRequestError, type(None)]
    assert str(refusals[1]).startswith(f"instances[0].features.{numeric}: ")
    assert all(np.array_equal(frame[name], served.frame([*rows[:1], *rows[6:]])[name]) for name in frame)
    frame, refusals = served.frames([bad])
    assert frame == {} and [str(refusal) for refusal in refusals] == [
        f"instances[0].features.{numeric}: expected a number, got 'x'"
    ]


def test_write_back_envelopes_keep_every_prediction_in_order_under_the_limit():
    n = 5_000
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(n)]
    batch = PredictionColumns("m", "1", ids, np.full(n, 1.0), {"x": np.arange(n, dtype=float)}, ["0"] * n,
                              {"0": np.ones(n)})  # fmt: skip
    split = envelopes(batch, max_bytes=50_000)
    assert len(split) > 1 and all(len(envelope) <= 50_000 for envelope in split)
    decoded = [PREDICTIONS.decode(envelope) for envelope in split]
    assert all(d.rejections == [] for d in decoded)
    assert [i for d in decoded for i in d.columns[0].event_ids] == ids
