"""One contract, every detector class (in the spirit of River's ``river/checks``/``yield_checks``).

Each check runs over every class in ``DETECTOR_CLASSES``; a detector class that is not registered,
or has no example instance here, fails ``test_every_detector_class_is_registered_and_exercised``.
"""

from __future__ import annotations

import inspect
import random
import re
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from driftwarden.core.columnar import decode_columns
from driftwarden.core.config import ModelMonitorConfig
from driftwarden.core.detectors import (
    DETECTOR_CLASSES,
    BernoulliCusumDetector,
    Detector,
    RankCusumDetector,
    StreamingDetector,
    WindowDetector,
    decide,
)
from driftwarden.core.detectors import window_detectors as make_window_detectors
from driftwarden.core.events import PredictionEvent
from driftwarden.core.profile import Columns, build_profile, schema_of, to_columns
from driftwarden.core.state import StateReader
from driftwarden_load.scenarios import EMBEDDING_FEATURE, Scenario, generate

Q = 0.001


def scenario_events(name: str, n: int, seed: int) -> list[PredictionEvent]:
    events = [
        PredictionEvent.model_validate(e)
        for chunk in generate(Scenario(name=name, n_events=n, onset=0, seed=seed))
        for e in chunk.prediction_events()
    ]
    rng = np.random.default_rng(seed)
    slow = 10.0 if name == "stable" else 80.0  # latency and cost move with the drift too
    # ...and so does the embedding (its topic mix) where the numeric features shift.
    twin = Scenario(name="embedding-topic-mix" if name == "abrupt-shift" else "embedding-stable", n_events=n, onset=0)
    vectors = [v for chunk in generate(twin) for v in chunk.prediction_events()]
    return [
        e.model_copy(update={"latency_ms": float(rng.uniform(1, slow)), "cost": float(rng.uniform(0, slow / 1e4)),
                             "features": e.features | {EMBEDDING_FEATURE: v["features"][EMBEDDING_FEATURE]}})
        for e, v in zip(events, vectors, strict=True)
    ]  # fmt: skip


def columnar(events: list[PredictionEvent]) -> dict:
    """The events as one columnar batch (``schemas/prediction-columns.v1.json``)."""
    rows = [e.model_dump(exclude_none=True) for e in events]
    return {
        "schema": "prediction-columns.v1", "model_id": "m", "model_version": "1",
        **{key: [r[key] for r in rows] for key in ("event_id", "ts", "prediction", "latency_ms", "cost")},
        "features": {name: [r["features"].get(name) for r in rows] for name in rows[0]["features"]
                     if name != EMBEDDING_FEATURE},  # (a columnar batch carries no arrays)
        "scores": {c: [r["scores"][c] for r in rows] for c in rows[0]["scores"]},
    }  # fmt: skip


PROFILE = build_profile("m", "1", scenario_events("stable", 3_000, 0))
CONFIG = ModelMonitorConfig(latency_p99_budget_ms=40.0, cost_per_1k_budget=5.0)
WINDOWS = [
    to_columns(scenario_events(name, 2_000, seed), schema_of(PROFILE))
    for name, seed in (("stable", 1), ("abrupt-shift", 2), ("categorical-shift", 3), ("stable", 4))
]


def window_examples() -> list[WindowDetector]:
    return make_window_detectors(PROFILE, CONFIG)


def examples(cls: type[Detector]) -> list[Detector]:
    if cls is RankCusumDetector:
        gauss = np.quantile(np.random.default_rng(0).normal(0, 1, 300), np.linspace(0, 1, 100))
        counts = np.quantile(np.random.default_rng(0).poisson(1.0, 2_000), np.linspace(0, 1, 1_000))
        rng = np.random.default_rng(1)  # (two modes: the reference density's own alternatives too)
        two = np.quantile(np.where(rng.random(2_000) < 0.6, rng.normal(0, 1, 2_000), rng.normal(4, 1, 2_000)),
                          np.linspace(0, 1, 500))  # fmt: skip
        return [RankCusumDetector(gauss, 300, arl=1e4), RankCusumDetector(counts, 2_000, arl=1e6, seed=3),
                RankCusumDetector(two, 2_000, arl=1e5, seed=2)]  # fmt: skip
    if cls is BernoulliCusumDetector:  # (the stream's values >= 0.5 are its errors: 31 %, then 84 %)
        return [BernoulliCusumDetector(310, 1_000, arl=1e4), BernoulliCusumDetector(2, 500, arl=1e6)]
    return [d for d in window_examples() if type(d) is cls]


CLASSES = sorted(DETECTOR_CLASSES.values(), key=lambda c: c.__name__)


