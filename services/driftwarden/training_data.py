"""Reference profiles from a training set (Parquet or CSV) instead of a version's first events.

Every column is a feature except the excluded ones (labels, ids) and the config's
``ignore_features``. Types come from the config where declared, else from the one inference of
:func:`driftwarden.core.features.infer_types`: a Parquet or CSV column holds one type, so its first
non-null value stands for all of them (integers and floats are numbers; text, booleans, dates and
decimals are categories). An optional score column (the model's P(positive class), or its output
for regression, on the training rows) gives the profile its prediction signal.

Reading the files needs pyarrow: ``pip install 'driftwarden[profile]'``.

>>> import pyarrow as pa
>>> table = pa.table({"amount": [12.5, 3.0, None, 7.25], "country": ["NL", "DE", "NL", None],
...                   "zip": [1011, 1012, 1011, 2000], "label": [0, 1, 0, 0]})
>>> profile = profile_from_table(table, "fraud", "1", {"zip": "categorical"}, exclude=["label"])
>>> list(profile.numeric), list(profile.categorical), profile.n_events
(['amount'], ['country', 'zip'], 4)
>>> profile.numeric["amount"].missing_rate, profile.categorical["zip"].counts
(0.25, {'1011': 2, '1012': 1, '2000': 1})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from driftwarden.core.features import infer_types, value_text
from driftwarden.core.profile import Columns, FeatureSchema, ReferenceProfile, Task, profile_of
from driftwarden.errors import DriftwardenError

if TYPE_CHECKING:
    import pyarrow as pa

#: File name endings read as Parquet; every other supported ending is CSV.
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2")


def read_table(path: Path) -> pa.Table:
    """The file as an Arrow table (Parquet by its ending, else CSV), or a one-line error."""
    try:
        import pyarrow.csv
        import pyarrow.parquet
    except ImportError:
        raise DriftwardenError("reading Parquet or CSV needs pyarrow: pip install 'driftwarden[profile]'") from None
    name = path.name.lower()
    if not name.endswith(PARQUET_SUFFIXES + CSV_SUFFIXES):
        raise DriftwardenError(f"{path}: expected a Parquet ({', '.join(PARQUET_SUFFIXES)}) or CSV file")
    try:
        if name.endswith(PARQUET_SUFFIXES):
            return pyarrow.parquet.read_table(path)
        return pyarrow.csv.read_csv(path)
    except FileNotFoundError:
        raise DriftwardenError(f"cannot read {path}: no such file") from None
    except (pyarrow.ArrowException, OSError) as exc:  # ArrowInvalid is also a ValueError
        raise DriftwardenError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None


def _first_value(column: pa.ChunkedArray) -> Any:
    present = column.drop_null()
    return present[0].as_py() if len(present) else None


def _is_number_column(column: pa.ChunkedArray) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(column.type) or pa.types.is_floating(column.type))


def _numeric(table: pa.Table, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, missing, type violations), each (rows, names): a non-number column is all violations."""
    import pyarrow as pa

    shape = (table.num_rows, len(names))
    values, missing = np.full(shape, np.nan), np.zeros(shape, dtype=bool)
    violations = np.zeros(shape, dtype=bool)
    for j, name in enumerate(names):
        column = table[name]
        missing[:, j] = column.is_null().to_numpy(zero_copy_only=False)
        if _is_number_column(column):
            values[:, j] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        else:
            violations[:, j] = ~missing[:, j]
    return values, missing, violations


def _categories(column: pa.ChunkedArray) -> list[str | None]:
    import pyarrow as pa

    values: list[Any] = column.to_pylist()
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return values
    return [value_text(v) for v in values]


def profile_from_table(
    table: pa.Table,
    model_id: str,
    model_version: str,
    declared: Mapping[str, str],
    ignored: Sequence[str] = (),
    exclude: Sequence[str] = (),
    task: Task = "classification",
    positive_class: str | None = None,
    score_column: str | None = None,
) -> ReferenceProfile:
    """The reference profile of a training table (see the module docstring for what is read how)."""
    import pyarrow as pa

    unknown = [name for name in [*exclude, *([score_column] if score_column else [])] if name not in table.schema.names]
    if unknown:
        raise DriftwardenError(f"no column {', '.join(map(repr, unknown))} (columns: {', '.join(table.schema.names)})")
    skip = {*exclude, *([score_column] if score_column else [])}
    features = [name for name in table.schema.names if name not in skip]
    types = infer_types([{name: _first_value(table[name]) for name in features}], declared, [*ignored, *skip])
    absent = [name for name in types.names if name not in features]
    if absent:
        raise DriftwardenError(f"declared feature {', '.join(map(repr, absent))} is not a column of the table")
    numeric, missing, violations = _numeric(table, types.numeric)
    signal = None
    if score_column:
        if not _is_number_column(table[score_column]):
            raise DriftwardenError(f"score column {score_column!r} holds {table[score_column].type}, not numbers")
        signal = table[score_column].cast(pa.float64()).to_numpy(zero_copy_only=False)
    columns = Columns.of_rows(
        numeric, missing, [_categories(table[name]) for name in types.categorical], violations, signal
    )
    schema = FeatureSchema(list(types.numeric), list(types.categorical), task, positive_class)
    return profile_of(model_id, model_version, schema, columns)
