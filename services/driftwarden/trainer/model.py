"""Train, evaluate, export and check challengers. Pure: no Kafka, no files.

A model is a scikit-learn pipeline (scaling for numeric features, one-hot encoding for categorical
ones, then the classifier) exported to ONNX with one named input per feature, so serving needs only
onnxruntime and the raw feature values.

Embeddings (array features) are monitored, not trained on: serving's inference requests carry one
number, string or boolean per feature (``schemas/inference-request.v1.json``), so a model with an
array input could not be served. They are left out of the model, and the dataset (and so the
version's manifest) names them with the reason (:data:`NOT_SERVABLE`).

>>> from driftwarden_load.scenarios import Scenario, generate
>>> examples = [example for chunk in generate(Scenario(n_events=3_000)) for example in chunk.training_examples()]
>>> dataset = Dataset.from_examples(examples)
>>> train_set, holdout = dataset.split(holdout_fraction=0.2)
>>> pipeline = train(train_set, TrainerConfig())
>>> onnx_model = OnnxModel(export_onnx(pipeline, dataset.schema))
>>> Dataset.from_examples(examples, declared={"cat_00": "categorical", "num_00": "categorical"}).schema.numeric[:2]
('num_01', 'num_02')
>>> parity_error(pipeline, onnx_model, holdout) < 1e-4
True
>>> 0.8 < evaluate(onnx_model.predict, holdout)["accuracy"] < 1.0
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from driftwarden.core.config import MonitoringConfig
from driftwarden.core.features import MISSING_CATEGORY, FeatureTypes, infer_types, is_number, value_text
from driftwarden.errors import DriftwardenError
from driftwarden.registry.onnx_model import OnnxModel

ModelFamily = Literal["logistic_regression", "gradient_boosting"]
MODEL_FAMILIES: tuple[ModelFamily, ...] = get_args(ModelFamily)
#: How a winning challenger goes live.
Rollout = Literal["direct", "canary", "shadow"]
ROLLOUTS: tuple[Rollout, ...] = get_args(Rollout)
ONNX_OPSET = 17
#: Why an embedding feature is not a model input (the manifest's ``excluded_features``).
NOT_SERVABLE = "embedding: serving's inference requests carry scalar features only; monitored, not trained on"


class TrainingError(DriftwardenError):
    """The data cannot produce a model (too few examples, one class only, ...)."""


@dataclass(frozen=True)
class TrainerConfig:
    model_family: ModelFamily = "logistic_regression"
    seed: int = 0
    holdout_fraction: float = 0.2
    min_examples: int = 500
    promotion_margin: float = 0.01  # challenger accuracy must beat the champion's by this much
    parity_tolerance: float = 1e-4  # largest |P_onnx - P_sklearn| accepted on the holdout
    rollout: Rollout = "direct"
    canary_fraction: float = 0.1
    # Declared feature types come from the monitoring config's ``features``; inferred when absent.
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)


def _label_text(value: Any) -> str:
    return value_text(value) or ""


def _category(value: Any) -> str:
    text = value_text(value)
    return MISSING_CATEGORY if text is None else text


@dataclass
class Dataset:
    """Labelled examples as a table, ordered by event time."""

    frame: pd.DataFrame
    labels: np.ndarray  # label text per row ("0"/"1", "spam", ...)
    ts: np.ndarray
    schema: FeatureTypes
    dropped: int = 0  # examples left out: a number beyond float32

    @property
    def excluded(self) -> dict[str, str]:
        """Features of the examples that are not model inputs, with the reason."""
        return dict.fromkeys(self.schema.embedding, NOT_SERVABLE)

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_examples(cls, examples: Sequence[dict[str, Any]], declared: Mapping[str, str] | None = None) -> Dataset:
        """Examples are ``{"features": {...}, "label": ..., "ts": ...}`` (as
        :class:`~driftwarden.core.training_join.TrainingJoin` assembles them); feature types as
        declared, else inferred (:func:`driftwarden.core.features.infer_types`)."""
        ordered = sorted(examples, key=lambda e: e["ts"])
        schema = infer_types((e["features"] for e in ordered), declared or {})
        columns: dict[str, Any] = {}
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf: its example is dropped below
            for name in schema.numeric:
                values = [e["features"].get(name) for e in ordered]
                columns[name] = np.array([v if is_number(v) else None for v in values], dtype=np.float32)
        for name in schema.categorical:
            columns[name] = np.array([_category(e["features"].get(name)) for e in ordered], dtype=object)
        dataset = cls(
            frame=pd.DataFrame(columns, columns=[*schema.numeric, *schema.categorical]),  # not the excluded ones
            labels=np.array([_label_text(e["label"]) for e in ordered], dtype=object),
            ts=np.array([e["ts"] for e in ordered], dtype=float),
            schema=schema,
        )
        return dataset.finite()

    def finite(self) -> Dataset:
        """The examples whose numbers all fit in float32 (the models' input type); ``dropped`` counts the others."""
        numbers = self.frame[list(self.schema.numeric)].to_numpy(dtype=np.float32)
        keep = ~np.isinf(numbers).any(axis=1)
        if keep.all():
            return self
        kept = self.rows(keep)
        kept.dropped = self.dropped + int((~keep).sum())
        return kept

    def split(self, holdout_fraction: float) -> tuple[Dataset, Dataset]:
        """The most recent ``holdout_fraction`` of the examples is the holdout (a time split)."""
        cut = int(len(self) * (1 - holdout_fraction))
        return self.rows(slice(0, cut)), self.rows(slice(cut, len(self)))

    def rows(self, index: slice | np.ndarray) -> Dataset:
        frame = self.frame.iloc[index].reset_index(drop=True)
        return Dataset(frame, self.labels[index], self.ts[index], self.schema, self.dropped)


def train(dataset: Dataset, config: TrainerConfig) -> Pipeline:
    """Fit a challenger; deterministic for a given dataset and seed."""
    if len(dataset) < config.min_examples:
        dropped = f" ({dataset.dropped} more left out: a number beyond float32)" if dataset.dropped else ""
        raise TrainingError(
            f"{len(dataset)} labelled examples in the window{dropped}; need at least {config.min_examples}"
        )
    if len(set(dataset.labels)) < 2:
        raise TrainingError("every example in the window has the same label")
    if not dataset.frame.columns.size:
        left_out = "; ".join(f"{name} ({reason})" for name, reason in dataset.excluded.items())
        raise TrainingError(f"no feature a model can take{': left out ' + left_out if left_out else ''}")
    steps = []
    if dataset.schema.numeric:
        steps.append(("numeric", StandardScaler(), list(dataset.schema.numeric)))
    if dataset.schema.categorical:
        steps.append(("categorical", OneHotEncoder(handle_unknown="ignore"), list(dataset.schema.categorical)))
    if config.model_family == "logistic_regression":
        classifier: Any = LogisticRegression(max_iter=2_000, random_state=config.seed)
    else:
        classifier = GradientBoostingClassifier(random_state=config.seed)
    pipeline = Pipeline([("features", ColumnTransformer(steps)), ("classifier", classifier)])
    frame = dataset.frame.fillna({name: 0.0 for name in dataset.schema.numeric})
    return pipeline.fit(frame, dataset.labels)


def export_onnx(pipeline: Pipeline, schema: FeatureTypes) -> bytes:
    """The pipeline as ONNX: one [N, 1] input per feature, outputs ``label`` and ``probabilities``."""
    inputs = [(n, FloatTensorType([None, 1])) for n in schema.numeric]
    inputs += [(n, StringTensorType([None, 1])) for n in schema.categorical]
    model = convert_sklearn(
        pipeline, initial_types=inputs, options={id(pipeline): {"zipmap": False}}, target_opset=ONNX_OPSET
    )
    _restore_input_names(model.graph, list(schema.numeric) + list(schema.categorical))
    return model.SerializeToString()


def _restore_input_names(graph: Any, names: list[str]) -> None:
    """Name the graph's inputs after the features again: skl2onnx turns ``a.b``, ``a-b``, ``a b`` and
    ``1x`` into identifiers, and serving feeds each input by its feature's name."""
    renamed = {graph_input.name: name for graph_input, name in zip(graph.input, names, strict=True)}
    for graph_input in graph.input:
        graph_input.name = renamed[graph_input.name]
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)


