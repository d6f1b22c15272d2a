"""Synthetic scored streams with known drift: the ground truth every detection test relies on.

A tabular binary classifier over 20 features (16 numeric on different scales, 4 categorical). The
"true" concept draws labels from a logistic model; the deployed model was fit on that concept, so
before any drift its accuracy is the concept's Bayes accuracy. Scenarios:

* ``stable``: nothing changes.
* ``abrupt-shift``: chosen numeric features' means move by ``magnitude`` standard deviations at ``onset``.
* ``gradual-shift``: the same shift, ramped in linearly over ``ramp`` events from ``onset``.
* ``categorical-shift``: a categorical feature's category frequencies change at ``onset``.
* ``concept-drift``: the label/feature relation changes at ``onset``; feature distributions do not.
* ``embedding-topic-mix``: the stream also carries a 64-dimensional ``text_embedding`` (each event's
  text is about one of 8 topics: its topic's centre plus noise); at ``onset`` the topic mix moves
  ``magnitude`` of the way from :data:`TOPIC_PROBS` to its reverse (rare topics become common).
* ``embedding-stable``: its stable twin (the same embedding, the same 20 features, nothing changes).
* ``text-model-topic-mix``: a text classifier as such a model is logged: its only feature is the
  64-dimensional ``text_embedding`` (no tabular features), its score a linear probe of the vector
  (:data:`TOPIC_WEIGHTS`: each topic's centre scores its own logit, :data:`TOPIC_LOGITS`); the same
  topic-mix change as ``embedding-topic-mix``, which also moves the score (common topics score low).
* ``text-model-stable``: its stable twin.

>>> scenario = Scenario(name="abrupt-shift", n_events=2_000, onset=1_000, magnitude=1.0, seed=3)
>>> chunks = list(generate(scenario, chunk_size=500))
>>> before, after = chunks[0].numeric[:, 0].mean(), chunks[-1].numeric[:, 0].mean()
>>> round((after - before) / NUMERIC_STD[0])
1
>>> scenario.ground_truth().drifting_features
('num_00', 'num_01')
>>> chunk = next(generate(Scenario(name="embedding-topic-mix", n_events=3)))
>>> len(chunk.prediction_events()[0]["features"][EMBEDDING_FEATURE])
64
>>> list(next(generate(Scenario(name="text-model-stable", n_events=3))).prediction_events()[0]["features"])
['text_embedding']
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

ScenarioName = Literal[
    "stable",
    "abrupt-shift",
    "gradual-shift",
    "categorical-shift",
    "concept-drift",
    "embedding-topic-mix",
    "embedding-stable",
    "text-model-topic-mix",
    "text-model-stable",
]
SCENARIOS: tuple[ScenarioName, ...] = get_args(ScenarioName)

NUMERIC_FEATURES = tuple(f"num_{i:02d}" for i in range(16))
CATEGORICAL_FEATURES = ("cat_00", "cat_01", "cat_02", "cat_03")
CATEGORIES = ("a", "b", "c", "d", "e")
FEATURES = NUMERIC_FEATURES + CATEGORICAL_FEATURES

# Fixed "world": feature scales and the concept's weights (standardized space).
_WORLD = np.random.default_rng(20261130)
NUMERIC_MEAN = np.round(_WORLD.uniform(-50, 50, len(NUMERIC_FEATURES)), 2)
NUMERIC_STD = np.round(_WORLD.uniform(0.5, 20, len(NUMERIC_FEATURES)), 2)
CONCEPT_WEIGHTS = np.round(_WORLD.normal(0, 1.0, len(NUMERIC_FEATURES)), 3)
# The concept after a concept drift: the three strongest weights flip sign.
DRIFTED_WEIGHTS = CONCEPT_WEIGHTS.copy()
DRIFTED_WEIGHTS[np.argsort(-np.abs(CONCEPT_WEIGHTS))[:3]] *= -1
CATEGORY_EFFECTS = np.round(_WORLD.normal(0, 0.5, (len(CATEGORICAL_FEATURES), len(CATEGORIES))), 3)
CATEGORY_PROBS = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
SHIFTED_CATEGORY_PROBS = CATEGORY_PROBS[::-1].copy()

# The embedding scenarios' "text": 8 topics, each a centre in 64 dimensions (norm about 1); an
# event's vector is its topic's centre plus isotropic noise (norm about 1).
EMBEDDING_FEATURE = "text_embedding"
EMBEDDING_DIMS = 64
_TOPICS = np.random.default_rng(20261201)
TOPIC_CENTERS = _TOPICS.normal(0, 1 / np.sqrt(EMBEDDING_DIMS), (8, EMBEDDING_DIMS))
TOPIC_PROBS = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.07, 0.05, 0.03])
TOPIC_NOISE = 1 / np.sqrt(EMBEDDING_DIMS)
# The text model's concept: the logit of each topic (the commonest topics are the negative ones),
# scored by a linear probe of the vector, the least-norm weights through the topics' centres. The
# logits are antisymmetric (topic k's is minus topic 7-k's) and a topic mix keeps p_k + p_(7-k): the
# mix moves the score, not the model's confidence (so no estimated-accuracy alert is expected).
TOPIC_LOGITS = np.array([-2.0, -1.5, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0])
TOPIC_WEIGHTS = np.linalg.lstsq(TOPIC_CENTERS, TOPIC_LOGITS, rcond=None)[0]


#: A feature shift moves the model's mean logit by sum(weight * magnitude); from this much on, the
#: score distribution shifts enough that prediction drift is expected too.
PREDICTION_DRIFT_LOGIT_SHIFT = 0.5


@dataclass(frozen=True)
class GroundTruth:
    """What a correct monitor must find in a scenario.

    ``expected_alerts`` is the set of (alert kind, subject) a correct monitor raises, and no other;
    performance drift needs labels to be observable.
    """

    scenario: ScenarioName
    onset: int | None
    drifting_features: tuple[str, ...] = ()
    concept_drift: bool = False
    expected_alerts: frozenset[tuple[str, str]] = frozenset()


@dataclass(frozen=True)
class Scenario:
    """Parameters of one synthetic stream; everything is reproducible from ``seed``."""

    name: ScenarioName = "stable"
    n_events: int = 30_000
    onset: int = 10_000
    drift_features: tuple[str, ...] = ("num_00", "num_01")
    magnitude: float = 1.0
    ramp: int = 5_000
    categorical_feature: str = "cat_00"
    seed: int = 0
    model_id: str = "demo-model"
    model_version: str = "1"
    start_ts: float = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    events_per_second: float = 1_000.0  # spacing of the synthetic event timestamps

    def __post_init__(self) -> None:
        if self.name not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.name!r}; choose one of {', '.join(SCENARIOS)}")
        unknown = [f for f in self.drift_features if f not in NUMERIC_FEATURES]
        if unknown:
            raise ValueError(f"drift features must be numeric features num_00..num_15, got {unknown}")
        if self.categorical_feature not in CATEGORICAL_FEATURES:
            raise ValueError(f"categorical feature must be one of {CATEGORICAL_FEATURES}")
        if self.n_events < 1 or self.onset < 0 or self.ramp < 1 or self.events_per_second <= 0:
            raise ValueError("n_events, ramp and events_per_second must be positive; onset non-negative")

    def ground_truth(self) -> GroundTruth:
        if self.name in ("stable", "embedding-stable", "text-model-stable") or self.onset >= self.n_events:
            return GroundTruth(self.name, None)
        if self.name in ("abrupt-shift", "gradual-shift"):
            expected = {("data_drift", f) for f in self.drift_features} | {("multivariate_drift", "numeric_features")}
            weights = CONCEPT_WEIGHTS[[NUMERIC_FEATURES.index(f) for f in self.drift_features]]
            if abs(float(weights.sum()) * self.magnitude) >= PREDICTION_DRIFT_LOGIT_SHIFT:
                expected.add(("prediction_drift", "score"))
            return GroundTruth(self.name, self.onset, self.drift_features, expected_alerts=frozenset(expected))
        if self.name == "categorical-shift":
            shifted = frozenset({("data_drift", self.categorical_feature)})
            return GroundTruth(self.name, self.onset, (self.categorical_feature,), expected_alerts=shifted)
        if self.name == "embedding-topic-mix":
            moved = frozenset({("data_drift", EMBEDDING_FEATURE)})  # its MMD test or distance-to-centroid CUSUM
            return GroundTruth(self.name, self.onset, (EMBEDDING_FEATURE,), expected_alerts=moved)
        if self.name == "text-model-topic-mix":
            text = {("data_drift", EMBEDDING_FEATURE)}  # and the score, when the mix moves its mean logit enough
            if abs(float((topic_mix(self.magnitude) - TOPIC_PROBS) @ TOPIC_LOGITS)) >= PREDICTION_DRIFT_LOGIT_SHIFT:
                text.add(("prediction_drift", "score"))
            return GroundTruth(self.name, self.onset, (EMBEDDING_FEATURE,), expected_alerts=frozenset(text))
        concept = frozenset({("performance_drift", "accuracy")})
        return GroundTruth(self.name, self.onset, concept_drift=True, expected_alerts=concept)

    @property
    def has_embedding(self) -> bool:
        return self.name.startswith(("embedding-", "text-model-"))

    @property
    def tabular(self) -> bool:
        """Whether the events carry the 20 tabular features (all but the text model's scenarios)."""
        return not self.name.startswith("text-model-")

    @property
    def numeric_features(self) -> tuple[str, ...]:
        return NUMERIC_FEATURES if self.tabular else ()

    @property
    def categorical_features(self) -> tuple[str, ...]:
        return CATEGORICAL_FEATURES if self.tabular else ()


@dataclass
class Chunk:
    """A slice of the stream, column-wise. ``start`` is the index of its first event."""

    start: int
    event_ids: list[str]
    ts: np.ndarray
    numeric: np.ndarray  # (n, 16); (n, 0) in the text model's scenarios
    categorical: np.ndarray  # (n, 4) of category indices; (n, 0) in the text model's scenarios
    score: np.ndarray  # model's P(label = 1)
    label: np.ndarray  # true label, 0/1
    scenario: Scenario = field(repr=False)
    embedding: np.ndarray | None = None  # (n, 64) float32, in the embedding scenarios

    def __len__(self) -> int:
        return len(self.event_ids)

    def prediction_events(self) -> list[dict[str, Any]]:
        """The chunk as prediction events (``schemas/prediction.v1.json``)."""
        s = self.scenario
        numeric = np.round(self.numeric, 4).tolist()
        categories = np.asarray(CATEGORIES)[self.categorical].tolist()
        scores = np.round(self.score, 6).tolist()
        vectors = None if self.embedding is None else np.round(self.embedding.astype(float), 5).tolist()
        events = []
        for i, event_id in enumerate(self.event_ids):
            features: dict[str, Any] = dict(zip(s.numeric_features, numeric[i], strict=True))
            features.update(zip(s.categorical_features, categories[i], strict=True))
            if vectors is not None:
                features[EMBEDDING_FEATURE] = vectors[i]
            p = scores[i]
            events.append(
                {
                    "event_id": event_id,
                    "model_id": s.model_id,
                    "model_version": s.model_version,
                    "ts": float(self.ts[i]),
                    "features": features,
                    "prediction": int(p >= 0.5),
                    "scores": {"0": round(1.0 - p, 6), "1": p},
                }
            )
        return events

    def prediction_columns(self, start: int = 0, stop: int | None = None) -> dict[str, Any]:
        """Rows ``start:stop`` of the chunk as one columnar batch (``schemas/prediction-columns.v1.json``):
        the same predictions as :meth:`prediction_events`, field by field (without the embedding:
        a columnar batch carries no arrays).

        >>> chunk = next(generate(Scenario(n_events=3)))
        >>> document = chunk.prediction_columns(1)
        >>> document["event_id"] == [e["event_id"] for e in chunk.prediction_events()[1:]]
        True
        >>> document["features"]["num_00"] == [e["features"]["num_00"] for e in chunk.prediction_events()[1:]]
        True
        """
        s = self.scenario
        rows = slice(start, stop)
        numeric = np.round(self.numeric[rows], 4)
        categories = np.asarray(CATEGORIES)[self.categorical[rows]]
        scores = np.round(self.score[rows], 6)
        features: dict[str, list[Any]] = {name: numeric[:, j].tolist() for j, name in enumerate(s.numeric_features)}
        features |= {name: categories[:, j].tolist() for j, name in enumerate(s.categorical_features)}
        return {
            "schema": "prediction-columns.v1",
            "model_id": s.model_id,
            "model_version": s.model_version,
            "event_id": self.event_ids[rows],
            "ts": self.ts[rows].tolist(),
            "features": features,
            "prediction": (scores >= 0.5).astype(int).tolist(),
            "scores": {"0": np.round(1.0 - scores, 6).tolist(), "1": scores.tolist()},
        }

    def training_examples(self) -> list[dict[str, Any]]:
        """The chunk as joined, labelled examples (as the trainer joins them, :mod:`driftwarden.core.training_join`)."""
        keep = ("event_id", "model_id", "model_version", "ts", "features", "prediction")
        return [
            {**{k: prediction[k] for k in keep}, "label": label["label"]}
            for prediction, label in zip(self.prediction_events(), self.label_events(), strict=True)
        ]

    def label_events(self) -> list[dict[str, Any]]:
        """The chunk's ground truth as label events (``schemas/label.v1.json``)."""
        s = self.scenario
        return [
            {"event_id": event_id, "model_id": s.model_id, "ts": float(ts), "label": int(label)}
            for event_id, ts, label in zip(self.event_ids, self.ts.tolist(), self.label.tolist(), strict=True)
        ]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _shift_fraction(scenario: Scenario, index: np.ndarray) -> np.ndarray:
    """How much of the feature shift applies at each event index (0 before onset, 1 when complete)."""
    if scenario.name == "abrupt-shift":
        return (index >= scenario.onset).astype(float)
    if scenario.name == "gradual-shift":
        return np.clip((index - scenario.onset + 1) / scenario.ramp, 0.0, 1.0)
    return np.zeros(len(index))


def generate(scenario: Scenario, chunk_size: int = 1_000) -> Iterator[Chunk]:
    """Yield the scenario's stream in chunks of ``chunk_size`` events."""
    rng = np.random.default_rng(scenario.seed)
    drift_columns = [NUMERIC_FEATURES.index(f) for f in scenario.drift_features]
    category_column = CATEGORICAL_FEATURES.index(scenario.categorical_feature)
    for start in range(0, scenario.n_events, chunk_size):
        n = min(chunk_size, scenario.n_events - start)
        index = np.arange(start, start + n)
        if not scenario.tabular:
            yield _text_chunk(scenario, start, index, rng)
            continue
        z = rng.standard_normal((n, len(NUMERIC_FEATURES)))
        shift = _shift_fraction(scenario, index) * scenario.magnitude
        z[:, drift_columns] += shift[:, None]
        categorical = rng.choice(len(CATEGORIES), size=(n, len(CATEGORICAL_FEATURES)), p=CATEGORY_PROBS)
        if scenario.name == "categorical-shift":
            after = index >= scenario.onset
            categorical[after, category_column] = rng.choice(
                len(CATEGORIES), size=int(after.sum()), p=SHIFTED_CATEGORY_PROBS
            )
        category_logit = CATEGORY_EFFECTS[np.arange(len(CATEGORICAL_FEATURES)), categorical].sum(axis=1)
        model_logit = z @ CONCEPT_WEIGHTS + category_logit
        true_logit = model_logit
        if scenario.name == "concept-drift":
            drifted = index >= scenario.onset
            true_logit = np.where(drifted, z @ DRIFTED_WEIGHTS + category_logit, model_logit)
        label = (rng.random(n) < _sigmoid(true_logit)).astype(int)
        event_ids = [str(uuid.UUID(bytes=b, version=4)) for b in _uuid_bytes(rng, n)]
        embedding = _embedding(scenario, index, rng) if scenario.has_embedding else None
        yield Chunk(
            start=start,
            event_ids=event_ids,
            ts=scenario.start_ts + index / scenario.events_per_second,
            numeric=NUMERIC_MEAN + z * NUMERIC_STD,
            categorical=categorical,
            score=_sigmoid(model_logit),
            label=label,
            scenario=scenario,
            embedding=embedding,
        )


def _text_chunk(scenario: Scenario, start: int, index: np.ndarray, rng: np.random.Generator) -> Chunk:
    """The text model's events: the embedding its only feature, its score the linear probe's."""
    embedding = _embedding(scenario, index, rng)
    model_logit = embedding.astype(float) @ TOPIC_WEIGHTS
    label = (rng.random(len(index)) < _sigmoid(model_logit)).astype(int)
    return Chunk(
        start=start,
        event_ids=[str(uuid.UUID(bytes=b, version=4)) for b in _uuid_bytes(rng, len(index))],
        ts=scenario.start_ts + index / scenario.events_per_second,
        numeric=np.empty((len(index), 0)),
        categorical=np.empty((len(index), 0), dtype=int),
        score=_sigmoid(model_logit),
        label=label,
        scenario=scenario,
        embedding=embedding,
    )


def topic_mix(magnitude: float) -> np.ndarray:
    """The topic probabilities ``magnitude`` of the way from :data:`TOPIC_PROBS` to their reverse.

    >>> topic_mix(0.5).round(3).tolist()
    [0.165, 0.125, 0.11, 0.1, 0.1, 0.11, 0.125, 0.165]
    """
    shifted: np.ndarray = (1 - magnitude) * TOPIC_PROBS + magnitude * TOPIC_PROBS[::-1]
    return shifted


def _embedding(scenario: Scenario, index: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Topic centre plus noise per event; after the onset of a topic-mix drift, the shifted mix."""
    shifted = topic_mix(scenario.magnitude)
    after = (index >= scenario.onset) & scenario.name.endswith("topic-mix")
    topic = np.where(after, rng.choice(8, len(index), p=shifted), rng.choice(8, len(index), p=TOPIC_PROBS))
    noise = rng.normal(0, TOPIC_NOISE, (len(index), EMBEDDING_DIMS))
    vectors: np.ndarray = (TOPIC_CENTERS[topic] + noise).astype(np.float32)
    return vectors


def _uuid_bytes(rng: np.random.Generator, n: int) -> list[bytes]:
    raw = rng.bytes(16 * n)
    return [raw[i : i + 16] for i in range(0, 16 * n, 16)]
