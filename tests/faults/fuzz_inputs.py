"""Hostile inputs for the property-based fuzz (hypothesis): raw bytes, arbitrary JSON, valid documents
and valid documents with one part mutated, and, for the fuzz through Kafka, what only a broker
delivers: NaN and Infinity literals, wrong schema versions, invalid UTF-8 and oversize documents.
A plain module (not a conftest) so every fuzz test can import it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=100,  # each run sets its own count (run_counted)
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

EVENT_ID = "6f1c2a7e-0d9b-4a57-9a43-5f0f3c1d2b11"
PREDICTION = {"event_id": EVENT_ID, "model_id": "m", "model_version": "1", "ts": 1.0,
              "features": {"x": 1.0, "c": "a", "b": True, "n": None}, "prediction": 0,
              "scores": {"0": 0.25, "1": 0.75}, "segment": {"eu": "1"}, "latency_ms": 2.0, "cost": 0.1}  # fmt: skip
LABEL = {"event_id": EVENT_ID, "model_id": "m", "ts": 2.0, "label": 1}
RETRAIN = {"command_id": EVENT_ID, "idempotency_key": "m:1", "model_id": "m", "model_version": "1", "ts": 3.0,
           "reasons": ["data_drift"], "window": {"start_ts": 0.0, "end_ts": 3.0}}  # fmt: skip
PUBLISHED = {"model_id": "m", "model_version": "2", "status": "promoted", "ts": 4.0, "command_id": EVENT_ID,
             "reason": "better", "artifact_uri": "file:///r/m/2/model.onnx", "sha256": "a" * 64,
             "parent_version": "1", "traffic_fraction": 0.5, "metrics": {"accuracy": 0.9}}  # fmt: skip
REQUEST = {"request_id": "r1", "model_id": "m", "instances": [{"features": {"x": 1.0}, "event_id": EVENT_ID}]}

#: Numbers that break naive code: beyond float32, beyond float64 (JSON allows the literal), tiny, huge ints.
EXTREME_NUMBERS = [b"1e39", b"-3.5e38", b"1e400", b"-1e400", b"5e-324", b"1e-400", b"18446744073709551616",
                   b"-9223372036854775809", b"0", b"-0.0"]  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document (dict keys and list indexes)."""
    children = (
        document.items() if isinstance(document, dict) else enumerate(document) if isinstance(document, list) else []
    )
    found = [prefix] if prefix else []
    for key, child in children:
        found += paths(child, (*prefix, key))
    return found


_EXTREME_MARK = "__driftwarden_fuzz_extreme_number__"


def replace_at(document: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    if not path:
        return value
    copy = dict(document) if isinstance(document, dict) else list(document)
    head, rest = path[0], path[1:]
    if delete and not rest:
        del copy[head]
    else:
        copy[head] = replace_at(copy[head], rest, value, delete)
    return copy


def with_number_literal(document: Any, path: tuple[Any, ...], literal: bytes) -> bytes:
    """``document`` as JSON with the value at ``path`` written as ``literal`` (which orjson would refuse)."""
    raw = orjson.dumps(replace_at(document, path, _EXTREME_MARK, delete=False))
    return raw.replace(f'"{_EXTREME_MARK}"'.encode(), literal)


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> bytes:
    """``base`` with one value dropped, replaced by any JSON value, or by an extreme number literal."""
    path = draw(st.sampled_from(paths(base)))
    how = draw(st.sampled_from(["drop", "replace", "extreme"]))
    if how == "extreme":
        return with_number_literal(base, path, draw(st.sampled_from(EXTREME_NUMBERS)))
    return orjson.dumps(replace_at(base, path, draw(json_values) if how == "replace" else None, delete=how == "drop"))


def _truncated_or_padded(raw: bytes) -> st.SearchStrategy[bytes]:
    return st.sampled_from([raw, raw[: len(raw) // 2], raw + b"}"])


def inputs(*bases: Any) -> st.SearchStrategy[bytes]:
    """Raw bytes, arbitrary JSON, valid documents, and valid documents with one part mutated."""
    return st.one_of(
        st.binary(max_size=200),
        json_values.map(orjson.dumps),
        st.sampled_from([orjson.dumps(base) for base in bases]),
        *[mutated(base) for base in bases],
        *[mutated(base).flatmap(_truncated_or_padded) for base in bases],
    )


def batch(schema: str, event: dict[str, Any]) -> dict[str, Any]:
    return {"schema": schema, "model_id": "m", "events": [event, event | {"event_id": str(uuid.uuid4())}]}


def run_counted(strategy: st.SearchStrategy[Any], check: Callable[[Any], None], examples: int) -> None:
    """Run ``check`` on ``examples`` generated inputs and prove they really ran."""
    ran = []

    @settings(FUZZ, max_examples=examples)
    @given(strategy)
    def property_holds(value: Any) -> None:
        ran.append(1)
        check(value)

    property_holds()
    assert len(ran) >= examples


#: Literals Python's and orjson's JSON parsers treat differently (orjson refuses them; json accepts them).
NON_FINITE = [b"NaN", b"Infinity", b"-Infinity"]
#: Larger than the 1 MiB a Kafka message usually holds, smaller than what consumers here fetch.
OVERSIZE_BYTES = 1_200_000


@st.composite
def broker_only(draw: st.DrawFn, base: Any) -> bytes:
    """``base`` with a non-finite literal, a wrong schema version, invalid UTF-8 in a string, or padded
    beyond 1 MiB with an unknown field."""
    how = draw(st.sampled_from(["non-finite", "schema", "utf8", "oversize"]))
    if how == "non-finite":
        return with_number_literal(base, draw(st.sampled_from(paths(base))), draw(st.sampled_from(NON_FINITE)))
    if how == "schema":
        version = draw(st.sampled_from(["v0", "v2", "v10", "", "v1 ", "V1"]))
        return orjson.dumps(base | {"schema": str(base.get("schema", "event.v1")).rsplit(".", 1)[0] + "." + version})
    raw = orjson.dumps(base)
    if how == "utf8":
        cut = draw(st.sampled_from([i for i in range(len(raw)) if raw[i : i + 1] == b'"'] or [0]))
        return raw[: cut + 1] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"])) + raw[cut + 1 :]
    return raw[:-1] + b',"padding":"' + b"x" * OVERSIZE_BYTES + b'"}'


def hostile(*bases: Any) -> st.SearchStrategy[bytes]:
    """:func:`inputs` and :func:`broker_only` inputs, about one in eight of the latter."""
    return st.integers(0, 7).flatmap(lambda i: st.one_of(*map(broker_only, bases)) if i == 0 else inputs(*bases))


def drawn(strategy: st.SearchStrategy[Any], examples: int) -> list[Any]:
    """``examples`` inputs generated by ``strategy`` (reproducibly), to send somewhere all at once."""
    found: list[Any] = []
    run_counted(strategy, found.append, examples)
    return found[:examples]