def parity_error(pipeline: Pipeline, onnx_model: OnnxModel, holdout: Dataset) -> float:
    """Largest difference between scikit-learn's and ONNX Runtime's probabilities on the holdout."""
    frame = holdout.frame.fillna({name: 0.0 for name in holdout.schema.numeric})
    expected = pipeline.predict_proba(frame)
    _, actual = onnx_model.predict(holdout.frame)
    return float(np.max(np.abs(expected - actual))) if len(expected) else 0.0


def evaluate(predict: Callable[[pd.DataFrame], tuple[np.ndarray, np.ndarray]], holdout: Dataset) -> dict[str, float]:
    labels, _ = predict(holdout.frame)
    classes = sorted(set(holdout.labels) | set(labels))
    average = "binary" if len(classes) == 2 else "macro"
    positive = classes[-1]
    return {
        "accuracy": float(accuracy_score(holdout.labels, labels)),
        "f1": float(f1_score(holdout.labels, labels, average=average, pos_label=positive, zero_division=0)),
        "holdout_examples": float(len(holdout)),
    }


def decide(challenger: dict[str, float], champion: dict[str, float] | None, margin: float) -> tuple[bool, str]:
    """Promote only a challenger that beats the champion's holdout accuracy by ``margin``."""
    if champion is None:
        return True, "no champion yet"
    gain = challenger["accuracy"] - champion["accuracy"]
    if gain >= margin:
        return True, f"accuracy {challenger['accuracy']:.4f} beats the champion's {champion['accuracy']:.4f}"
    return False, (
        f"accuracy {challenger['accuracy']:.4f} vs the champion's {champion['accuracy']:.4f}: "
        f"gain {gain:+.4f} is below the required {margin:.4f}"
    )
