"""Property-based fuzz of every consumed message decoder and of serving's predict endpoint (hypothesis).

Property: every input is accepted or rejected with a clear reason; never an unexpected exception,
never a 500. Inputs mix raw bytes, arbitrary JSON, and valid documents with one part mutated
(a field dropped, replaced by any JSON value, or set to an extreme number). Accepted events must
survive a round trip through their own serialization. Each test counts the inputs it really ran; the
total is over 10,000. Seeded (``derandomize``) so a run is reproducible.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from fault_brokers import embedded_broker
from fuzz_inputs import (
    EVENT_ID,
    LABEL,
    PREDICTION,
    PUBLISHED,
    REQUEST,
    RETRAIN,
    batch,
    inputs,
    paths,
    replace_at,
    run_counted,
    with_number_literal,
)
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from driftwarden.core.decoding import LABELS, PREDICTIONS, Decoded, Decoder, describe
from driftwarden.core.events import (
    LABEL_BATCH_SCHEMA,
    MODEL_ID_PATTERN,
    PREDICTION_BATCH_SCHEMA,
    InferenceRequest,
    ModelPublished,
    RetrainCommand,
)
from driftwarden.core.features import is_number
from driftwarden.core.training_join import EXAMPLE_FIELDS, TrainingJoin
from driftwarden.registry.store import ModelRegistry
from driftwarden.serving.server import ServingApp, ServingConfig
from driftwarden.trainer.model import TrainerConfig
from driftwarden.trainer.workflow import bootstrap
from driftwarden_load.scenarios import Scenario, generate

DECODER_EXAMPLES = 1_500  # x 6 decoders
HTTP_EXAMPLES = 1_200
TOKEN = "fuzz-token"


def check_monitor_decoder(decoder: Decoder[Any], raw: bytes) -> None:
    decoded = decoder.decode(raw)
    assert decoded.events or decoded.rejections, "an input vanished: neither accepted nor rejected"
    for rejection in decoded.rejections:
        assert rejection.reason.strip(), f"a rejection without a reason for {raw!r}"
    for event in decoded.events:
        assert decoder.decode(event.to_json()).events == [event], f"accepted {event!r} does not round-trip"
    if decoder is PREDICTIONS:  # the monitor's way (a row envelope as columns): the same rows and rejections
        as_columns = decoder.decode(raw, rows_as_columns=True)
        assert as_columns.rejections == decoded.rejections, raw
        assert accepted_rows(as_columns) == accepted_rows(decoded), raw


def accepted_rows(decoded: Decoded[Any]) -> list[Any]:
    """The events accepted, those of columnar batches too."""
    return [*decoded.events, *(event for batch in decoded.columns for event in batch.events())]


@pytest.mark.parametrize(
    ("decoder", "bases"),
    [
        (PREDICTIONS, [PREDICTION, batch(PREDICTION_BATCH_SCHEMA, PREDICTION)]),
        (LABELS, [LABEL, batch(LABEL_BATCH_SCHEMA, LABEL)]),
    ],
    ids=["predictions", "labels"],
)
def test_monitor_decoders_accept_or_reject_every_input(decoder: Decoder[Any], bases: list[Any]) -> None:
    run_counted(inputs(*bases), lambda raw: check_monitor_decoder(decoder, raw), DECODER_EXAMPLES)


def check_training_join(raw: bytes) -> None:
    """The fuzzed bytes as a prediction message (then a valid label) and as a label message (after a
    valid prediction): each is taken or counted and skipped, and an example is always whole."""
    for first, then in ((raw, orjson.dumps(LABEL)), (orjson.dumps(PREDICTION), raw)):
        join = TrainingJoin("m", 0.0, 10.0)
        refused = join.add_predictions(first) + join.add_labels(then)
        assert join.invalid_records == len(refused) and all(r.reason.strip() for r in refused)
        for example in join.examples():
            assert set(example) == {*EXAMPLE_FIELDS, "label"} and example["model_id"] == "m", example


def test_the_trainer_join_takes_or_counts_every_input() -> None:
    bases = [PREDICTION, batch(PREDICTION_BATCH_SCHEMA, PREDICTION), LABEL, batch(LABEL_BATCH_SCHEMA, LABEL)]
    run_counted(inputs(*bases), check_training_join, DECODER_EXAMPLES)


def check_contract(model: type[BaseModel], raw: bytes) -> None:
    try:
        event = model.model_validate_json(raw)
    except ValidationError as exc:
        assert describe(exc.errors()).strip(), f"a rejection without a reason for {raw!r}"
        return
    again = model.model_validate_json(event.model_dump_json(by_alias=True, exclude_none=True))
    assert again == event, f"accepted {event!r} does not round-trip"
    floats = [v for v in _leaves(event.model_dump()) if isinstance(v, float)]
    assert all(math.isfinite(v) for v in floats), f"accepted a non-finite number: {raw!r}"


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for child in value.values():
            yield from _leaves(child)
    elif isinstance(value, list):
        for child in value:
            yield from _leaves(child)
    else:
        yield value


@pytest.mark.parametrize(
    ("model", "base"),
    [
        (RetrainCommand, RETRAIN),
        (ModelPublished, PUBLISHED),
        (InferenceRequest, REQUEST),
    ],
    ids=["retrain-commands", "models", "inference-requests"],
)
def test_consumed_contracts_accept_or_reject_every_input(model: type[BaseModel], base: Any) -> None:
    """The trainer's, the model follower's and stream serving's decoders: the contracts' own validation."""
    run_counted(inputs(base), lambda raw: check_contract(model, raw), DECODER_EXAMPLES)


@dataclass
class LiveServing:
    """A real ``ServingApp`` (aiohttp test client, real ONNX model, write-back to a real broker)."""

    client: TestClient
    loop: asyncio.AbstractEventLoop
    model_id: str
    features: dict[str, Any]

    def post(self, path: str, body: bytes, authorization: str = f"Bearer {TOKEN}") -> tuple[int, bytes]:
        async def call() -> tuple[int, bytes]:
            headers = {"Content-Type": "application/json", "Authorization": authorization}
            response = await self.client.post(path, data=body, headers=headers)
            return response.status, await response.read()

        return self.loop.run_until_complete(call())

    def raw_request(self, request: bytes) -> bytes:
        """Send bytes no HTTP client library would send; return the raw answer."""

        async def call() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.client.port)
            writer.write(request)
            await writer.drain()
            answer = await reader.read()
            writer.close()
            return answer

        return self.loop.run_until_complete(call())


@pytest.fixture(scope="module")
def live_serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServing]:
    work = tmp_path_factory.mktemp("fuzz-serving")
    examples = [e | {"model_id": "fuzzed"} for chunk in generate(Scenario(n_events=800, onset=0, seed=3))
                for e in chunk.training_examples()]  # fmt: skip
    registry = ModelRegistry(work / "registry")
    assert bootstrap(registry, "fuzzed", examples, TrainerConfig()).status == "promoted"
    with embedded_broker(work, durable=False) as broker:
        settings_ = broker.settings.model_copy(update={"registry_dir": registry.root, "state_dir": work})
        app = ServingApp(settings_, ServingConfig(stream=False, token=TOKEN))
        loop = asyncio.new_event_loop()
        client = TestClient(TestServer(app.web_app()), loop=loop)
        loop.run_until_complete(client.start_server())
        try:
            yield LiveServing(client, loop, "fuzzed", examples[0]["features"])
        finally:
            loop.run_until_complete(client.close())
            leftovers = asyncio.all_tasks(loop)  # tasks the app cancelled without waiting for them
            if leftovers:
                loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.close()


@st.composite
def scored_bodies(draw: st.DrawFn, features: dict[str, Any]) -> bytes:
    """Well-formed requests whose numbers are any finite float64 (many beyond float32's range)."""
    numbers = st.floats(allow_nan=False, allow_infinity=False)
    instances = [
        {"features": {name: draw(numbers) if is_number(value) else value
                      for name, value in features.items()}}
        for _ in range(draw(st.integers(1, 5)))
    ]  # fmt: skip
    return orjson.dumps({"instances": instances})


def predict_bodies(features: dict[str, Any]) -> st.SearchStrategy[bytes]:
    instance = {"features": features, "event_id": EVENT_ID}
    valid = {"instances": [instance, {"features": features}]}
    return st.one_of(inputs(valid, {"instances": [instance]}), scored_bodies(features), scored_bodies(features))


@pytest.mark.integration
def test_predict_endpoint_answers_every_body_with_a_result_or_a_clear_4xx(live_serving: LiveServing) -> None:
    statuses: Counter[int] = Counter()

    def check(case: tuple[str, bytes, str]) -> None:
        model_id, body, authorization = case
        status, answer = live_serving.post(f"/v1/models/{model_id}/predict", body, authorization)
        statuses[status] += 1
        assert status < 500, f"HTTP {status} for model {model_id!r}, body {body!r}: {answer[:300]!r}"
        document = orjson.loads(answer)
        if status == 200:
            sent = orjson.loads(body)["instances"]
            assert len(document["predictions"]) == len(sent)
            for prediction in document["predictions"]:
                assert all(0.0 <= p <= 1.0 for p in prediction["scores"].values()), f"bad scores for {body!r}"
        else:
            assert 400 <= status < 500 and document["error"].strip(), f"HTTP {status} {answer!r}"

    served, unknown = st.just(live_serving.model_id), st.from_regex(MODEL_ID_PATTERN)
    model_ids = st.integers(0, 9).flatmap(lambda i: unknown if i == 0 else served)
    header_text = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=30)
    authorizations = st.integers(0, 9).flatmap(lambda i: header_text if i == 0 else st.just(f"Bearer {TOKEN}"))
    cases = st.tuples(model_ids, predict_bodies(live_serving.features), authorizations)
    run_counted(cases, check, HTTP_EXAMPLES)
    print(f"predict answers by status: {dict(sorted(statuses.items()))}")
    assert min(statuses[200], statuses[400], statuses[401]) >= 20, f"the fuzz missed a path: {statuses}"


