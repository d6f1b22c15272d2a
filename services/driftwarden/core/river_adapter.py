"""The one place that touches River's internals: detector state without pickle.

River 0.26.1 detectors are plain Python objects (their attributes are numbers, booleans, strings and
River statistics), except for two Rust-backed parts: ADWIN's window (``AdaptiveWindowing``) and the
exponentially weighted mean (``RsEWMean``, inside HDDM_W). Those expose ``__getnewargs__`` (their
constructor arguments) and ``__getstate__``/``__setstate__`` with plain bytes (bincode of a Rust
struct: data, never code). :func:`river_state` walks an allow-listed object into JSON values and
:func:`river_from_state` rebuilds it: only classes in :data:`ALLOWED` are ever constructed, only
attributes the fresh object already has are set, each with the type it had, and Rust bytes must
re-serialize to exactly themselves. ``tests/unit/test_river_adapter.py`` fails loudly when the pinned
River version changes any of this.

>>> from river import drift
>>> adwin = drift.ADWIN(delta=0.01)
>>> for i in range(200):
...     adwin.update(float(i % 5))
>>> copy = river_from_state(StateReader(river_state(adwin), "adwin"))
>>> (type(copy).__name__, copy.width, copy.total, copy.delta) == ("ADWIN", adwin.width, adwin.total, 0.01)
True
"""

from __future__ import annotations

import base64
import binascii
import inspect
from typing import Protocol, cast

from river import base, drift, stats
from river._river_rust.drift import AdaptiveWindowing
from river._river_rust.stats import RsEWMean
from river.drift.binary.hddm_w import SampleInfo

from driftwarden.core.events import Scalar
from driftwarden.core.state import JsonValue, State, StateError, StateReader, pack_float, pack_scalar

#: The River version whose internals this module was written and tested against.
PINNED_RIVER_VERSION = "0.26.1"

#: Every class this module builds from a state, by the name written into states.
ALLOWED: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        drift.ADWIN,
        drift.PageHinkley,
        drift.binary.DDM,
        drift.binary.EDDM,
        drift.binary.HDDMA,
        drift.binary.HDDMW,
        stats.Mean,
        stats.Var,
        stats.EWMean,
        SampleInfo,
    )
}
RUST_ALLOWED: dict[str, type] = {cls.__name__: cls for cls in (AdaptiveWindowing, RsEWMean)}


class _RustState(Protocol):
    """What River's Rust-backed objects offer for their state (plain values and bytes)."""

    def __getnewargs__(self) -> tuple[Scalar, ...]: ...

    def __getstate__(self) -> object: ...

    def __setstate__(self, state: bytes, /) -> None: ...


# -- state -----------------------------------------------------------------------------------------


def river_state(obj: object) -> State:
    """An allow-listed River object as JSON values: its class, constructor parameters and attributes."""
    name = type(obj).__name__
    if ALLOWED.get(name) is not type(obj):
        raise StateError(f"no state format for {type(obj).__module__}.{name}")
    attributes: State = {}
    for key, value in vars(obj).items():
        if inspect.ismethod(value):
            continue  # bound methods chosen by the constructor (PageHinkley's test)
        attributes[key] = _value_state(value)
    return {"class": name, "params": _params(obj), "attributes": attributes}


def river_from_state(state: StateReader) -> object:
    """Rebuild what :func:`river_state` wrote, checking class, parameters and every attribute type."""
    name = state.text("class")
    cls = ALLOWED.get(name)
    if cls is None:
        raise StateError(f"{state.where}.class: {name!r} is not a River class this build restores")
    params = state.scalars("params")
    try:
        obj = cls(**params)
    except (TypeError, ValueError) as exc:
        raise StateError(f"{state.where}.params: {exc}") from None
    attributes = state.child("attributes")
    for key in attributes.data:
        if key not in vars(obj):
            raise StateError(f"{attributes.where}.{key}: not an attribute of {name}")
        setattr(obj, key, _value_from_state(attributes, key, getattr(obj, key)))
    return obj


def _params(obj: object) -> State:
    if isinstance(obj, SampleInfo):  # (not a River estimator: no _get_params)
        return {"lambd": pack_float(obj._lambd_sq**0.5)}
    if not isinstance(obj, base.Base):
        raise StateError(f"no state format for {type(obj).__name__}")
    params = obj._get_params()
    return {key: pack_scalar(value) for key, value in params.items()}


def _value_state(value: object) -> JsonValue:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return {"float": pack_float(value)}
    rust = type(value).__name__
    if RUST_ALLOWED.get(rust) is type(value):
        raw = cast(_RustState, value).__getstate__()
        if not isinstance(raw, bytes):
            raise StateError(f"River's {rust} state is no longer bytes: see PINNED_RIVER_VERSION")
        return {
            "rust": rust,
            "args": [pack_scalar(arg) for arg in cast(_RustState, value).__getnewargs__()],
            "bytes": base64.b64encode(raw).decode("ascii"),
        }
    return {"river": river_state(value)}


def _value_from_state(attributes: StateReader, key: str, fresh: object) -> object:
    """Attribute ``key``; of the same type as ``fresh`` (the constructor's value) unless that is None."""
    value = attributes.raw(key)
    if isinstance(value, dict):
        packed = attributes.child(key)
        if "float" in value:
            value = packed.number("float")
        elif "rust" in value:
            value = _rust_from_state(packed)
        else:
            value = river_from_state(packed.child("river"))
    elif value is not None and not isinstance(value, bool | int | str):
        raise StateError(f"{attributes.where}.{key}: not a River attribute value")
    if fresh is not None and _kind(value) != _kind(fresh):
        raise StateError(f"{attributes.where}.{key}: expected {type(fresh).__name__}, got {type(value).__name__}")
    return value


def _kind(value: object) -> type:
    """The type an attribute must keep (River mixes ints and floats in one numeric attribute)."""
    return float if type(value) is int else type(value)


def _rust_from_state(state: StateReader) -> object:
    name = state.text("rust")
    cls = RUST_ALLOWED.get(name)
    if cls is None:
        raise StateError(f"{state.where}.rust: {name!r} is not a Rust class this build restores")
    try:
        raw = base64.b64decode(state.text("bytes"), validate=True)
    except (binascii.Error, ValueError):
        raise StateError(f"{state.where}.bytes: not base64") from None
    args = [StateReader({"arg": arg}, f"{state.where}.args").scalar("arg") for arg in state.items("args")]
    try:
        obj = cls(*args)
        obj.__setstate__(raw)
        same = obj.__getstate__() == raw
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # River's Rust code panics (pyo3's PanicException) on bad bytes
        raise StateError(f"{state.where}: River refused the {cls.__name__} state ({type(exc).__name__})") from None
    if not same:
        raise StateError(f"{state.where}: {cls.__name__} state does not re-serialize to itself")
    return obj