def test_every_detector_class_is_registered_and_exercised():
    def subclasses(cls: type) -> Iterator[type]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    concrete = {c for c in subclasses(Detector) if not inspect.isabstract(c) and c.__module__.startswith("driftwarden")}
    assert concrete == set(DETECTOR_CLASSES.values()), "register every detector class in DETECTOR_CLASSES"
    assert all(DETECTOR_CLASSES[c.__name__] is c for c in concrete)
    for cls in concrete:
        assert examples(cls), f"{cls.__name__}: add an example instance to this contract suite"


# -- driving a detector the same way twice --------------------------------------------------------


def stream_values(seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(0.0 if i < 1_500 else 1.5, 1.0) for i in range(3_000)]


def drive(detector: Detector, part: int) -> list[tuple]:
    """Feed ``part`` (0: the first half of the data, 1: the rest); what the detector said at each step."""
    said = []
    if isinstance(detector, StreamingDetector):
        values = stream_values(7)
        for x in values[:1_000] if part == 0 else values[1_000:]:
            detector.update(x)
            said.append((detector.drift_detected, detector.evidence() if detector.drift_detected else None))
        return said
    assert isinstance(detector, WindowDetector)
    for window in WINDOWS[:1] if part == 0 else WINDOWS[1:]:
        tested = detector.update(window)
        if tested:
            decide([detector], Q)
        said.append((tested, detector.drift_detected, detector.p_value, detector.evidence()))
    return said


# -- the checks -------------------------------------------------------------------------------------


def check_state_round_trip_then_identical_behaviour(detector: Detector) -> None:
    drive(detector, 0)
    copy = type(detector).from_bytes(detector.to_bytes())
    assert repr(copy) == repr(detector)
    assert copy.drift_detected == detector.drift_detected and copy.evidence() == detector.evidence()
    original_said, copy_said = drive(detector, 1), drive(copy, 1)
    assert original_said == copy_said
    assert any(said[0] for said in original_said)  # the comparison covered real updates
    again = type(detector).from_state(StateReader(detector.state(), "state"))
    assert again.state() == detector.state()


def check_repr_shows_parameters(detector: Detector) -> None:
    text = repr(detector)
    assert text.startswith(f"{type(detector).__name__} (") and text.endswith(")")
    for key, value in detector.params().items():
        assert f"{key}=" in text
        if isinstance(value, float | int | bool | str) or value is None:
            assert f"{key}={value!r}" in text
    assert len(text) < 400 and "\n" not in text  # bulky parameters (profiles) shown by size


def check_no_verdict_on_tiny_windows(detector: Detector) -> None:
    if isinstance(detector, RankCusumDetector | BernoulliCusumDetector):
        for _ in range(5):  # missing values are no evidence and no verdict
            detector.update(float("nan"))
            assert not detector.drift_detected and detector.n_seen == 0
        return
    assert isinstance(detector, WindowDetector)
    tiny = WINDOWS[1].slice(0, detector.min_values - 1)
    assert detector.update(tiny) is False
    decide([], Q)
    assert not detector.drift_detected
    assert detector.update(WINDOWS[1].slice(0, 0)) is False


def check_evidence_has_what_summary_needs(detector: Detector) -> None:
    if isinstance(detector, StreamingDetector):
        for x in stream_values(3):
            detector.update(x)
    else:
        assert isinstance(detector, WindowDetector)
        assert detector.update(WINDOWS[1])
        decide([detector], Q)
    evidence = detector.evidence()
    assert detector.EVIDENCE_KEYS and set(evidence) >= detector.EVIDENCE_KEYS
    summary = detector.summary("fraud", "3")
    assert "fraud v3" in summary
    for key in detector.EVIDENCE_KEYS:  # summary() reads only those keys: removing any breaks it
        broken = {k: v for k, v in evidence.items() if k != key}
        if isinstance(detector, WindowDetector):
            detector._evidence = broken
            with pytest.raises(KeyError):
                detector.summary("fraud", "3")
            detector._evidence = evidence


