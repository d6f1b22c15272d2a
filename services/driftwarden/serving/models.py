"""Serving-side models: request validation, scoring, and an atomically swappable active version.

>>> import tempfile
>>> from pathlib import Path
>>> from driftwarden.registry.store import ModelRegistry
>>> registry = ModelRegistry(Path(tempfile.mkdtemp()))
>>> ActiveModels(registry).get("fraud") is None
True
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any, cast

import numpy as np

from driftwarden.core.events import ModelPublished
from driftwarden.core.features import is_number
from driftwarden.errors import DriftwardenError
from driftwarden.registry.onnx_model import OnnxModel
from driftwarden.registry.store import Manifest, ModelRegistry, RegistryError

log = logging.getLogger(__name__)

FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_INSTANCES = 10_000  # per request
SERVABLE = ("promoted", "canary", "shadow")  # a version whose manifest says "rejected" is never served
# One onnxruntime thread per call: micro-batches are small, and the threads of a larger pool spin
# between calls, taking CPU time from the event loop (one row, 1 vs 2 threads: ~65 vs ~160-230 µs of CPU a call).
ONNX_THREADS = 1
_NUMBERS = {float, int}
_CATEGORIES = {str, float, int, bool}  # not null, no objects, no arrays


class BadRequestError(DriftwardenError):
    """The request cannot be scored; the message says exactly which instance and field."""


class TooLargeError(BadRequestError):
    """The request carries more than :data:`MAX_INSTANCES` instances."""


@dataclass(frozen=True)
class Columns:
    """A request's instances sent as columns (the Open Inference Protocol): each input by name, numbers
    as float64 (already checked: finite, within float32), categories as an object array of text, and
    the event ids the caller gave (None: make them)."""

    inputs: dict[str, np.ndarray]
    rows: int
    event_ids: list[str] | None = None

    def __len__(self) -> int:
        return self.rows


# A request's instances: rows (a ``{"features": {...}}`` object each, as sent) or columns.
Instances = list[Any] | Columns


@dataclass(frozen=True)
class ServedModel:
    """One loaded version. Immutable: a swap replaces the whole object, in-flight work keeps its own."""

    manifest: Manifest
    onnx: OnnxModel

    @property
    def version(self) -> str:
        return self.manifest.version

    def frame(self, instances: list[Any]) -> dict[str, np.ndarray]:
        """Validate raw feature dicts against the model's inputs and build its input columns: numbers as
        float64 (the values as sent; within the float32 range the model takes), categories as sent."""
        columns = self._plain_frame(instances)
        return self._checked_frame(instances) if columns is None else columns

    def frames(self, requests: list[Instances]) -> tuple[dict[str, np.ndarray], list[BadRequestError | None]]:
        """The input columns of several requests' instances (:meth:`frame` of rows, :meth:`select` of
        columns): those of all the rows it accepts, in order, and why each request is refused (None:
        accepted). Requests of rows only are converted together; request by request when one is refused."""
        if all(type(instances) is list for instances in requests):
            rows = cast(list[list[Any]], requests)
            columns = self._plain_frame([instance for instances in rows for instance in instances])
            if columns is not None:
                return columns, [None] * len(requests)
        frames: list[dict[str, np.ndarray]] = []
        refused: list[BadRequestError | None] = []
        for instances in requests:
            try:
                frames.append(self.select(instances) if isinstance(instances, Columns) else self.frame(instances))
                refused.append(None)
            except BadRequestError as exc:
                refused.append(exc)
        return (concat_columns(frames) if frames else {}), refused

    def select(self, sent: Columns) -> dict[str, np.ndarray]:
        """The model's input columns from a request's columns: numbers for its number inputs, text for
        its category inputs (BadRequestError naming the first input it needs and did not get so)."""
        frame: dict[str, np.ndarray] = {}
        for names, kind, taken in ((self.onnx.numeric, "f", "numbers"), (self.onnx.categorical, "O", "text (BYTES)")):
            for name in names:
                column = sent.inputs.get(name)
                if column is None:
                    raise BadRequestError(f"input {name!r}: missing (model v{self.version} needs it)")
                if column.dtype.kind != kind:
                    raise BadRequestError(f"input {name!r}: model v{self.version} takes {taken} for it")
                frame[name] = column
        return frame

    def _plain_frame(self, instances: list[Any]) -> dict[str, np.ndarray] | None:
        """The input columns, all numbers converted at once; None if any instance is not plainly servable."""
        rows = [instance.get("features") if type(instance) is dict else None for instance in instances]
        return self._columns(cast(list[dict[str, Any]], rows)) if all(type(r) is dict for r in rows) else None

    def _columns(self, rows: list[dict[str, Any]]) -> dict[str, np.ndarray] | None:
        """The input columns, all numbers converted at once; None if any value is not plainly servable."""
        try:
            numbers, categories = _table(rows, self.onnx.numeric), _table(rows, self.onnx.categorical)
        except KeyError:  # a feature is missing
            return None
        if not set(map(type, chain.from_iterable(numbers))) <= _NUMBERS:
            return None
        if not set(map(type, chain.from_iterable(categories))) <= _CATEGORIES:
            return None
        shape = (len(rows), len(self.onnx.numeric))
        try:  # (fromiter: no nested-sequence discovery; the types are checked above)
            matrix = np.fromiter(chain.from_iterable(numbers), np.float64, shape[0] * shape[1]).reshape(shape)
        except OverflowError:  # an integer beyond any float
            return None
        if not (np.abs(matrix) <= FLOAT32_MAX).all():  # also refuses NaN
            return None
        columns = dict(zip(self.onnx.numeric, matrix.T.copy(), strict=True))  # (each column contiguous)
        names = self.onnx.categorical
        values = zip(*categories, strict=True) if categories else [()] * len(names)
        return columns | {name: np.array(v, dtype=object) for name, v in zip(names, values, strict=True)}

    def _checked_frame(self, instances: list[Any]) -> dict[str, np.ndarray]:
        """:meth:`frame` row by row: refuses the first row with a value the model cannot take, naming it."""
        numeric = {name: np.empty(len(instances)) for name in self.onnx.numeric}
        categorical: dict[str, list[Any]] = {name: [] for name in self.onnx.categorical}
        for i, instance in enumerate(instances):
            features = instance.get("features") if isinstance(instance, dict) else None
            if not isinstance(features, dict):
                raise BadRequestError(f"instances[{i}]: expected an object with a 'features' object")
            for name, column in numeric.items():
                value = features.get(name)
                if value is None:
                    raise BadRequestError(f"instances[{i}].features.{name}: missing (model v{self.version} needs it)")
                if not is_number(value):
                    raise BadRequestError(f"instances[{i}].features.{name}: expected a number, got {value!r}")
                if not -FLOAT32_MAX <= value <= FLOAT32_MAX:  # also refuses NaN
                    raise BadRequestError(f"instances[{i}].features.{name}: {value!r} is outside the float32 range "
                                          f"the model takes (±{FLOAT32_MAX:.4g})")  # fmt: skip
                column[i] = value
            for name, values in categorical.items():
                value = features.get(name)
                if value is None:
                    raise BadRequestError(f"instances[{i}].features.{name}: missing (model v{self.version} needs it)")
                if isinstance(value, (dict, list)):
                    raise BadRequestError(f"instances[{i}].features.{name}: expected a category, got {value!r}")
                values.append(value)
        return {**numeric, **{name: np.array(values, dtype=object) for name, values in categorical.items()}}

    def score(self, frame: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
        """Predicted labels and class probabilities (float64, a column per class in ``manifest.classes`` order)."""
        labels, probabilities = self.onnx.predict(frame)
        return labels.tolist(), np.asarray(probabilities, dtype=np.float64)


def _table(rows: list[dict[str, Any]], names: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """Each row's values of ``names``, in order (KeyError if one is absent)."""
    if len(names) < 2:
        return [tuple(row[name] for name in names) for row in rows]
    return list(map(itemgetter(*names), rows))


