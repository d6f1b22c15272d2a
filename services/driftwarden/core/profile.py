"""Reference profiles: what "normal" looks like for one (model_id, model_version).

A profile is built from the first ``reference_size`` events of a version (the default) or offline
from a dataset (``driftwarden profile build``). It is plain data, saved as JSON, and holds per
numeric feature a quantile summary, PSI bins, moments, range and missing rate; per categorical
feature the category counts; the prediction signal (P(positive class), top-class confidence or the
regression output); the mean and precision matrix for the multivariate test; per embedding feature
its centroid, a sample of reference vectors in a fixed random projection and its distances to the
centroid (:class:`EmbeddingProfile`); and latency/cost.

>>> from driftwarden_load.scenarios import Scenario, generate
>>> from driftwarden.core.events import PredictionEvent
>>> events = [PredictionEvent.model_validate(e) for e in next(generate(Scenario(), 2000)).prediction_events()]
>>> profile = build_profile("demo-model", "1", events)
>>> len(profile.numeric), len(profile.categorical), profile.task, profile.positive_class
(16, 4, 'classification', '1')
>>> ReferenceProfile.from_json(profile.to_json()) == profile
True
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import orjson

from driftwarden.core.events import PredictionEvent
from driftwarden.core.features import FeatureTypes, infer_types, value_text
from driftwarden.core.state import State, StateError, StateReader, pack_array, pack_float, pack_optional_float
from driftwarden.core.stats import moments, quantile_edges, sorted_bin_proportions, sorted_quantiles
from driftwarden.errors import DriftwardenError

QUANTILE_POINTS = 1000
PSI_BINS = 10
Task = Literal["classification", "regression"]
TASKS: tuple[Task, ...] = ("classification", "regression")
#: Dimensions of the fixed random projection the embedding detectors work in.
PROJECTED_DIMS = 16
#: Projected reference vectors an embedding's profile keeps for the two-sample test.
EMBEDDING_SAMPLE = 2000


@dataclass
class NumericProfile:
    quantiles: list[float]  # sorted summary of the reference values
    edges: list[float]  # inner PSI bin edges
    proportions: list[float]  # reference share per PSI bin
    mean: float
    std: float
    minimum: float
    maximum: float
    missing_rate: float
    n: int

    @classmethod
    def of(cls, values: np.ndarray, missing_rate: float) -> NumericProfile:
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            finite = np.zeros(1)
        points = min(QUANTILE_POINTS, len(finite))
        ordered = np.sort(finite)  # (one sort for the summary, the PSI edges and their shares)
        edges = quantile_edges(ordered, PSI_BINS)
        mean, std = moments(finite)
        return cls(
            quantiles=sorted_quantiles(ordered, np.linspace(0, 1, points)).tolist(),
            edges=edges.tolist(),
            proportions=sorted_bin_proportions(ordered, edges).tolist(),
            mean=mean,
            std=std,
            minimum=float(finite.min()),
            maximum=float(finite.max()),
            missing_rate=missing_rate,
            n=len(finite),
        )

    def state(self) -> State:
        return {
            "quantiles": pack_array(self.quantiles),
            "edges": pack_array(self.edges),
            "proportions": pack_array(self.proportions),
            **{key: pack_float(getattr(self, key)) for key in ("mean", "std", "minimum", "maximum", "missing_rate")},
            "n": self.n,
        }

    @classmethod
    def from_state(cls, state: StateReader) -> NumericProfile:
        quantiles, edges, proportions = (state.array(key).tolist() for key in ("quantiles", "edges", "proportions"))
        if not quantiles or len(proportions) != len(edges) + 1:
            raise StateError(f"{state.where}: quantiles empty or PSI bins inconsistent")
        mean, std, minimum, maximum, missing_rate = (
            state.number(key) for key in ("mean", "std", "minimum", "maximum", "missing_rate")
        )
        return cls(quantiles, edges, proportions, mean, std, minimum, maximum, missing_rate, state.integer("n"))


@dataclass
class CategoricalProfile:
    counts: dict[str, int]
    missing_rate: float

    def state(self) -> State:
        return {"counts": dict(self.counts), "missing_rate": pack_float(self.missing_rate)}

    @classmethod
    def from_state(cls, state: StateReader) -> CategoricalProfile:
        counts = state.child("counts")
        return cls({name: counts.integer(name) for name in counts.data}, state.number("missing_rate"))


@cache
def projection(dim: int, seed: int) -> np.ndarray:
    """The fixed Gaussian random projection of ``dim``-long vectors to :data:`PROJECTED_DIMS` dimensions.

    Seeded, so the profile stores only ``(dim, seed)``; it preserves distances up to a small relative
    error (Johnson-Lindenstrauss), which is what a kernel two-sample test on distances needs.
    """
    matrix = np.random.default_rng(seed).normal(0.0, 1.0 / math.sqrt(PROJECTED_DIMS), (dim, PROJECTED_DIMS))
    matrix.flags.writeable = False
    return matrix


@dataclass
class EmbeddingProfile:
    """What the embedding detectors need of one fixed-length vector feature's reference.

    >>> vectors = np.random.default_rng(0).normal(0, 1, (1000, 64))
    >>> profile = EmbeddingProfile.of(vectors, 0.0)
    >>> profile.dim, len(profile.sample), len(profile.sample[0]), round(profile.distance.mean)
    (64, 1000, 16, 8)
    >>> profile.project(vectors[:3]).shape, EmbeddingProfile.from_state(StateReader(profile.state(), "p")) == profile
    ((3, 16), True)
    """

    dim: int
    seed: int  # of the random projection
    centroid: list[float]  # mean reference vector
    sample: list[list[float]]  # projected reference vectors, at most EMBEDDING_SAMPLE, evenly spaced
    distance: NumericProfile  # the reference's Euclidean distances to the centroid (and the missing rate)

    @classmethod
    def of(cls, vectors: np.ndarray, missing_rate: float, seed: int = 0) -> EmbeddingProfile:
        """The profile of ``vectors`` (rows; a row with a NaN is missing)."""
        present = vectors[np.isfinite(vectors).all(axis=1)]
        dim = vectors.shape[1]
        centroid = present.mean(axis=0) if len(present) else np.zeros(dim)
        offsets = present - centroid
        sample = evenly_spaced(offsets, EMBEDDING_SAMPLE) @ projection(dim, seed)
        distance = NumericProfile.of(np.linalg.norm(offsets, axis=1), missing_rate)
        return cls(dim, seed, centroid.tolist(), sample.tolist(), distance)

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` (rows of ``dim``, centred on the centroid) in the fixed random projection."""
        projected: np.ndarray = (vectors - np.asarray(self.centroid)) @ projection(self.dim, self.seed)
        return projected

    def distances(self, vectors: np.ndarray) -> np.ndarray:
        """Euclidean distance of each row of ``vectors`` to the centroid (NaN for a missing row)."""
        distances: np.ndarray = np.linalg.norm(vectors - np.asarray(self.centroid), axis=1)
        return distances

    def state(self) -> State:
        return {
            "dim": self.dim,
            "seed": self.seed,
            "centroid": pack_array(self.centroid),
            "sample": pack_array(np.asarray(self.sample).ravel()),
            "distance": self.distance.state(),
        }

    @classmethod
    def from_state(cls, state: StateReader) -> EmbeddingProfile:
        dim, centroid, sample = state.integer("dim", minimum=1), state.array("centroid"), state.array("sample")
        if len(centroid) != dim or len(sample) % PROJECTED_DIMS:
            raise StateError(f"{state.where}: centroid or projected sample of the wrong size")
        return cls(
            dim,
            state.integer("seed"),
            centroid.tolist(),
            sample.reshape(-1, PROJECTED_DIMS).tolist(),
            NumericProfile.from_state(state.child("distance")),
        )


