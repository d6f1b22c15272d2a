"""Streams with known drift points for ``driftwarden bench detection``.

Concept streams (River's synthetic generators) are sequences of concepts: the stream draws from
concept k until the next change starts, then, over ``width`` events, from the next concept with a
probability rising linearly from 0 to 1 (``width=1``: an abrupt change). Every concept differs from
its neighbours (another SEA variant, Agrawal function, hyperplane, set of RBF centroids...).

Feature streams come from the load generator (:mod:`driftwarden_load.scenarios`): 20 features, one
change at a known event; the embedding streams also carry a 64-dimensional embedding whose topic mix
changes (half way from the reference mix to its reverse), or not (their stable twin). The text
model's streams carry that embedding alone (a text classifier: no tabular features, its score a
function of the embedding), with the same change or none.

>>> stream = concept_stream("SEA", "gradual", seed=0, n_concepts=3, concept_length=1_000, width=200)
>>> len(stream.samples), [(d.start, d.width) for d in stream.drifts]
(3000, [(900, 200), (1900, 200)])
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from river.datasets import synth

from driftwarden.bench.evaluation import Drift
from driftwarden_load.scenarios import NUMERIC_FEATURES, NUMERIC_MEAN, Chunk, Scenario, ScenarioName, generate

Change = Literal["abrupt", "gradual"]
Sample = tuple[dict[Any, Any], Any]

NEVER = 10**12  # a FriedmanDrift change point that is never reached


def _friedman(k: int, seed: int) -> Iterator[Sample]:
    """FriedmanDrift's two global concepts (features swapped or not), made a binary task."""
    position = (NEVER, NEVER + 1) if k % 2 == 0 else (0, NEVER)
    # Threshold near the median target of the first concept: a balanced binary label.
    return ((x, y > 14.5) for x, y in synth.FriedmanDrift(drift_type="gra", position=position, seed=seed))


CONCEPTS: dict[str, Callable[[int, int], Iterator[Sample]]] = {
    "SEA": lambda k, seed: iter(synth.SEA(variant=k % 4, seed=seed)),
    "Agrawal": lambda k, seed: iter(synth.Agrawal(classification_function=k % 10, seed=seed)),
    "STAGGER": lambda k, seed: iter(synth.STAGGER(classification_function=k % 3, seed=seed)),
    "Hyperplane": lambda k, seed: iter(synth.Hyperplane(seed=seed * 1_000 + k, n_features=10)),
    "RandomRBF": lambda k, seed: iter(synth.RandomRBF(seed_model=seed * 1_000 + k, seed_sample=seed)),
    "FriedmanDrift": _friedman,
}


@dataclass
class LabelledStream:
    """A classification stream and where its concept changes start."""

    name: str
    seed: int
    samples: list[Sample]
    drifts: list[Drift]


def concept_stream(
    generator: str, change: Change, seed: int, n_concepts: int, concept_length: int, width: int
) -> LabelledStream:
    """``n_concepts`` concepts of ``concept_length`` events; a gradual change is centred on the boundary."""
    if generator not in CONCEPTS:
        raise ValueError(f"unknown generator {generator!r}; choose one of {', '.join(CONCEPTS)}")
    width = 1 if change == "abrupt" else width
    if width > concept_length:
        raise ValueError("a gradual change must be shorter than a concept")
    rng = random.Random(seed)
    concepts = [CONCEPTS[generator](k, seed * 7_919 + k) for k in range(n_concepts)]
    starts = [k * concept_length - width // 2 for k in range(1, n_concepts)]
    samples: list[Sample] = []
    for i in range(n_concepts * concept_length):
        k = sum(1 for s in starts if i >= s)  # the concept being changed to, or in force
        if k and i < starts[k - 1] + width and rng.random() >= (i - starts[k - 1] + 1) / width:
            k -= 1  # still drawing from the old concept during a gradual change
        samples.append(next(concepts[k]))
    return LabelledStream(f"{generator}/{change}", seed, samples, [Drift(s, width) for s in starts])


FeatureStreamName = Literal[
    "mean-0.25σ",
    "mean-0.5σ",
    "mean-1σ",
    "variance-1.5x",
    "categorical",
    "stable",
    "embedding-topic-mix",
    "embedding-stable",
    "text-model-topic-mix",
    "text-model-stable",
]
FEATURE_STREAMS: tuple[FeatureStreamName, ...] = get_args(FeatureStreamName)
#: The streams in which nothing changes (their length is the benchmark's ``stable_events``).
STABLE_STREAMS: tuple[FeatureStreamName, ...] = ("stable", "embedding-stable", "text-model-stable")
#: How far the topic mix of ``embedding-topic-mix`` and ``text-model-topic-mix`` moves towards its reverse.
TOPIC_MIX_SHIFT = 0.5


@dataclass
class FeatureStream:
    """A load-generator stream, chunked, with its drift point (none for ``stable``)."""

    name: str
    seed: int
    n_events: int
    chunks: list[Chunk]
    drifts: list[Drift]
    scenario: Scenario


def feature_stream(name: FeatureStreamName, seed: int, n_events: int, onset: int) -> FeatureStream:
    """A 20-feature stream: two numeric features change at ``onset`` (or a categorical one, or an
    embedding's topic mix, or nothing); or the text model's embedding-only stream."""
    kinds: dict[str, ScenarioName] = {"categorical": "categorical-shift", "stable": "stable"}
    kinds |= {n: n for n in get_args(ScenarioName) if n.startswith(("embedding-", "text-model-"))}
    kind = kinds.get(name, "abrupt-shift")
    magnitude = float(name.removeprefix("mean-").removesuffix("σ")) if name.startswith("mean-") else 0.0
    magnitude = TOPIC_MIX_SHIFT if kind.endswith("topic-mix") else magnitude
    scenario = Scenario(name=kind, n_events=n_events, onset=onset, magnitude=magnitude, seed=seed)
    chunks = list(generate(scenario, chunk_size=2_000))
    if name.startswith("variance-"):
        factor = float(name.removeprefix("variance-").removesuffix("x"))
        columns = np.array([NUMERIC_FEATURES.index(f) for f in scenario.drift_features], dtype=np.intp)
        for chunk in chunks:
            after = np.arange(chunk.start, chunk.start + len(chunk)) >= onset
            block = chunk.numeric[np.ix_(after, columns)]
            chunk.numeric[np.ix_(after, columns)] = NUMERIC_MEAN[columns] + (block - NUMERIC_MEAN[columns]) * factor
    drifts = [] if name in STABLE_STREAMS else [Drift(onset, lasts_until=n_events)]  # the change persists
    return FeatureStream(name, seed, n_events, chunks, drifts, scenario)
