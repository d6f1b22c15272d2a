"""Reference profiles from a training set (Parquet or CSV) instead of a version's first events.

Every column is a feature except the excluded ones (labels, ids) and the config's
``ignore_features``. Types come from the config where declared, else from the one inference of
:func:`driftwarden.core.features.infer_types`: a Parquet or CSV column holds one type, so its first
non-null value stands for all of them (integers and floats are numbers; text, booleans, dates and
decimals are categories). An optional score column (the model's P(positive class), or its output
for regression, on the training rows) gives the profile its prediction signal.

An **embedding** is a Parquet list or fixed-size list column of numbers (``list<float>``,
``fixed_size_list<float>[64]``, integers too), or a text column (CSV has no arrays) whose cells are
JSON arrays of numbers, ``"[0.12, -0.03, 1.5]"``, empty (or null) for a missing vector. Its length is the
commonest one, and a vector of another length counts as missing, as in the monitor; a text cell
that is not a JSON array of numbers is refused with the column and row.

Reading the files needs pyarrow: ``pip install 'driftwarden[profile]'``.

>>> import pyarrow as pa
>>> table = pa.table({"amount": [12.5, 3.0, None, 7.25], "country": ["NL", "DE", "NL", None],
...                   "zip": [1011, 1012, 1011, 2000], "label": [0, 1, 0, 0]})
>>> profile = profile_from_table(table, "fraud", "1", {"zip": "categorical"}, exclude=["label"])
>>> list(profile.numeric), list(profile.categorical), profile.n_events
(['amount'], ['country', 'zip'], 4)
>>> profile.numeric["amount"].missing_rate, profile.categorical["zip"].counts
(0.25, {'1011': 2, '1012': 1, '2000': 1})
>>> vectors = pa.table({"text": [[0.5, 1.0], None, [1.5, 2.0], [9.0]], "csv": ["[1, 2]", "[3, 4]", None, "[5, 6]"]})
>>> embedding = profile_from_table(vectors, "search", "1", {}).embedding
>>> {name: (p.dim, p.centroid, p.distance.missing_rate) for name, p in embedding.items()}
{'csv': (2, [3.0, 4.0], 0.25), 'text': (2, [1.0, 1.5], 0.5)}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from driftwarden.core.features import infer_types, is_vector, value_text
from driftwarden.core.profile import Columns, FeatureSchema, ReferenceProfile, Task, common_length, profile_of, vectors
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
    """The column's first non-null value: the type inference's sample. In a text column, the first
    non-empty text that is a JSON array of numbers stands for an embedding (CSV writes a missing
    vector as an empty cell)."""
    import pyarrow.compute as pc

    present = column.drop_null()
    if _is_text_column(column):
        texts = present.filter(pc.not_equal(present, ""))
        vector = _json_array(texts[0].as_py()) if len(texts) and texts[0].as_py().startswith("[") else None
        if is_vector(vector):
            return vector
    return present[0].as_py() if len(present) else None


def _is_text_column(column: pa.ChunkedArray) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_string(column.type) or pa.types.is_large_string(column.type))


def _json_array(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


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
            missing[:, j] |= ~np.isfinite(values[:, j])  # (NaN or infinity: missing, as in events)
        else:
            violations[:, j] = ~missing[:, j]
    return values, missing, violations


def _categories(column: pa.ChunkedArray) -> list[str | None]:

    values: list[Any] = column.to_pylist()
    if _is_text_column(column):
        return values
    return [value_text(v) for v in values]


def _embedding(name: str, column: pa.ChunkedArray) -> np.ndarray:
    """An embedding column as rows of its commonest length; NaN rows where missing or of another length."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if _is_text_column(column):
        return _embedding_from_text(name, column.to_pylist())
    lists = pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    if not lists or not (pa.types.is_integer(kind.value_type) or pa.types.is_floating(kind.value_type)):
        raise DriftwardenError(
            f"column {name!r} holds {kind}; an embedding is a list of numbers (Parquet) or JSON arrays (CSV)"
        )
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)  # NaN where null
    present = np.flatnonzero(~np.isnan(lengths))
    sizes = lengths[present].astype(int)
    length = common_length(sizes.tolist())
    values = pc.list_flatten(column).cast(pa.float64()).to_numpy(zero_copy_only=False)  # null rows hold nothing
    starts, fits = np.cumsum(sizes) - sizes, sizes == length
    rows = np.full((len(lengths), length), np.nan)
    rows[present[fits]] = values[starts[fits, None] + np.arange(length)]
    return rows


def _embedding_from_text(name: str, cells: list[str | None]) -> np.ndarray:
    """JSON array cells (CSV) as vectors, of the commonest length; any other text is refused."""
    parsed: list[Any] = []
    for row, cell in enumerate(cells):
        value = _json_array(cell) if cell else None  # None or "": missing
        if cell and not is_vector(value):
            raise DriftwardenError(f"column {name!r}, row {row + 1}: {cell[:40]!r} is not a JSON array of numbers")
        parsed.append(value)
    return vectors(parsed, common_length(len(v) for v in parsed if v is not None))


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
    first = {name: _first_value(table[name]) for name in features}
    types = infer_types([first], declared, [*ignored, *skip])
    absent = [name for name in types.names if name not in features]
    if absent:
        raise DriftwardenError(f"declared feature {', '.join(map(repr, absent))} is not a column of the table")
    empty = [name for name in features if first[name] is None and name not in declared and name not in ignored]
    if empty:  # (left out silently, the feature would go unwatched in production)
        raise DriftwardenError(f"column {', '.join(map(repr, empty))} has no values: declare its type in the config's "
                               "features, or --exclude it")  # fmt: skip
    if not types.names:
        raise DriftwardenError("no features: every column is excluded, ignored or the score column")
    numeric, missing, violations = _numeric(table, types.numeric)
    signal = None
    if score_column:
        if not _is_number_column(table[score_column]):
            raise DriftwardenError(f"score column {score_column!r} holds {table[score_column].type}, not numbers")
        signal = table[score_column].cast(pa.float64()).to_numpy(zero_copy_only=False)
    embeddings = [_embedding(name, table[name]) for name in types.embedding]
    columns = Columns.of_rows(
        numeric, missing, [_categories(table[name]) for name in types.categorical], violations, signal, embeddings
    )
    lengths = {name: rows.shape[1] for name, rows in zip(types.embedding, embeddings, strict=True)}
    schema = FeatureSchema(list(types.numeric), list(types.categorical), task, positive_class, lengths)
    return profile_of(model_id, model_version, schema, columns)
