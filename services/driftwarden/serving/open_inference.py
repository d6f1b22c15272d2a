"""The Open Inference Protocol (KServe V2, Triton) over REST: requests and answers as columns.

``POST /v2/models/{model_id}/infer`` takes one input per feature, each the column of its values for
all instances (``shape`` ``[N]`` or ``[N, 1]``; numbers as ``FP16``/``FP32``/``FP64`` or integer
datatypes, categories as ``BYTES``), and an optional ``event_id`` input (``BYTES``) with the caller's
event ids. It answers three outputs: ``event_id`` (the ids to send labels with), ``label`` and
``scores`` (``[N, K]`` class probabilities, the classes in ``parameters.classes``). A number column goes
from the parsed body to one float64 array: no Python work per row but a type check in C.

>>> request = decode_infer({"id": "r1", "inputs": [
...     {"name": "amount", "shape": [2, 1], "datatype": "FP64", "data": [129.5, 3]},
...     {"name": "country", "shape": [2], "datatype": "BYTES", "data": ["NL", "DE"]}]})
>>> request.id, len(request.columns), request.columns.inputs["amount"], request.columns.inputs["country"].tolist()
('r1', 2, array([129.5,   3. ]), ['NL', 'DE'])
>>> decode_infer({"inputs": [{"name": "amount", "shape": [2], "datatype": "FP32", "data": [1.0, True]}]})
Traceback (most recent call last):
...
driftwarden.serving.models.BadRequestError: input 'amount': data[1]: expected a number (FP32), got True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from driftwarden.serving.models import (
    FLOAT32_MAX,
    MAX_INSTANCES,
    BadRequestError,
    Challenger,
    Columns,
    ServedModel,
    TooLargeError,
)

if TYPE_CHECKING:
    from driftwarden.serving.server import Scored

EVENT_ID = "event_id"  # the optional input with the caller's event ids, and the output with the ids answered
OUTPUTS = (EVENT_ID, "label", "scores")
TEXT = "BYTES"


@dataclass(frozen=True)
class _Numbers:
    """A number datatype: the Python types its values may have once parsed, and the range taken."""

    types: frozenset[type]
    low: float
    high: float
    range: str  # the range as a refusal names it


_FLOATS = frozenset({float, int})
_MODEL_RANGE = f"the float32 range the model takes (±{FLOAT32_MAX:.4g})"
NUMBERS = {
    "FP16": _Numbers(_FLOATS, -65504.0, 65504.0, "the range of FP16 (±65504)"),
    "FP32": _Numbers(_FLOATS, -FLOAT32_MAX, FLOAT32_MAX, _MODEL_RANGE),
    "FP64": _Numbers(_FLOATS, -FLOAT32_MAX, FLOAT32_MAX, _MODEL_RANGE),  # (the model takes float32)
} | {
    name: _Numbers(frozenset({int}), float(info.min), float(info.max), f"the range of {name} ({info.min}..{info.max})")
    for name, info in ((f"{kind}{bits}", np.iinfo(f"{kind.lower()}{bits}")) for kind in ("INT", "UINT")
                       for bits in (8, 16, 32, 64))
}  # fmt: skip


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request: the instances as columns, its id and the outputs it asks for."""

    columns: Columns
    id: str | None = None
    outputs: tuple[str, ...] = OUTPUTS


