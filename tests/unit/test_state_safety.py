"""Checkpoint state is data, never code: garbage, pickles and forged states are refused with a clear error."""

from __future__ import annotations

import pickle
from pathlib import Path

import orjson
import pytest

from driftwarden.core.events import LabelEvent, PredictionEvent
from driftwarden.core.monitor import STATE_FORMAT, STATE_VERSION, Monitor
from driftwarden.core.state import StateError
from driftwarden_load.scenarios import Scenario, generate


def busy_monitor() -> Monitor:
    """A monitor in the middle of everything: profile built, windows pending, labels joined, alerts open."""
    scenario = Scenario(name="abrupt-shift", n_events=9_500, onset=6_000, seed=3)
    monitor = Monitor()
    for chunk in generate(scenario):
        monitor.observe([PredictionEvent.model_validate(e) for e in chunk.prediction_events()], now=1.0)
        monitor.observe_labels([LabelEvent.model_validate(x) for x in chunk.label_events()[:300]], now=1.0)
    return monitor


MONITOR = busy_monitor()
RAW = MONITOR.export(["demo-model"])


class Exploit:
    marker: Path

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_the_export_is_versioned_json_and_holds_the_whole_state():
    document = orjson.loads(RAW)
    assert (document["format"], document["version"]) == (STATE_FORMAT, STATE_VERSION)
    model = document["state"]["models"]["demo-model"]
    version = model["versions"]["1"]
    assert version["book"]["open"] and version["pending"] and model["joiner"]["joined"] > 0
    assert b"pickle" not in RAW and not RAW.startswith(b"\x80")


def test_a_pickle_is_refused_and_never_run(tmp_path):
    Exploit.marker = tmp_path / "marker"
    payload = pickle.dumps({"demo-model": Exploit()})
    monitor = Monitor()
    with pytest.raises(StateError, match="not valid JSON"):
        monitor.restore(payload)
    assert not Exploit.marker.exists() and monitor.models == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "not valid JSON"),
        (RAW[: len(RAW) // 2], "not valid JSON"),
        (b"[1, 2]", "expected an object"),
        (orjson.dumps({"format": "other", "version": 1, "state": {}}), "format is 'other'"),
        (RAW.replace(b'"version":13', b'"version":12', 1), "version 12 is not supported"),  # no atoms' CUSUMs
    ],
)
def test_garbage_is_refused(raw, message):
    with pytest.raises(StateError, match=message):
        Monitor().restore(raw)


def forged(edit) -> bytes:
    document = orjson.loads(RAW)
    edit(document["state"]["models"]["demo-model"])
    return orjson.dumps(document)


def version_1(model: dict) -> dict:
    return model["versions"]["1"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda m: m["counters"].update(processed=-5),
            r"^driftwarden\.monitor-state state\.models\.demo-model\.counters\.processed: expected an integer >= 0",
        ),
        (lambda m: m["joiner"]["predictions"].update(ts="%%%"), r"joiner\.predictions\.ts: expected base64"),
        (lambda m: m["joiner"]["predictions"]["kinds"].update(codes="AAAAAAAAAAk="), "codes below"),
        (lambda m: m["joiner"]["predictions"]["kinds"].update(values=[["1", [], 1.0]]), "a text prediction or null"),
        (lambda m: m["joiner"]["predictions"].update(numbers="AAAAAAAAAAA="), "columns of different lengths"),
        (lambda m: version_1(m)["config"].update(window_size=1), r"config: not a valid config"),
        (lambda m: version_1(m)["window_detectors"][0].update({"class": "Popen"}), "is not a window detector"),
        (lambda m: version_1(m)["streaming"]["num_00"]["params"].update(arl=0.5), "arl must exceed 1"),
        (lambda m: version_1(m)["book"]["open"][0][2].update(severity="apocalyptic"), "not a valid alert"),
        (
            lambda m: version_1(m)["pending"][0].update(event_ids=[]),
            r"pending\[0\]\.categorical\[0\]: expected 0 strings",
        ),
        (lambda m: version_1(m)["profile"].update(task="ranking"), r"profile\.task: expected classification"),
    ],
)
def test_a_forged_state_is_refused_naming_the_field_and_memory_is_unchanged(edit, message):
    monitor = busy_monitor()
    before = monitor.export(["demo-model"])
    with pytest.raises(StateError, match=message):
        monitor.restore(forged(edit))
    assert monitor.export(["demo-model"]) == before


def test_export_restore_export_is_identical():
    restored = Monitor()
    assert restored.restore(RAW) == ["demo-model"]
    assert restored.export(["demo-model"]) == RAW


@pytest.mark.parametrize("fill", ["dead_letters_only", "labels_only"])
def test_a_model_with_nothing_pending_round_trips(fill):
    """No pending predictions means empty packed columns (a restore used to fail on them)."""
    monitor = Monitor()
    if fill == "dead_letters_only":
        monitor.count_dead_letters("quiet", 3)
    else:
        chunk = next(generate(Scenario(n_events=50, model_id="quiet", seed=4)))
        monitor.observe_labels([LabelEvent.model_validate(x) for x in chunk.label_events()], now=1.0)
    raw = monitor.export(["quiet"])
    restored = Monitor()
    assert restored.restore(raw) == ["quiet"]
    assert restored.export(["quiet"]) == raw