@pytest.mark.integration
def test_predict_answers_401_to_an_authorization_header_that_is_not_utf8(live_serving: LiveServing) -> None:
    """Found while fuzzing: ``_authorized`` called ``header.encode()`` on aiohttp's surrogate-escaped text (500)."""
    body = b'{"instances": [{"features": {}}]}'
    head = b"POST /v1/models/fuzzed/predict HTTP/1.1\r\nHost: fuzz\r\nAuthorization: Bearer \xff\xfe\r\n"
    head += b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    answer = live_serving.raw_request(head + body)
    assert answer.startswith(b"HTTP/1.1 401 "), answer.split(b"\r\n")[0]


#: The input the fuzz found (two features at +-3.4028235677973366e38, just beyond float32's largest value).
BEYOND_FLOAT32 = (
    b'{"instances":[{"features":{"num_00":0.0,"num_01":0.0,"num_02":0.0,"num_03":0.0,"num_04":0.0,"num_05":0.0,'
    b'"num_06":0.0,"num_07":0.0,"num_08":0.0,"num_09":0.0,"num_10":0.0,"num_11":0.0,"num_12":0.0,"num_13":0.0,'
    b'"num_14":3.4028235677973366e+38,"num_15":-3.4028235677973366e+38,'
    b'"cat_00":"a","cat_01":"a","cat_02":"e","cat_03":"a"}}]}'
)


@pytest.mark.integration
def test_predict_never_answers_scores_that_are_not_probabilities(live_serving: LiveServing) -> None:
    """Either refused (400 naming the feature) or scored with probabilities (it was 200 with null scores)."""
    status, answer = live_serving.post(f"/v1/models/{live_serving.model_id}/predict", BEYOND_FLOAT32)
    if status == 400:
        assert "num_1" in orjson.loads(answer)["error"], answer
        return
    assert status == 200, answer
    scores = orjson.loads(answer)["predictions"][0]["scores"].values()
    assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in scores), f"HTTP 200 with scores {answer!r}"


def test_paths_and_mutation_helpers_reach_nested_values() -> None:
    assert ("instances", 0, "features") in paths(REQUEST)
    dropped = replace_at(REQUEST, ("instances", 0, "features"), None, delete=True)
    assert dropped["instances"][0] == {"event_id": EVENT_ID}
    assert b'"features":{"x":1e400}' in with_number_literal(REQUEST, ("instances", 0, "features", "x"), b"1e400")