def concat_columns(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The input columns of several requests, one after the other."""
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


@dataclass(frozen=True)
class Challenger:
    """A version tried beside the champion: ``shadow`` scores all traffic silently, ``canary`` answers
    ``fraction`` of the requests."""

    served: ServedModel
    mode: str
    fraction: float


class ActiveModels:
    """The version being served per model (and an optional challenger), swappable while requests are in flight."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry
        self._active: dict[str, ServedModel] = {}
        self._challengers: dict[str, Challenger] = {}
        self._lock = threading.Lock()

    def get(self, model_id: str) -> ServedModel | None:
        return self._active.get(model_id)

    def challenger(self, model_id: str) -> Challenger | None:
        return self._challengers.get(model_id)

    def set_challenger(self, challenger: Challenger) -> None:
        with self._lock:
            self._challengers[challenger.served.manifest.model_id] = challenger
        log.info("%s: %s v%s beside the champion", challenger.served.manifest.model_id, challenger.mode,
                 challenger.served.version)  # fmt: skip

    def models(self) -> dict[str, str]:
        return {model_id: served.version for model_id, served in self._active.items()}

    def load(self, model_id: str, version: str, expected_sha256: str | None = None) -> ServedModel:
        """Load and verify a version without activating it (raises RegistryError if unusable)."""
        manifest = self.registry.manifest(model_id, version)
        if not manifest.classes:
            raise RegistryError(f"{model_id} v{version}: the manifest lists no classes; not a servable classifier")
        if expected_sha256 is not None and expected_sha256 != manifest.sha256:
            raise RegistryError(f"{model_id} v{version}: event sha256 does not match the registry's manifest")
        try:
            onnx = OnnxModel(self.registry.load(model_id, version), threads=ONNX_THREADS)
        except RegistryError:
            raise
        except Exception as exc:  # onnxruntime refuses the bytes
            raise RegistryError(f"{model_id} v{version}: cannot load the ONNX model: {exc}") from None
        return ServedModel(manifest, onnx)

    def load_announced(self, event: ModelPublished) -> ServedModel:
        """Load a version announced on the models topic: its manifest must say it may be served and its
        sha256 must be the announced one (raises RegistryError otherwise)."""
        if event.sha256 is None:
            raise RegistryError(f"{event.model_id} v{event.model_version}: the announcement carries no sha256")
        manifest = self.registry.manifest(event.model_id, event.model_version)
        if manifest.status not in SERVABLE:
            raise RegistryError(f"{event.model_id} v{event.model_version}: its manifest says {manifest.status!r}; "
                                f"only {', '.join(SERVABLE)} versions are served")  # fmt: skip
        return self.load(event.model_id, event.model_version, event.sha256)

    def activate(self, served: ServedModel) -> None:
        """Atomically make ``served`` the active version (the old one finishes what it started)."""
        with self._lock:
            self._active[served.manifest.model_id] = served
            self._challengers.pop(served.manifest.model_id, None)  # a promotion decides any rollout
        log.info("serving %s v%s", served.manifest.model_id, served.version)

    def load_champions(self) -> None:
        """Activate every model's champion found in the registry (at start)."""
        if not self.registry.root.is_dir():
            return
        for directory in sorted(self.registry.root.iterdir()):
            try:
                champion = self.registry.champion(directory.name)
                if champion is not None:
                    self.activate(self.load(directory.name, champion.version))
            except RegistryError as exc:
                log.error("not serving %s: %s", directory.name, exc)