def check_batch_path_equals_per_event_updates(detector: Detector) -> None:
    """The hot path (a column at a time) says exactly what one event at a time says.

    Streaming detectors: ``update_many`` (the native batch path, if any) against the base class's loop
    of ``update``, alarm by alarm with the evidence at each, then the whole state. Window detectors:
    a window decoded from a columnar batch, column by column, against the same events decoded one by
    one (a few values made missing or of the wrong type, so those paths are compared too).
    """
    if isinstance(detector, StreamingDetector):
        values = np.array(stream_values(11))
        values[[5, 1_700, 2_999]] = np.nan  # NaN is skipped by both
        loop = type(detector).from_state(StateReader(detector.state(), "state"))
        said: tuple[list, list] = ([], [])
        detector.update_many(values, lambda i: said[0].append((i, detector.evidence())))
        StreamingDetector.update_many(loop, values, lambda i: said[1].append((i, loop.evidence())))
        assert said[0] == said[1] and said[0]  # alarms happened, at the same values, with the same evidence
        assert_same_state(detector.state(), loop.state())
        return
    assert isinstance(detector, WindowDetector)
    events = scenario_events("abrupt-shift", 600, 5)
    events = [e.model_copy(update={"features": e.features | {EMBEDDING_FEATURE: None}}) for e in events]  # as above
    events[3] = events[3].model_copy(update={"features": {**events[3].features, "num_02": None, "cat_01": 7.0}})
    events[9] = events[9].model_copy(update={"features": {**events[9].features, "num_04": "n/a"}})
    decoded = decode_columns(columnar(events), b"")
    assert decoded.batch is not None and not decoded.rejections
    by_columns = decoded.batch.columns(schema_of(PROFILE))
    copy = type(detector).from_state(StateReader(detector.state(), "state"))
    results = []
    for d, window in ((detector, by_columns), (copy, to_columns(events, schema_of(PROFILE)))):
        tested = d.update(window)
        if tested:
            decide([d], Q)
        results.append((tested, d.drift_detected, d.p_value, d.evidence()))
    assert results[0] == results[1]


def assert_same_state(a: object, b: object, where: str = "state") -> None:
    """Equal states, except that packed float arrays (running sums) need only be equal to rounding:
    a vectorized cumulative sum adds in another order than one value at a time."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, str) and isinstance(b, str) and a != b:
        arrays = [StateReader({"packed": v}, where).array("packed") for v in (a, b)]
        np.testing.assert_allclose(*arrays, rtol=1e-12, atol=1e-12, err_msg=where)
    else:
        assert a == b, where


def check_drift_detected_is_read_only(detector: Detector) -> None:
    with pytest.raises(AttributeError):
        detector.drift_detected = True  # type: ignore[misc]


CHECKS: list[Callable[[Detector], None]] = [
    check_state_round_trip_then_identical_behaviour,
    check_repr_shows_parameters,
    check_no_verdict_on_tiny_windows,
    check_evidence_has_what_summary_needs,
    check_drift_detected_is_read_only,
    check_batch_path_equals_per_event_updates,
]


def yield_checks() -> Iterator[tuple[type[Detector], int, Callable[[Detector], None]]]:
    for cls in CLASSES:
        for i in range(len(examples(cls))):
            for check in CHECKS:
                yield cls, i, check


@pytest.mark.parametrize(
    ("cls", "example", "check"),
    list(yield_checks()),
    ids=[f"{cls.__name__}[{i}]-{check.__name__}" for cls, i, check in yield_checks()],
)
def test_detector_contract(cls: type[Detector], example: int, check: Callable[[Detector], None]):
    check(examples(cls)[example])


@pytest.mark.slow
def test_the_window_verdict_is_the_false_discovery_controls():
    """Significant alone is not drift; the verdict of a window is decide()'s, across all its p-values."""
    detectors = window_examples()
    tested = [d for d in detectors if d.update(WINDOWS[1])]
    assert not any(d.drift_detected for d in tested)  # update() alone decides nothing
    decide(tested, Q)
    drifted = {(d.kind, d.subject) for d in tested if d.drift_detected}
    assert ("data_drift", "num_00") in drifted and ("latency", "p99_ms") in drifted
    p_values = np.array([d.p_value for d in tested if d.p_value is not None])
    for d in tested:
        if d.p_value is not None and d.effect_exceeded:
            rank = int((p_values <= d.p_value).sum())
            significant = any(
                p <= Q * int((p_values <= p).sum()) / len(p_values) for p in p_values if p >= d.p_value
            )  # the Benjamini-Hochberg step-up rule, spelled out
            assert d.drift_detected == significant, (d.subject, d.p_value, rank)


def test_repr_looks_like_rivers():
    assert re.fullmatch(
        r"RankCusumDetector \(quantiles=\[0\.0, 1\.0, 2\.0\], reference_n=50, arl=1000000\.0, seed=0\)",
        repr(RankCusumDetector([0.0, 1.0, 2.0], 50)),
    )


def test_a_window_without_values_for_a_detector_gives_no_verdict_and_clears_the_last_one():
    detector = next(d for d in window_examples() if d.name == "ks_psi_wasserstein" and d.subject == "num_00")
    assert detector.update(WINDOWS[1])
    decide([detector], Q)
    assert detector.drift_detected
    no_values = Columns.concat([WINDOWS[1].slice(0, 100)])  # (a copy: slices are views)
    no_values.numeric[:] = np.nan
    assert detector.update(no_values) is False and not detector.drift_detected
