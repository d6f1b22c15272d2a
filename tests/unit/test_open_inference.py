"""The Open Inference Protocol front-end without Kafka: decoding, validation, the model's columns, answers."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from driftwarden.registry.store import ModelRegistry
from driftwarden.serving.models import ActiveModels, BadRequestError, ServedModel, TooLargeError
from driftwarden.serving.open_inference import decode_infer, infer_answer, infer_body, model_metadata
from driftwarden.serving.server import Scored
from driftwarden.trainer.model import TrainerConfig
from driftwarden.trainer.workflow import bootstrap
from driftwarden_load.scenarios import Scenario, generate


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    registry = ModelRegistry(tmp_path_factory.mktemp("served") / "registry")
    examples = [e for chunk in generate(Scenario(n_events=1_000, seed=2)) for e in chunk.training_examples()]
    assert bootstrap(registry, "served", examples, TrainerConfig()).status == "promoted"
    return ActiveModels(registry).load("served", "1")


def rows(n: int, seed: int = 4) -> list[dict]:
    return [{"features": e["features"]} for e in next(generate(Scenario(n_events=n, seed=seed))).prediction_events()]


def test_columns_become_the_same_model_inputs_as_the_same_rows_sent_as_instances(served):
    instances = rows(50)
    request = decode_infer(infer_body(instances))
    assert len(request.columns) == 50 and request.columns.event_ids is None and request.id is None
    by_rows, by_columns = served.frame(instances), served.select(request.columns)
    assert by_rows.keys() == by_columns.keys()
    for name in served.onnx.numeric:
        assert by_columns[name].dtype == np.float64 and by_columns[name].tolist() == by_rows[name].tolist()
    for name in served.onnx.categorical:
        assert by_columns[name].tolist() == by_rows[name].tolist()
    # A micro-batch of both front-ends' requests: each request's rows in order, none converted twice.
    frame, refusals = served.frames([instances[:10], request.columns, instances[10:]])
    assert refusals == [None] * 3
    both = served.frame(instances[:10] + instances + instances[10:])
    assert all(frame[name].tolist() == both[name].tolist() for name in both)
    assert np.array_equal(served.score(by_columns)[1], served.score(by_rows)[1])


def test_nested_data_and_integer_datatypes_are_taken(served):
    body = infer_body(rows(3))
    numeric = body["inputs"][0]
    numeric["data"] = [[value] for value in numeric["data"]]
    body["inputs"].append({"name": "extra", "shape": [3], "datatype": "UINT8", "data": [0, 7, 255]})
    body["inputs"].append({"name": "event_id", "shape": [3, 1], "datatype": "BYTES", "data": ["a", "", "c"]})
    request = decode_infer(body | {"id": "req-1"})
    assert request.id == "req-1" and request.columns.event_ids == ["a", "", "c"]
    assert request.columns.inputs["extra"].tolist() == [0.0, 7.0, 255.0] and "event_id" not in request.columns.inputs
    assert served.select(request.columns)[numeric["name"]].tolist() == [row[0] for row in numeric["data"]]


def tensor(**changes: object) -> dict:
    return {"name": "x", "shape": [2, 1], "datatype": "FP64", "data": [1.0, 2.0]} | changes


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([tensor()], "body must be an object with a non-empty 'inputs' list"),
        ({"inputs": []}, "non-empty 'inputs' list"),
        ({"instances": [{"features": {}}]}, "non-empty 'inputs' list"),
        ({"inputs": [tensor()], "id": 7}, "id: expected a string, got 7"),
        ({"inputs": ["x"]}, "inputs[0]: expected an object with name, shape, datatype and data"),
        ({"inputs": [tensor(name="")]}, "inputs[0].name: expected a non-empty string, got ''"),
        ({"inputs": [tensor(), tensor()]}, "inputs[1]: input 'x' is given twice"),
        ({"inputs": [tensor(), tensor(datatype="BYTES", data=["a", "b"])]}, "inputs[1]: input 'x' is given twice"),
        ({"inputs": [tensor(), tensor(datatype="FP32")]}, "inputs[1]: input 'x' is given twice"),
        ({"inputs": [tensor(shape=[2, 2])]}, "input 'x': shape must be [N] or [N, 1]"),
        ({"inputs": [tensor(shape=[2, 1, 1])]}, "input 'x': shape must be [N] or [N, 1]"),
        ({"inputs": [tensor(shape=[0])]}, "input 'x': shape must be [N] or [N, 1] with N > 0"),
        ({"inputs": [tensor(shape=[-2])]}, "input 'x': shape must be [N] or [N, 1] with N > 0"),
        ({"inputs": [tensor(shape="2")]}, "input 'x': shape must be [N] or [N, 1]"),
        ({"inputs": [tensor(shape=[True])]}, "input 'x': shape must be [N] or [N, 1]"),
        ({"inputs": [tensor(shape=[3, 1])]}, "input 'x': shape [3, 1] holds 3 values, data has 2"),
        ({"inputs": [tensor(), tensor(name="y", shape=[3], data=[1, 2, 3])]},
         "input 'y': 3 instances, but input 'x' has 2"),
        ({"inputs": [tensor(data="1.0,2.0")]}, "input 'x': data must be an array of the values, got str"),
        ({"inputs": [tensor(data=[[1.0], 2.0])]}, "input 'x': data must be flat, or nested as the shape"),
        ({"inputs": [tensor(data=[[1.0, 2.0], []])]}, "input 'x': data must be flat, or nested as the shape"),
        ({"inputs": [tensor(shape=[2], data=[[1.0], [2.0]])]}, "input 'x': data must be flat, or nested"),
        ({"inputs": [tensor(datatype="FP8")]}, "input 'x': datatype 'FP8' is not served"),
        ({"inputs": [tensor(datatype="BOOL", data=[True, False])]}, "input 'x': datatype 'BOOL' is not served"),
        ({"inputs": [tensor(datatype=None)]}, "input 'x': datatype None is not served"),
        ({"inputs": [tensor(data=[1.0, True])]}, "input 'x': data[1]: expected a number (FP64), got True"),
        ({"inputs": [tensor(data=["1.5", 2.0])]}, "input 'x': data[0]: expected a number (FP64), got '1.5'"),
        ({"inputs": [tensor(data=[1.0, None])]}, "input 'x': data[1]: expected a number (FP64), got None"),
        ({"inputs": [tensor(datatype="INT64", data=[1, 2.5])]}, "data[1]: expected an integer (INT64), got 2.5"),
        ({"inputs": [tensor(datatype="UINT8", data=[1, 256])]}, "data[1]: 256 is outside the range of UINT8 (0..255)"),
        ({"inputs": [tensor(datatype="FP16", data=[1, 7e4])]}, "data[1]: 70000.0 is outside the range of FP16"),
        ({"inputs": [tensor(data=[1.0, float("nan")])]}, "data[1]: nan is outside the float32 range the model takes"),
        ({"inputs": [tensor(data=[float("-inf"), 1.0])]}, "data[0]: -inf is outside the float32 range"),
        ({"inputs": [tensor(data=[1.0, 3.5e38])]}, "data[1]: 3.5e+38 is outside the float32 range"),
        ({"inputs": [tensor(datatype="FP32", data=[10**400, 1])]}, "data[0]: 1000000000000000000000"),
        ({"inputs": [tensor(datatype="BYTES", data=["NL", 3])]}, "data[1]: expected a string (BYTES), got 3"),
        ({"inputs": [tensor(parameters={"binary_data_size": 16})]}, "binary tensor data is not supported"),
        ({"inputs": [tensor()], "parameters": {"binary_data_output": True}}, "binary tensor data is not supported"),
        ({"inputs": [tensor()], "outputs": [{"name": "probabilities"}]},
         "outputs[0].name: expected one of event_id, label, scores, got 'probabilities'"),
        ({"inputs": [tensor()], "outputs": []}, "outputs: expected a non-empty array"),
        ({"inputs": [tensor(name="event_id")]}, "input 'event_id': event ids are text: datatype must be BYTES"),
    ],
)  # fmt: skip
def test_a_bad_request_is_refused_naming_the_input_and_value(body, message):
    with pytest.raises(BadRequestError) as refused:
        decode_infer(body)
    assert message in str(refused.value) and not isinstance(refused.value, TooLargeError)


def test_more_instances_than_a_request_may_carry_is_refused_before_any_data_is_read():
    huge = tensor(shape=[10**12, 1], data=[1.0])  # nothing is allocated for the 10^12 rows it claims
    with pytest.raises(TooLargeError, match="at most 10000 instances per request, got 1000000000000"):
        decode_infer({"inputs": [huge]})
    with pytest.raises(TooLargeError, match="got 10001"):
        decode_infer({"inputs": [tensor(shape=[10_001], data=[1.0] * 10_001)]})
    assert len(decode_infer({"inputs": [tensor(shape=[10_000], data=[1.0] * 10_000)]}).columns) == 10_000


def test_an_input_the_model_needs_missing_or_of_the_wrong_kind_is_refused_by_name(served):
    body = infer_body(rows(2))
    numeric, categorical = served.onnx.numeric[3], served.onnx.categorical[0]
    cases = [
        ([t for t in body["inputs"] if t["name"] != numeric], f"input '{numeric}': missing (model v1 needs it)"),
        ([t | {"datatype": "BYTES", "data": ["1", "2"]} if t["name"] == numeric else t for t in body["inputs"]],
         f"input '{numeric}': model v1 takes numbers for it"),
        ([t | {"datatype": "FP32", "data": [1, 2]} if t["name"] == categorical else t for t in body["inputs"]],
         f"input '{categorical}': model v1 takes text (BYTES) for it"),
    ]  # fmt: skip
    for inputs, message in cases:
        request = decode_infer({"inputs": inputs})
        with pytest.raises(BadRequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
            served.select(request.columns)
        frame, refusals = served.frames([rows(3), request.columns])  # in a micro-batch: refused alone
        assert refusals[0] is None and message in str(refusals[1]) and len(frame[numeric]) == 3


def test_the_answer_is_the_outputs_asked_for_as_columns(served):
    instances = rows(5)
    request = decode_infer(infer_body(instances) | {"id": "r-9"})
    frame = served.select(request.columns)
    labels, probabilities = served.score(frame)
    scored = Scored(served, labels, probabilities, frame, np.zeros(5))
    ids = [f"id-{i}" for i in range(5)]
    answer = orjson.loads(infer_answer(request, scored, ids))
    assert answer["model_name"] == "served" and answer["model_version"] == "1" and answer["id"] == "r-9"
    outputs = {output["name"]: output for output in answer["outputs"]}
    assert list(outputs) == ["event_id", "label", "scores"]
    assert outputs["event_id"] == {"name": "event_id", "datatype": "BYTES", "shape": [5], "data": ids}
    assert outputs["label"]["data"] == labels and outputs["label"]["shape"] == [5]
    classes = list(served.manifest.classes)
    assert outputs["scores"]["shape"] == [5, len(classes)] and outputs["scores"]["parameters"] == {"classes": classes}
    assert np.array(outputs["scores"]["data"]).reshape(5, -1).tolist() == probabilities.tolist()
    only = decode_infer(infer_body(instances) | {"outputs": [{"name": "scores"}, {"name": "event_id"}]})
    answer = orjson.loads(infer_answer(only, scored, ids))
    assert [output["name"] for output in answer["outputs"]] == ["scores", "event_id"] and "id" not in answer


def test_model_metadata_lists_the_inputs_a_request_must_carry(served):
    metadata = model_metadata(served, None)
    assert metadata["name"] == "served" and metadata["versions"] == ["1"]
    inputs = {tensor["name"]: tensor["datatype"] for tensor in metadata["inputs"]}
    texts = {name: "BYTES" for name in served.onnx.categorical}
    assert inputs == {name: "FP32" for name in served.onnx.numeric} | texts
    assert [output["name"] for output in metadata["outputs"]] == ["event_id", "label", "scores"]
