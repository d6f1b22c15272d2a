"""The River internals ``core/river_adapter.py`` relies on, pinned: these fail loudly when River changes."""

from __future__ import annotations

import base64
import hashlib
import random

import pytest
import river
from river import drift

from driftwarden.core.river_adapter import (
    ALLOWED,
    PINNED_RIVER_VERSION,
    river_from_state,
    river_state,
)
from driftwarden.core.state import StateError, StateReader, decode, encode

DETECTORS = [
    lambda: drift.ADWIN(delta=0.002),
    drift.binary.DDM,
    drift.binary.EDDM,
    drift.binary.HDDMA,
    drift.binary.HDDMW,
    drift.PageHinkley,
    lambda: drift.PageHinkley(mode="up"),
]


def test_river_is_the_pinned_version():
    assert river.__version__ == PINNED_RIVER_VERSION, (
        f"River {river.__version__} is installed but core/river_adapter.py was written for {PINNED_RIVER_VERSION}: "
        "re-check the Rust __getstate__ formats, then update the pin"
    )


def test_adwin_state_bytes_are_the_pinned_format():
    """A fixed stream gives the same Rust state bytes: a new bincode layout changes this digest."""
    adwin = drift.ADWIN(delta=0.002)
    rng = random.Random(0)
    for _ in range(500):
        adwin.update(rng.random())
    digest = hashlib.sha256(adwin._helper.__getstate__()).hexdigest()[:16]
    assert (adwin.width, digest) == (500, "40c73337d9882363")


@pytest.mark.parametrize("make", DETECTORS, ids=lambda make: repr(make()))
def test_every_allowed_detector_round_trips_and_continues_identically(make):
    rng = random.Random(1)
    values = [float(rng.random() < (0.2 if i < 700 else 0.6)) for i in range(1_400)]
    original = make()
    for x in values[:500]:
        original.update(x)
    copy = river_from_state(decode(encode("River", 1, river_state(original)), "River", 1))
    said = [[], []]
    for x in values[500:]:
        for detector, out in ((original, said[0]), (copy, said[1])):
            detector.update(x)
            out.append(detector.drift_detected)
    assert any(said[0]) and said[0] == said[1]


def adwin_state() -> dict:
    adwin = drift.ADWIN()
    for i in range(300):
        adwin.update(float(i % 3))
    return river_state(adwin)


def test_forged_or_garbage_rust_bytes_are_refused():
    state = adwin_state()
    window = state["attributes"]["_helper"]
    raw = base64.b64decode(window["bytes"])
    for forged in (raw[:-5], b"garbage", raw + b"\x00"):
        window["bytes"] = base64.b64encode(forged).decode()
        with pytest.raises(StateError, match="AdaptiveWindowing"):
            river_from_state(StateReader(state, "adwin"))
    window["bytes"] = "not base64!"
    with pytest.raises(StateError, match="not base64"):
        river_from_state(StateReader(state, "adwin"))


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("class",), "os.system", "not a River class this build restores"),
        (("params", "delta"), "x", "params"),
        (("attributes", "_new_attribute"), 1, "not an attribute of ADWIN"),
        (("attributes", "_drift_detected"), "yes", "expected bool"),
        (("attributes", "_helper", "rust"), "Popen", "not a Rust class this build restores"),
    ],
)
def test_a_forged_state_is_refused_with_the_path_of_the_bad_field(path, value, message):
    state = adwin_state()
    target = state
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(StateError, match=message):
        river_from_state(StateReader(state, "adwin"))


def test_only_allowed_classes_have_a_state():
    assert set(ALLOWED) >= {"ADWIN", "DDM", "EDDM", "HDDMA", "HDDMW", "PageHinkley", "Mean", "Var"}
    with pytest.raises(StateError, match="no state format"):
        river_state(drift.KSWIN())
