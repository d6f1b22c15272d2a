"""Safe, versioned state: plain JSON values in, validated objects out (no pickle, no code from data).

Every stateful class of the core gives its state as a plain dict of JSON values (numbers, strings,
lists, dicts; float arrays as base64 of little-endian float64) and is rebuilt from such a dict by a
classmethod that checks every field. :func:`encode` wraps a state with its format name and version
and writes it with orjson; :func:`decode` refuses anything else with a :class:`StateError`. Loading
garbage or a forged state raises, it never runs code.

JSON has no NaN or infinity: a float that may be one is written by :func:`pack_float` (as the text
``"nan"``, ``"inf"`` or ``"-inf"``) and read back by :meth:`StateReader.number`; a value of mixed type
(evidence) by :func:`pack_scalar`.

>>> raw = encode("Example", 1, {"n": 3, "mean": pack_float(float("nan")), "xs": pack_array(np.arange(3.0))})
>>> reader = decode(raw, "Example", 1)
>>> reader.integer("n"), reader.number("mean"), reader.array("xs").tolist()
(3, nan, [0.0, 1.0, 2.0])
>>> decode(b"\\x80\\x04garbage", "Example", 1)
Traceback (most recent call last):
...
driftwarden.core.state.StateError: Example state: not valid JSON
>>> decode(encode("Example", 2, {}), "Example", 1)
Traceback (most recent call last):
...
driftwarden.core.state.StateError: Example state: version 2 is not supported (this build reads version 1)
"""

from __future__ import annotations

import abc
import binascii
import math
from collections.abc import Mapping, Sequence
from typing import ClassVar, Self, cast

import numpy as np
import orjson

from driftwarden.core.events import Scalar
from driftwarden.errors import DriftwardenError

#: A JSON value as orjson writes it (numpy float64 arrays only through :func:`pack_array`; a fragment is
#: JSON written before, e.g. a part of a state that seldom changes).
JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | orjson.Fragment
State = dict[str, JsonValue]

_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_ARRAY_DTYPE = np.dtype("<f8")
_INT_DTYPE = np.dtype("<i8")


class StateError(DriftwardenError, ValueError):
    """A state that is not one this build wrote: garbage, truncated, forged or of another version."""


def pack_float(value: float) -> float | str:
    """A float as JSON: itself when finite, else ``"nan"``, ``"inf"`` or ``"-inf"``."""
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def pack_optional_float(value: float | None) -> float | str | None:
    return None if value is None else pack_float(value)


def pack_scalar(value: Scalar) -> JsonValue:
    """A scalar of any type; a non-finite float becomes ``{"float": "nan"}`` (a string stays a string)."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": pack_float(value)}
    return value


def pack_scalars(values: Mapping[str, Scalar]) -> State:
    return {key: pack_scalar(value) for key, value in values.items()}


def pack_array(values: np.ndarray | Sequence[float]) -> str:
    """A float array as base64 of its little-endian float64 bytes (NaN-safe, ~4x smaller than JSON)."""
    return _b64(np.ascontiguousarray(values, dtype=_ARRAY_DTYPE).tobytes())


def pack_ints(values: np.ndarray | Sequence[int]) -> str:
    """An integer array as base64 of its little-endian int64 bytes."""
    return _b64(np.ascontiguousarray(values, dtype=_INT_DTYPE).tobytes())


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def pack_codes(values: Sequence[JsonValue]) -> State:
    """A column with few distinct values (hashable JSON values) as those values and one code per row."""
    index: dict[JsonValue, int] = {}
    codes = [index.setdefault(value, len(index)) for value in values]
    return {"values": list(index), "codes": pack_ints(codes)}


def encode(kind: str, version: int, state: State) -> bytes:
    """The state with its format name and version, as JSON bytes."""
    return orjson.dumps({"format": kind, "version": version, "state": state})


def decode(raw: bytes, kind: str, version: int) -> StateReader:
    """Read bytes written by :func:`encode` for this ``kind`` and ``version``; refuse anything else."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise StateError(f"{kind} state: not valid JSON") from None
    header = StateReader(document, f"{kind} state")
    if header.raw("format") != kind:
        raise StateError(f"{kind} state: format is {header.raw('format')!r}, expected {kind!r}")
    found = header.integer("version")
    if found != version:
        raise StateError(f"{kind} state: version {found} is not supported (this build reads version {version})")
    return StateReader(header.raw("state"), f"{kind} state")


