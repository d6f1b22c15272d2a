"""The ONNX classifier wrapper shared by the trainer (parity checks, champion scoring) and serving.

Only numpy and onnxruntime: serving imports this, never scikit-learn. A model has one ``[N, 1]``
input per feature (``tensor(float)`` for numeric, ``tensor(string)`` for categorical features) and
outputs ``label`` and ``probabilities``. Inputs are given as columns: any mapping of feature name to a
sequence of values (a dict of numpy arrays, or a pandas DataFrame).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import onnxruntime

from driftwarden.core.features import MISSING_CATEGORY, value_text


class Columns(Protocol):
    """The values of each feature by name: a dict of arrays or lists, or a pandas DataFrame."""

    def __getitem__(self, name: str, /) -> Any: ...


def _category_column(values: Any) -> np.ndarray:
    return np.array(_texts(np.asarray(values, dtype=object).tolist()), dtype=object).reshape(-1, 1)


def _texts(values: list[Any]) -> list[str]:
    """Each value's :func:`value_text` (missing: :data:`MISSING_CATEGORY`); text as it is, in one pass.

    >>> _texts(["a", "b"]), _texts(["a", 1.0, True, None])
    (['a', 'b'], ['a', '1', 'true', ''])
    """
    if set(map(type, values)) <= {str}:  # (the usual case: the text of a string is itself)
        return values
    return [MISSING_CATEGORY if (text := value_text(v)) is None else text for v in values]


class OnnxModel:
    """An ONNX classifier exported by the trainer, run with onnxruntime on the CPU."""

    def __init__(self, onnx_bytes: bytes, threads: int = 0) -> None:
        """``threads``: onnxruntime's threads per call (0: one per core; idle ones spin for a while)."""
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        self.numeric = tuple(i.name for i in inputs if i.type == "tensor(float)")
        self.categorical = tuple(i.name for i in inputs if i.type == "tensor(string)")
        if len(self.numeric) + len(self.categorical) != len(inputs):
            raise ValueError("not a driftwarden model: inputs must be float or string tensors")

    def feeds(self, columns: Columns) -> dict[str, np.ndarray]:
        """The model's inputs: missing numbers become 0, categories their normalized text."""
        feeds: dict[str, np.ndarray] = {}
        if self.numeric:  # (one conversion for all the number columns; each input a [N, 1] view of it)
            numbers = np.asarray([columns[n] for n in self.numeric], dtype=np.float32)
            numbers[np.isnan(numbers)] = 0.0
            feeds |= zip(self.numeric, numbers[:, :, np.newaxis], strict=True)
        return feeds | {n: _category_column(columns[n]) for n in self.categorical}

    def predict(self, columns: Columns) -> tuple[np.ndarray, np.ndarray]:
        """Predicted labels (text) and class probabilities (columns in ``classes`` order)."""
        labels, probabilities = self.session.run(None, self.feeds(columns))
        return np.array(_texts(labels.tolist()), dtype=object), probabilities