def decode_infer(body: Any) -> InferRequest:
    """The inference request in a parsed body (BadRequestError naming the input and the value at fault;
    TooLargeError beyond :data:`~driftwarden.serving.models.MAX_INSTANCES` instances)."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise BadRequestError("body must be an object with a non-empty 'inputs' list")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequestError(f"id: expected a string, got {request_id!r}")
    if _binary(body.get("parameters"), "binary_data_output"):
        raise BadRequestError("parameters.binary_data_output: binary tensor data is not supported; send JSON")
    outputs = _requested_outputs(body.get("outputs"))
    columns = _plain_inputs(inputs)
    if columns is None:
        columns = _checked_inputs(inputs)
    rows = len(next(iter(columns.values())))
    ids = columns.pop(EVENT_ID, None)
    if ids is not None and ids.dtype != object:
        raise BadRequestError(f"input {EVENT_ID!r}: event ids are text: datatype must be {TEXT}")
    return InferRequest(Columns(columns, rows, None if ids is None else ids.tolist()), request_id, outputs)


def _plain_inputs(inputs: list[Any]) -> dict[str, np.ndarray] | None:
    """The columns of the inputs, the numbers of all inputs of a datatype converted and range-checked at
    once; None if any input is not plainly servable (flat data, all of one length, no parameters, every
    value of its datatype and in range): then :func:`_checked_inputs` says which and why, input by input."""
    first = inputs[0].get("shape") if type(inputs[0]) is dict else None
    rows = first[0] if type(first) is list and first and type(first[0]) is int else 0
    if not 0 < rows <= MAX_INSTANCES:
        return None
    shapes = ([rows], [rows, 1])
    texts: dict[str, list[Any]] = {}
    numbers: dict[str, dict[str, list[Any]]] = {}  # datatype -> name -> values
    for tensor in inputs:
        if type(tensor) is not dict or "parameters" in tensor:
            return None
        name, shape, data = tensor.get("name"), tensor.get("shape"), tensor.get("data")
        if type(name) is not str or not name or shape not in shapes or set(map(type, shape)) != {int}:
            return None  # (the type check: a shape of [rows, True] or [rows * 1.0] is equal to [rows])
        if type(data) is not list or len(data) != rows or type(data[0]) is list:  # (nested data: checked)
            return None
        datatype = tensor.get("datatype")
        if datatype == TEXT:
            texts[name] = data
        elif datatype in NUMBERS:
            numbers.setdefault(datatype, {})[name] = data
        else:
            return None
    if len({tensor["name"] for tensor in inputs}) != len(inputs):  # an input given twice
        return None
    if not set(map(type, chain.from_iterable(texts.values()))) <= {str}:
        return None
    converted: dict[str, np.ndarray] = {name: np.array(values, dtype=object) for name, values in texts.items()}
    for datatype, named in numbers.items():
        kind = NUMBERS[datatype]
        values = list(chain.from_iterable(named.values()))
        if not set(map(type, values)) <= kind.types:
            return None
        try:
            matrix = np.fromiter(values, np.float64, len(values))
        except OverflowError:  # an integer beyond any float
            return None
        if not ((matrix >= kind.low) & (matrix <= kind.high)).all():  # (also NaN)
            return None
        converted |= zip(named, matrix.reshape(len(named), rows), strict=True)  # (each column a contiguous row)
    return {tensor["name"]: converted[tensor["name"]] for tensor in inputs}


def _checked_inputs(inputs: list[Any]) -> dict[str, np.ndarray]:
    """The columns of the inputs, input by input: refuses the first one at fault, naming it and the value."""
    columns: dict[str, np.ndarray] = {}
    rows = 0
    for index, tensor in enumerate(inputs):
        name, column = _input(index, tensor)
        if name in columns:
            raise BadRequestError(f"inputs[{index}]: input {name!r} is given twice")
        if rows and len(column) != rows:
            first = next(iter(columns))
            raise BadRequestError(f"input {name!r}: {len(column)} instances, but input {first!r} has {rows}")
        columns[name], rows = column, len(column)
    return columns


def _binary(parameters: Any, name: str) -> bool:
    return isinstance(parameters, dict) and bool(parameters.get(name))


def _requested_outputs(requested: Any) -> tuple[str, ...]:
    """The names of the outputs asked for (all when not said)."""
    if requested is None:
        return OUTPUTS
    if not isinstance(requested, list) or not requested:
        raise BadRequestError(f"outputs: expected a non-empty array of {{'name': ...}} objects, got {requested!r}")
    names = []
    for index, output in enumerate(requested):
        name = output.get("name") if isinstance(output, dict) else None
        if name not in OUTPUTS:
            raise BadRequestError(f"outputs[{index}].name: expected one of {', '.join(OUTPUTS)}, got {name!r}")
        if _binary(output.get("parameters"), "binary_data"):
            raise BadRequestError(f"outputs[{index}]: binary tensor data is not supported; ask for JSON")
        names.append(name)
    return tuple(names)


def _input(index: int, tensor: Any) -> tuple[str, np.ndarray]:
    """One input's name and column: float64 for numbers, an object array of text for ``BYTES``."""
    if not isinstance(tensor, dict):
        raise BadRequestError(f"inputs[{index}]: expected an object with name, shape, datatype and data")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequestError(f"inputs[{index}].name: expected a non-empty string, got {name!r}")
    where = f"input {name!r}"
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and len(shape) in (1, 2) and all(type(d) is int for d in shape)
            and shape[1:] in ([], [1]) and shape[0] > 0):  # fmt: skip
        raise BadRequestError(f"{where}: shape must be [N] or [N, 1] with N > 0 (a value per instance), got {shape!r}")
    rows = shape[0]
    if rows > MAX_INSTANCES:
        raise TooLargeError(f"at most {MAX_INSTANCES} instances per request, got {rows} ({where})")
    datatype = tensor.get("datatype")
    if datatype != TEXT and datatype not in NUMBERS:
        raise BadRequestError(f"{where}: datatype {datatype!r} is not served: numbers as FP16, FP32, FP64, "
                              f"INT8-64 or UINT8-64, text as {TEXT}")  # fmt: skip
    if _binary(tensor.get("parameters"), "binary_data_size"):
        raise BadRequestError(f"{where}: binary tensor data is not supported; send the data as JSON")
    values = _flat(tensor.get("data"), shape, where)
    if datatype == TEXT:
        _check_types(values, frozenset({str}), where, f"a string ({TEXT})")
        return name, np.array(values, dtype=object)
    numbers = NUMBERS[datatype]
    _check_types(values, numbers.types, where, f"{'a number' if float in numbers.types else 'an integer'} ({datatype})")
    try:
        column = np.fromiter(values, np.float64, rows)
    except OverflowError:  # an integer beyond any float (not from JSON: orjson makes those floats)
        column = np.array([v if abs(v) <= numbers.high else np.inf for v in values])
    outside = ~((column >= numbers.low) & (column <= numbers.high))  # (also NaN)
    if outside.any():
        i = int(np.argmax(outside))
        raise BadRequestError(f"{where}: data[{i}]: {values[i]!r} is outside {numbers.range}")
    return name, column