class StateReader:
    """Typed, validated access to one state dict; every error names the path of the bad field."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise StateError(f"{where}: expected an object, got {type(data).__name__}")
        self.data: dict[str, object] = data
        self.where = where

    def _error(self, key: str, expected: str) -> StateError:
        return StateError(f"{self.where}.{key}: expected {expected}, got {self.data.get(key)!r:.80}")

    def raw(self, key: str) -> object:
        if key not in self.data:
            raise StateError(f"{self.where}.{key}: missing")
        return self.data[key]

    def integer(self, key: str, minimum: int | None = 0) -> int:
        value = self.raw(key)
        if type(value) is not int or (minimum is not None and value < minimum):
            raise self._error(key, "an integer" if minimum is None else f"an integer >= {minimum}")
        return value

    def flag(self, key: str) -> bool:
        value = self.raw(key)
        if type(value) is not bool:
            raise self._error(key, "true or false")
        return value

    def text(self, key: str) -> str:
        value = self.raw(key)
        if type(value) is not str:
            raise self._error(key, "a string")
        return value

    def optional_text(self, key: str) -> str | None:
        return None if self.raw(key) is None else self.text(key)

    def number(self, key: str) -> float:
        value = _as_float(self.raw(key))
        if value is None:
            raise self._error(key, "a number")
        return value

    def optional_number(self, key: str) -> float | None:
        return None if self.raw(key) is None else self.number(key)

    def numbers(self, key: str) -> list[float]:
        values = self.items(key)
        parsed = [_as_float(v) for v in values]
        if any(v is None for v in parsed):
            raise self._error(key, "a list of numbers")
        return [float(v) for v in parsed if v is not None]

    def texts(self, key: str) -> list[str]:
        values = self.items(key)
        if not set(map(type, values)) <= {str}:
            raise self._error(key, "a list of strings")
        return cast("list[str]", values)  # (every item is a str: checked at C speed above)

    def array(self, key: str) -> np.ndarray:
        """A float64 array written by :func:`pack_array`."""
        return np.frombuffer(self._base64(key, _ARRAY_DTYPE.itemsize), dtype=_ARRAY_DTYPE).astype(float)

    def ints(self, key: str, minimum: int = 0) -> np.ndarray:
        """An int64 array written by :func:`pack_ints`, every value at least ``minimum``."""
        values = np.frombuffer(self._base64(key, _INT_DTYPE.itemsize), dtype=_INT_DTYPE).astype(np.int64)
        if len(values) and int(values.min()) < minimum:
            raise self._error(key, f"integers >= {minimum}")
        return values

    def _base64(self, key: str, itemsize: int) -> bytes:
        try:
            data = binascii.a2b_base64(self.text(key), strict_mode=True)
        except (binascii.Error, ValueError):
            raise self._error(key, "base64 data") from None
        if len(data) % itemsize:
            raise self._error(key, f"a whole number of {itemsize}-byte values")
        return data

    def codes(self, key: str) -> tuple[list[object], list[int]]:
        """``(distinct values, code per row)`` written by :func:`pack_codes`, codes checked in range."""
        packed = self.child(key)
        values, codes = packed.items("values"), packed.ints("codes")
        if len(codes) and int(codes.max()) >= len(values):
            raise packed._error("codes", f"codes below {len(values)}")
        return values, codes.tolist()

    def items(self, key: str) -> list[object]:
        value = self.raw(key)
        if not isinstance(value, list):
            raise self._error(key, "a list")
        return value

    def child(self, key: str) -> StateReader:
        return StateReader(self.raw(key), f"{self.where}.{key}")

    def optional_child(self, key: str) -> StateReader | None:
        return None if self.raw(key) is None else self.child(key)

    def children(self, key: str) -> list[StateReader]:
        return [StateReader(item, f"{self.where}.{key}[{i}]") for i, item in enumerate(self.items(key))]

    def mapping(self, key: str) -> dict[str, StateReader]:
        """A dict of states by name."""
        child = self.child(key)
        return {name: child.child(name) for name in child.data}

    def scalars(self, key: str) -> dict[str, Scalar]:
        """A dict written by :func:`pack_scalars`."""
        child = self.child(key)
        return {name: child.scalar(name) for name in child.data}

    def scalar(self, key: str) -> Scalar:
        value = self.raw(key)
        if isinstance(value, dict):
            unpacked = _as_float(value.get("float")) if set(value) == {"float"} else None
            if unpacked is None:
                raise self._error(key, "a scalar")
            return unpacked
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise self._error(key, "a scalar")


def _as_float(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return _NON_FINITE.get(value)
    return None


class Stateful(abc.ABC):
    """A class whose whole state round-trips through :meth:`state` / :meth:`from_state` and bytes."""

    #: Bumped whenever the state's fields change; older states are then refused, not misread.
    STATE_VERSION: ClassVar[int] = 1

    @abc.abstractmethod
    def state(self) -> State:
        """The complete state as plain JSON values."""

    @classmethod
    @abc.abstractmethod
    def from_state(cls, state: StateReader) -> Self:
        """Rebuild from :meth:`state`, validating every field (a bad one raises :class:`StateError`)."""

    def to_bytes(self) -> bytes:
        return encode(type(self).__name__, self.STATE_VERSION, self.state())

    @classmethod
    def from_bytes(cls, raw: bytes) -> Self:
        return cls.from_state(decode(raw, cls.__name__, cls.STATE_VERSION))