def evenly_spaced(rows: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` of ``rows``, evenly spaced (deterministic, in order)."""
    return rows if len(rows) <= limit else rows[np.linspace(0, len(rows) - 1, limit).astype(int)]


@dataclass
class ReferenceProfile:
    model_id: str
    model_version: str
    n_events: int
    task: Task
    positive_class: str | None
    numeric: dict[str, NumericProfile]
    categorical: dict[str, CategoricalProfile]
    signal: NumericProfile | None
    confidence_mean: float | None
    multivariate_features: list[str] = field(default_factory=list)
    mean_vector: list[float] = field(default_factory=list)
    precision_matrix: list[list[float]] = field(default_factory=list)
    latency_p99_ms: float | None = None
    cost_per_1k: float | None = None
    embedding: dict[str, EmbeddingProfile] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    def state(self) -> State:
        return {
            "model_id": self.model_id,
            "model_version": self.model_version,
            "n_events": self.n_events,
            "task": self.task,
            "positive_class": self.positive_class,
            "numeric": {name: p.state() for name, p in self.numeric.items()},
            "categorical": {name: p.state() for name, p in self.categorical.items()},
            "signal": None if self.signal is None else self.signal.state(),
            "confidence_mean": pack_optional_float(self.confidence_mean),
            "multivariate_features": list(self.multivariate_features),
            "mean_vector": list(self.mean_vector),
            "precision_matrix": [list(row) for row in self.precision_matrix],
            "latency_p99_ms": pack_optional_float(self.latency_p99_ms),
            "cost_per_1k": pack_optional_float(self.cost_per_1k),
            "embedding": {name: p.state() for name, p in self.embedding.items()},
        }

    @classmethod
    def from_state(cls, state: StateReader) -> ReferenceProfile:
        task = state.text("task")
        if task not in ("classification", "regression"):
            raise StateError(f"{state.where}.task: expected classification or regression")
        signal = state.optional_child("signal")
        rows = state.items("precision_matrix")
        precision = [StateReader({"row": row}, f"{state.where}.precision_matrix").numbers("row") for row in rows]
        return cls(
            model_id=state.text("model_id"),
            model_version=state.text("model_version"),
            n_events=state.integer("n_events"),
            task="classification" if task == "classification" else "regression",
            positive_class=state.optional_text("positive_class"),
            numeric={k: NumericProfile.from_state(v) for k, v in state.mapping("numeric").items()},
            categorical={k: CategoricalProfile.from_state(v) for k, v in state.mapping("categorical").items()},
            signal=None if signal is None else NumericProfile.from_state(signal),
            confidence_mean=state.optional_number("confidence_mean"),
            multivariate_features=state.texts("multivariate_features"),
            mean_vector=state.numbers("mean_vector"),
            precision_matrix=precision,
            latency_p99_ms=state.optional_number("latency_p99_ms"),
            cost_per_1k=state.optional_number("cost_per_1k"),
            embedding={k: EmbeddingProfile.from_state(v) for k, v in state.mapping("embedding").items()},
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> ReferenceProfile:
        data: dict[str, Any] = orjson.loads(raw)
        data["numeric"] = {k: NumericProfile(**v) for k, v in data["numeric"].items()}
        data["categorical"] = {k: CategoricalProfile(**v) for k, v in data["categorical"].items()}
        data["signal"] = NumericProfile(**data["signal"]) if data["signal"] else None
        data["embedding"] = {
            k: EmbeddingProfile(**(v | {"distance": NumericProfile(**v["distance"])}))
            for k, v in data.get("embedding", {}).items()
        }
        return cls(**data)


def read_profile(path: Path) -> ReferenceProfile:
    """The reference profile in the file ``path``; :class:`~driftwarden.errors.DriftwardenError` naming the file
    when it cannot be read or is not a profile (a ``KeyError: 'numeric'`` from deep inside said neither)."""
    try:
        return ReferenceProfile.from_json(path.read_bytes())
    except OSError as exc:
        raise DriftwardenError(f"cannot read {path}: {exc.strerror}") from None
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
        raise DriftwardenError(f"{path}: not a reference profile ({type(exc).__name__}: {exc})") from None


def check_profiles_dir(profiles_dir: Path) -> None:
    """Every profile under ``profiles_dir`` (``<model_id>/<model_version>.json``) read once:
    :class:`~driftwarden.errors.DriftwardenError` for a directory that is not there or a file that is not a
    profile (before a worker starts: a typo would leave every model on its first events, a broken file would
    refuse its model's events later)."""
    if not profiles_dir.is_dir():
        raise DriftwardenError(f"profiles directory {profiles_dir} does not exist or is not a directory")
    for path in sorted(profiles_dir.glob("*/*.json")):
        read_profile(path)


@dataclass
class FeatureSchema:
    """A profile's columns: which features are numeric, categorical or embeddings (as
    :func:`driftwarden.core.features.infer_types` finds them; an embedding with its length), and how to
    read the prediction signal."""

    numeric: list[str]
    categorical: list[str]
    task: Task
    positive_class: str | None
    embedding: dict[str, int] = field(default_factory=dict)


@dataclass
class Columns:
    """A run of events, column-wise: the unit every window test works on."""

    event_ids: list[str]
    ts: np.ndarray
    numeric: np.ndarray  # (n, len(schema.numeric)); NaN = missing or wrong type
    numeric_missing: np.ndarray  # (n, len(schema.numeric)) bool: value absent or null
    categorical: list[list[str | None]]  # per categorical feature, its values
    type_violations: np.ndarray  # (n, len(schema.numeric)) bool: a value that is not a number
    signal: np.ndarray  # prediction signal per event (NaN when unavailable)
    confidence: np.ndarray  # top-class probability (NaN without scores)
    latency_ms: np.ndarray
    cost: np.ndarray
    #: per embedding feature, its vectors (n, length); a missing value, or one of another length, is a NaN row
    embeddings: list[np.ndarray] = field(default_factory=list)
    _counts: dict[int, Counter[str | None]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.event_ids)

    def category_counts(self, column: int) -> Counter[str | None]:
        """How often each value of categorical feature ``column`` occurs (None: missing): counted once, then
        shared by the window's tests of that feature (which must not change it).

        >>> rows = Columns.of_rows(np.zeros((4, 0)), categorical=[["a", None, "b", "a"]])
        >>> rows.category_counts(0), rows.category_counts(0) is rows.category_counts(0)
        (Counter({'a': 2, None: 1, 'b': 1}), True)
        """
        if column not in self._counts:
            self._counts[column] = Counter(self.categorical[column])
        return self._counts[column]

    @classmethod
    def of_rows(
        cls,
        numeric: np.ndarray,
        numeric_missing: np.ndarray | None = None,
        categorical: Sequence[list[str | None]] = (),
        type_violations: np.ndarray | None = None,
        signal: np.ndarray | None = None,
        embeddings: Sequence[np.ndarray] = (),
    ) -> Columns:
        """Rows that are not events (a training set, a profile's summary): no ids, times, scores or costs.

        >>> rows = Columns.of_rows(np.zeros((3, 1)), categorical=[["a", None, "b"]])
        >>> len(rows), rows.numeric.shape, rows.categorical
        (3, (3, 1), [['a', None, 'b']])
        """
        n = len(numeric)
        unknown = np.full(n, np.nan)
        absent = np.zeros(numeric.shape, dtype=bool)
        return cls(
            event_ids=[""] * n,
            ts=unknown,
            numeric=numeric,
            numeric_missing=absent if numeric_missing is None else numeric_missing,
            categorical=list(categorical),
            type_violations=absent if type_violations is None else type_violations,
            signal=unknown if signal is None else signal,
            confidence=unknown,
            latency_ms=unknown,
            cost=unknown,
            embeddings=list(embeddings),
        )

    def state(self) -> State:
        return {
            "event_ids": list(self.event_ids),
            "categorical": [list(values) for values in self.categorical],
            "embeddings": [{"length": int(v.shape[1]), "values": pack_array(v.ravel())} for v in self.embeddings],
            **{name: pack_array(getattr(self, name).ravel()) for name in _ARRAYS},
            **{name: pack_array(getattr(self, name).ravel()) for name in _MATRICES},
        }

    @classmethod
    def from_state(cls, state: StateReader) -> Columns:
        n = len(event_ids := state.texts("event_ids"))
        categorical = []
        for i, values in enumerate(state.items("categorical")):
            if not isinstance(values, list) or len(values) != n or not all(v is None or type(v) is str for v in values):
                raise StateError(f"{state.where}.categorical[{i}]: expected {n} strings or nulls")
            categorical.append(list(values))
        arrays = {name: state.array(name) for name in _ARRAYS}
        matrices = {name: state.array(name) for name in _MATRICES}
        width = len(matrices["numeric"]) // n if n else 0
        if any(len(a) != n for a in arrays.values()) or any(len(m) != n * width for m in matrices.values()):
            raise StateError(f"{state.where}: columns of different lengths")
        embeddings = []
        for item in state.children("embeddings"):
            length, values = item.integer("length", minimum=1), item.array("values")
            if len(values) != n * length:
                raise StateError(f"{item.where}: expected {n} vectors of {length}")
            embeddings.append(values.reshape(n, length))
        return cls(
            event_ids=event_ids,
            ts=arrays["ts"],
            numeric=matrices["numeric"].reshape(n, width),
            numeric_missing=matrices["numeric_missing"].reshape(n, width).astype(bool),
            categorical=categorical,
            type_violations=matrices["type_violations"].reshape(n, width).astype(bool),
            signal=arrays["signal"],
            confidence=arrays["confidence"],
            latency_ms=arrays["latency_ms"],
            cost=arrays["cost"],
            embeddings=embeddings,
        )

    def slice(self, start: int, stop: int) -> Columns:
        return Columns(
            event_ids=self.event_ids[start:stop],
            ts=self.ts[start:stop],
            numeric=self.numeric[start:stop],
            numeric_missing=self.numeric_missing[start:stop],
            categorical=[values[start:stop] for values in self.categorical],
            type_violations=self.type_violations[start:stop],
            signal=self.signal[start:stop],
            confidence=self.confidence[start:stop],
            latency_ms=self.latency_ms[start:stop],
            cost=self.cost[start:stop],
            embeddings=[vectors[start:stop] for vectors in self.embeddings],
        )

    @staticmethod
    def concat(parts: Sequence[Columns]) -> Columns:
        return Columns(
            event_ids=[i for p in parts for i in p.event_ids],
            ts=np.concatenate([p.ts for p in parts]),
            numeric=np.vstack([p.numeric for p in parts]),
            numeric_missing=np.vstack([p.numeric_missing for p in parts]),
            categorical=[[v for p in parts for v in p.categorical[j]] for j in range(len(parts[0].categorical))],
            type_violations=np.vstack([p.type_violations for p in parts]),
            signal=np.concatenate([p.signal for p in parts]),
            confidence=np.concatenate([p.confidence for p in parts]),
            latency_ms=np.concatenate([p.latency_ms for p in parts]),
            cost=np.concatenate([p.cost for p in parts]),
            embeddings=[np.vstack([p.embeddings[j] for p in parts]) for j in range(len(parts[0].embeddings))],
        )


_ARRAYS = ("ts", "signal", "confidence", "latency_ms", "cost")
_MATRICES = ("numeric", "numeric_missing", "type_violations")


def infer_schema(events: Sequence[PredictionEvent], declared: dict[str, str], ignored: Sequence[str]) -> FeatureSchema:
    """Feature types from the config, else from the values (:func:`driftwarden.core.features.infer_types`)."""
    types = infer_types((e.features for e in events), declared, ignored)
    classes = {c for e in events for c in e.scores or {}}
    embedding = {
        name: common_length(len(v) for e in events if type(v := e.features.get(name)) is list)
        for name in types.embedding
    }
    return feature_schema(types, classes, any(isinstance(e.prediction, str) for e in events), embedding)


def feature_schema(
    types: FeatureTypes, classes: set[str], text_predictions: bool, embedding: dict[str, int]
) -> FeatureSchema:
    """The schema of rows whose features have ``types``, whose scores name ``classes`` (a classifier's, as
    is a model predicting text) and whose embeddings have the given lengths."""
    positive = None
    if len(classes) == 2:
        positive = "true" if classes == {"false", "true"} else sorted(classes)[1]
    return FeatureSchema(
        numeric=list(types.numeric),
        categorical=list(types.categorical),
        task="classification" if classes or text_predictions else "regression",
        positive_class=positive,
        embedding=embedding,
    )


def common_length(lengths: Iterable[int]) -> int:
    """The length of an embedding: the most common non-zero one among its values (1 when there is none).

    >>> common_length([3, 0, 3, 2, 0, 0]), common_length([])
    (3, 1)
    """
    counts = Counter(n for n in lengths if n)
    return counts.most_common(1)[0][0] if counts else 1


def vectors(values: Sequence[Any], length: int) -> np.ndarray:
    """An embedding's values as rows of ``length`` numbers; a missing value, or any other value, a NaN row.

    >>> vectors([[1.0, 2.0], None, [3.0], "x"], 2)
    array([[ 1.,  2.],
           [nan, nan],
           [nan, nan],
           [nan, nan]])
    """
    rows = np.full((len(values), length), np.nan)
    fits = [i for i, v in enumerate(values) if type(v) is list and len(v) == length]
    if fits:
        rows[fits] = np.array([values[i] for i in fits], dtype=float)
    return rows


def feature_rows(features: list[dict[str, Any]], names: Sequence[str]) -> list[tuple[Any, ...]]:
    """Each event's values of ``names``, None where absent (one C-level lookup per event when none is).

    >>> feature_rows([{"a": 1.0, "b": "x"}, {"b": "y"}], ["a", "b"])
    [(1.0, 'x'), (None, 'y')]
    """
    if len(names) > 1:
        try:
            return list(map(itemgetter(*names), features))
        except KeyError:  # some event lacks a feature
            pass
    return [tuple(f.get(name) for name in names) for f in features]


def _numeric_columns(features: list[dict[str, Any]], names: Sequence[str]) -> tuple[np.ndarray, ...]:
    """(values, missing, type violations), each (events, names). Vectorized when all are numbers."""
    n, k = len(features), len(names)
    flat = list(chain.from_iterable(feature_rows(features, names)))
    types = set(map(type, flat))
    if types <= {float}:  # the common case: one conversion, no per-value Python work
        numeric = np.array(flat, dtype=float).reshape(n, k) if flat else np.full((n, k), np.nan)
        return numeric, np.zeros((n, k), dtype=bool), np.zeros((n, k), dtype=bool)
    values, missing, violations = numeric_column(flat, n * k)
    return values.reshape(n, k), missing.reshape(n, k), violations.reshape(n, k)


def numeric_column(values: np.ndarray | Sequence[Any], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(numbers with NaN elsewhere, absent or null, not a number) of ``n`` values of a numeric feature.

    >>> numeric_column([1.0, None, "x", True], 4)
    (array([ 1., nan, nan, nan]), array([False,  True, False, False]), array([False, False,  True,  True]))
    """
    if isinstance(values, np.ndarray):  # a column already validated as numbers
        return values, np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    objects = np.array(values, dtype=object).reshape(n)
    missing = np.equal(objects, np.array(None))
    is_number = np.vectorize(lambda v: type(v) is float, otypes=[bool])(objects) if n else missing
    numeric = np.where(is_number, objects, np.nan).astype(float)
    return numeric, missing, ~(is_number | missing)


def top_scores(events: Sequence[PredictionEvent]) -> list[float]:
    """Each event's top score, its confidence (NaN without scores): what the detectors' confidence column and
    the label joiner keep.

    >>> from driftwarden.core.events import PredictionEvent
    >>> scored = PredictionEvent(event_id="a", model_id="m", model_version="1", ts=1.0, features={},
    ...                          prediction="yes", scores={"yes": 0.75, "no": 0.25})
    >>> top_scores([scored, scored.model_copy(update={"scores": None})])
    [0.75, nan]
    """
    return [max(scores.values()) if (scores := e.scores) else math.nan for e in events]


def to_columns(events: Sequence[PredictionEvent], schema: FeatureSchema) -> Columns:
    """Events as columns. A number where a category is expected is a category (its text); anything
    other than a number where a number is expected is a type violation (and not a value)."""
    n = len(events)
    features = [e.features for e in events]
    numeric, missing, violations = _numeric_columns(features, schema.numeric)
    categorical = []
    rows = feature_rows(features, schema.categorical)
    for column in list(zip(*rows, strict=True)) or [()] * len(schema.categorical):  # (no events: empty columns)
        values = list(column)
        texts = cast("list[str | None]", values) if set(map(type, values)) <= {str} else list(map(value_text, values))
        categorical.append(texts)
    positive, regression = schema.positive_class, schema.task == "regression"
    confidence = top_scores(events)
    signal = [
        (scores.get(positive, math.nan) if positive else top) if (scores := e.scores)
        else e.prediction if regression and type(e.prediction) is float else math.nan
        for e, top in zip(events, confidence, strict=True)
    ]  # fmt: skip
    return Columns(
        event_ids=[e.event_id for e in events],
        ts=np.fromiter((e.ts for e in events), dtype=float, count=n),
        numeric=numeric,
        numeric_missing=missing,
        categorical=categorical,
        type_violations=violations,
        signal=np.array(signal, dtype=float),
        confidence=np.array(confidence, dtype=float),
        latency_ms=np.array([np.nan if e.latency_ms is None else e.latency_ms for e in events], dtype=float),
        cost=np.array([np.nan if e.cost is None else e.cost for e in events], dtype=float),
        embeddings=[vectors([f.get(name) for f in features], length) for name, length in schema.embedding.items()],
    )


def _nan_quantile(values: np.ndarray, q: float) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.quantile(finite, q)) if len(finite) else None


def build_profile(
    model_id: str,
    model_version: str,
    events: Sequence[PredictionEvent],
    declared: dict[str, str] | None = None,
    ignored: Sequence[str] = (),
) -> ReferenceProfile:
    """The reference profile of ``events`` (typically a new version's first events)."""
    schema = infer_schema(events, declared or {}, ignored)
    return profile_of(model_id, model_version, schema, to_columns(events, schema))


def profile_of(model_id: str, model_version: str, schema: FeatureSchema, columns: Columns) -> ReferenceProfile:
    """The reference profile of rows already in columns (events, or a training set's table)."""
    n = max(len(columns), 1)
    numeric = {
        name: NumericProfile.of(columns.numeric[:, j], float(columns.numeric_missing[:, j].mean()))
        for j, name in enumerate(schema.numeric)
    }
    categorical = {}
    for name, values in zip(schema.categorical, columns.categorical, strict=True):
        present = [v for v in values if v is not None]
        counts: dict[str, int] = {}
        for value in present:
            counts[value] = counts.get(value, 0) + 1
        categorical[name] = CategoricalProfile(dict(sorted(counts.items())), 1 - len(present) / n)
    finite_signal = columns.signal[np.isfinite(columns.signal)]
    mean_vector, precision, multivariate = _multivariate(columns, schema)
    cost = columns.cost[np.isfinite(columns.cost)]
    confidence = columns.confidence[np.isfinite(columns.confidence)]
    return ReferenceProfile(
        model_id=model_id,
        model_version=model_version,
        n_events=len(columns),
        task=schema.task,
        positive_class=schema.positive_class,
        numeric=numeric,
        categorical=categorical,
        signal=NumericProfile.of(finite_signal, 0.0) if len(finite_signal) else None,
        confidence_mean=float(confidence.mean()) if len(confidence) else None,
        multivariate_features=multivariate,
        mean_vector=mean_vector,
        precision_matrix=precision,
        latency_p99_ms=_nan_quantile(columns.latency_ms, 0.99),
        cost_per_1k=float(cost.mean() * 1000) if len(cost) else None,
        embedding={
            name: EmbeddingProfile.of(rows, float(np.isnan(rows).any(axis=1).mean()) if len(rows) else 0.0)
            for name, rows in zip(schema.embedding, columns.embeddings, strict=True)
        },
    )


def _multivariate(columns: Columns, schema: FeatureSchema) -> tuple[list[float], list[list[float]], list[str]]:
    """Mean and (pseudo-)inverse covariance over complete rows of the non-constant numeric features
    (none when fewer than two vary: one feature alone is the univariate tests' subject)."""
    complete = columns.numeric[np.isfinite(columns.numeric).all(axis=1)]
    if len(schema.numeric) < 2 or len(complete) <= len(schema.numeric) * 5:
        return [], [], []
    with np.errstate(over="ignore", invalid="ignore"):  # (a value beyond ~1e154: its square is not a number)
        keep = complete.std(axis=0) > 0
        data = complete[:, keep]
        covariance, mean = np.cov(data, rowvar=False), data.mean(axis=0)
    if keep.sum() < 2:
        return [], [], []
    if not np.all(np.isfinite(covariance)) or not np.all(np.isfinite(mean)):
        # (LAPACK's SVD of a matrix with inf or NaN spun forever on one prediction's 1e200, and with it the worker)
        return [], [], []
    precision = np.linalg.pinv(covariance)
    names = [name for name, k in zip(schema.numeric, keep, strict=True) if k]
    if not np.all(np.isfinite(precision)):
        return [], [], []
    return mean.tolist(), precision.tolist(), names


def schema_of(profile: ReferenceProfile) -> FeatureSchema:
    return FeatureSchema(
        numeric=list(profile.numeric),
        categorical=list(profile.categorical),
        task=profile.task,
        positive_class=profile.positive_class,
        embedding={name: p.dim for name, p in profile.embedding.items()},
    )
