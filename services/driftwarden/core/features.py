"""Feature types and value normalization: the one place monitor, trainer and serving read them from.

A feature is numeric when every value seen is a number (booleans are not numbers), an embedding when
every value seen is an array of numbers (a fixed-length vector, e.g. a text or image embedding), and
categorical otherwise; a type declared in the config wins. Categories, labels and predictions compare by their
text: ``1``, ``1.0`` and ``"1"`` read ``"1"``; ``True`` reads ``"true"``.

>>> value_text(True), value_text(1.0), value_text(2.5), value_text("NL"), value_text(None)
('true', '1', '2.5', 'NL', None)
>>> infer_types([{"amount": 1.5, "country": "NL", "new": True}, {"amount": 3, "country": None}], {})
FeatureTypes(numeric=('amount',), categorical=('country', 'new'), embedding=())
>>> infer_types([{"amount": 1.5, "zip": 1234}], {"zip": "categorical"}, ignored=["amount"])
FeatureTypes(numeric=(), categorical=('zip',), embedding=())
>>> infer_types([{"text": [0.1, -0.3, 2], "n": 1}, {"text": None, "n": [1.0]}], {})
FeatureTypes(numeric=(), categorical=('n',), embedding=('text',))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from operator import methodcaller
from typing import Any, Literal

import numpy as np

FeatureType = Literal["numeric", "categorical", "embedding"]
FEATURE_TYPES: tuple[FeatureType, ...] = ("numeric", "categorical", "embedding")
#: The category an ONNX model receives for a missing categorical value.
MISSING_CATEGORY = ""


@dataclass(frozen=True)
class FeatureTypes:
    """Which features are numeric, categorical or embeddings (each sorted by name)."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    embedding: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return self.numeric + self.categorical + self.embedding


def is_number(value: object) -> bool:
    """A JSON number (``bool`` is not one, although Python makes it an ``int``)."""
    return type(value) in (float, int)


def is_vector(value: object) -> bool:
    """An array of JSON numbers (an embedding's value)."""
    return type(value) is list and all(map(is_number, value))


def value_text(value: object) -> str | None:
    """The text a category, label or prediction is compared by; ``None`` stays missing."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def infer_types(
    rows: Iterable[Mapping[str, Any]], declared: Mapping[str, str], ignored: Sequence[str] = ()
) -> FeatureTypes:
    """Feature types from the declared ones, else from the values (all numbers means numeric, all
    arrays of numbers an embedding, anything else categorical)."""
    rows = list(rows)
    names = set().union(*rows)
    return column_types({name: list(map(methodcaller("get", name), rows)) for name in names}, declared, ignored)


def column_types(
    columns: Mapping[str, Sequence[Any] | np.ndarray], declared: Mapping[str, str], ignored: Sequence[str] = ()
) -> FeatureTypes:
    """:func:`infer_types` of rows held as columns (a numpy array is a column of numbers).

    >>> column_types({"amount": np.array([1.5, 3.0]), "country": ["NL", None], "gone": [None, None]}, {})
    FeatureTypes(numeric=('amount',), categorical=('country',), embedding=())
    """
    kinds: dict[str, str] = dict(declared)
    for name, values in columns.items():
        if name in kinds:
            continue
        # a column at a time: the value types as a set, in C
        types = {float} if isinstance(values, np.ndarray) else set(map(type, values)) - {type(None)}
        if types and types <= {float, int}:
            kinds[name] = "numeric"
        elif types == {list} and all(is_vector(v) for v in values if v is not None):
            kinds[name] = "embedding"
        elif types:
            kinds[name] = "categorical"
    skip = set(ignored)
    numeric, categorical, embedding = (
        tuple(sorted(k for k, v in kinds.items() if v == kind and k not in skip)) for kind in FEATURE_TYPES
    )
    return FeatureTypes(numeric, categorical, embedding)
