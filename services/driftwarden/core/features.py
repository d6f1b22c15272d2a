"""Feature types and value normalization: the one place monitor, trainer and serving read them from.

A feature is numeric when every value seen is a number (booleans are not numbers) and categorical
otherwise; a type declared in the config wins. Categories, labels and predictions compare by their
text: ``1``, ``1.0`` and ``"1"`` read ``"1"``; ``True`` reads ``"true"``.

>>> value_text(True), value_text(1.0), value_text(2.5), value_text("NL"), value_text(None)
('true', '1', '2.5', 'NL', None)
>>> infer_types([{"amount": 1.5, "country": "NL", "new": True}, {"amount": 3, "country": None}], {})
FeatureTypes(numeric=('amount',), categorical=('country', 'new'))
>>> infer_types([{"amount": 1.5, "zip": 1234}], {"zip": "categorical"}, ignored=["amount"])
FeatureTypes(numeric=(), categorical=('zip',))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

FeatureType = Literal["numeric", "categorical"]
#: The category an ONNX model receives for a missing categorical value.
MISSING_CATEGORY = ""


@dataclass(frozen=True)
class FeatureTypes:
    """Which features are numeric and which categorical (each sorted by name)."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return self.numeric + self.categorical


def is_number(value: object) -> bool:
    """A JSON number (``bool`` is not one, although Python makes it an ``int``)."""
    return type(value) in (float, int)


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
    """Feature types from the declared ones, else from the values (all numbers means numeric)."""
    kinds: dict[str, str] = dict(declared)
    numeric_only: dict[str, bool] = {}
    for row in rows:
        for name, value in row.items():
            if value is not None:
                numeric_only[name] = numeric_only.get(name, True) and is_number(value)
    for name, only_numbers in numeric_only.items():
        kinds.setdefault(name, "numeric" if only_numbers else "categorical")
    skip = set(ignored)
    return FeatureTypes(
        numeric=tuple(sorted(k for k, v in kinds.items() if v == "numeric" and k not in skip)),
        categorical=tuple(sorted(k for k, v in kinds.items() if v == "categorical" and k not in skip)),
    )