def _flat(data: Any, shape: list[int], where: str) -> list[Any]:
    """The values of ``data``, flat or nested as the shape ``[N, 1]`` says, checked against the shape."""
    if not isinstance(data, list):
        raise BadRequestError(f"{where}: data must be an array of the values, got {type(data).__name__}")
    if data and type(data[0]) is list:  # nested: [[v], [v], ...]
        if len(shape) != 2 or set(map(type, data)) != {list} or set(map(len, data)) != {1}:
            raise BadRequestError(f"{where}: data must be flat, or nested as the shape {shape} says ([[v], ...])")
        data = list(chain.from_iterable(data))
    if len(data) != shape[0]:
        raise BadRequestError(f"{where}: shape {shape} holds {shape[0]} values, data has {len(data)}")
    return data


def _check_types(values: list[Any], allowed: frozenset[type], where: str, expected: str) -> None:
    if not set(map(type, values)) <= allowed:  # (in C; the loop below only names the first one at fault)
        i, value = next((i, v) for i, v in enumerate(values) if type(v) not in allowed)
        raise BadRequestError(f"{where}: data[{i}]: expected {expected}, got {value!r}")


def infer_answer(request: InferRequest, scored: Scored, event_ids: list[str]) -> bytes:
    """The body answering an inference request: the outputs it asked for, the scores as one array."""
    manifest, n = scored.served.manifest, len(event_ids)
    tensors: dict[str, Callable[[], dict[str, Any]]] = {
        EVENT_ID: lambda: {"name": EVENT_ID, "datatype": TEXT, "shape": [n], "data": event_ids},
        "label": lambda: {"name": "label", "datatype": TEXT, "shape": [n], "data": scored.labels},
        "scores": lambda: {"name": "scores", "datatype": "FP64", "shape": [n, len(manifest.classes)],
                           "parameters": {"classes": list(manifest.classes)},
                           "data": np.ascontiguousarray(scored.probabilities, dtype=np.float64).ravel()},
    }  # fmt: skip
    document: dict[str, Any] = {"model_name": manifest.model_id, "model_version": manifest.version}
    if request.id is not None:
        document["id"] = request.id
    document["outputs"] = [tensors[name]() for name in request.outputs]
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def infer_body(instances: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """The inference request carrying v1 instances (``{"features": {...}}``, all with the first one's
    features) as columns: text as ``BYTES``, numbers as ``FP64``; ``fields`` (``id``, ...) beside them.

    >>> body = infer_body([{"features": {"x": 1.5, "c": "NL"}}, {"features": {"x": 2, "c": "DE"}}], id="r")
    >>> body["id"], [(t["name"], t["shape"], t["datatype"], t["data"]) for t in body["inputs"]]
    ('r', [('x', [2, 1], 'FP64', [1.5, 2]), ('c', [2, 1], 'BYTES', ['NL', 'DE'])])
    """
    first, n = instances[0]["features"], len(instances)
    inputs = [
        {"name": name, "shape": [n, 1], "datatype": TEXT if isinstance(value, str) else "FP64",
         "data": [instance["features"][name] for instance in instances]}
        for name, value in first.items()
    ]  # fmt: skip
    return {"inputs": inputs, **fields}


def model_metadata(served: ServedModel, challenger: Challenger | None) -> dict[str, Any]:
    """``GET /v2/models/{model_id}``: the versions served, the inputs a request must carry and the outputs."""
    numbers = [{"name": name, "datatype": "FP32", "shape": [-1, 1]} for name in served.onnx.numeric]
    texts = [{"name": name, "datatype": TEXT, "shape": [-1, 1]} for name in served.onnx.categorical]
    return {
        "name": served.manifest.model_id,
        "versions": [served.version] + ([challenger.served.version] if challenger is not None else []),
        "platform": "onnxruntime_onnx",
        "inputs": numbers + texts,
        "outputs": [
            {"name": EVENT_ID, "datatype": TEXT, "shape": [-1]},
            {"name": "label", "datatype": TEXT, "shape": [-1]},
            {"name": "scores", "datatype": "FP64", "shape": [-1, len(served.manifest.classes)]},
        ],
    }
