"""The Open Inference Protocol front-end (``POST /v2/models/{id}/infer``) on real processes: the answers
v1 gives for the same rows, the same write-back (every answered prediction on the topic once), the
same refusals, and the protocol's metadata and health endpoints."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
import uuid

import aiohttp
import numpy as np
import orjson
import pytest
from test_serving import PATHS, TOKEN, instances, post, written_events, written_messages
from test_serving import serving as serving  # (the fixture: a serving process of this module's own)

from driftwarden.serving.open_inference import infer_body

pytestmark = pytest.mark.integration


def outputs(answer: dict) -> dict[str, dict]:
    return {output["name"]: output for output in answer["outputs"]}


def test_v2_answers_as_v1_does_for_the_same_rows_and_writes_the_same_predictions_back_once(serving):
    rows = instances(300, seed=11)
    status, v1 = post(serving, {"instances": rows})
    assert status == 200
    status, v2 = post(serving, infer_body(rows, id="req-300"), api="v2")
    assert status == 200, v2
    assert (v2["model_name"], v2["model_version"], v2["id"]) == (serving.model_id, v1["model_version"], "req-300")
    answered = outputs(v2)
    assert answered["label"]["data"] == [p["label"] for p in v1["predictions"]]
    classes = answered["scores"]["parameters"]["classes"]
    assert answered["scores"]["shape"] == [300, len(classes)]
    scores = np.array(answered["scores"]["data"]).reshape(300, len(classes))
    assert np.allclose(scores, [[p["scores"][c] for c in classes] for p in v1["predictions"]], rtol=0, atol=1e-6)
    ids = answered["event_id"]["data"]
    assert len(set(ids)) == 300 and not set(ids) & {p["event_id"] for p in v1["predictions"]}

    events = written_events(serving.settings, serving.model_id)
    by_v2 = [e for e in events if e.event_id in set(ids)]
    assert sorted(e.event_id for e in by_v2) == sorted(ids)  # every answered prediction, once
    by_id = {e.event_id: e for e in events}
    for v1_answer, v2_id in zip(v1["predictions"], ids, strict=True):  # what v1 wrote for the same row
        before, after = by_id[v1_answer["event_id"]], by_id[v2_id]
        assert after.features == before.features and after.prediction == before.prediction
        assert after.model_version == before.model_version and after.latency_ms is not None
        assert all(abs(after.scores[c] - before.scores[c]) <= 1e-6 for c in classes)


def test_v1_and_v2_requests_share_micro_batches_and_each_request_is_written_whole_once(serving):
    bodies = [({"instances": rows}, "v1") if seed % 2 else (infer_body(rows), "v2")
              for seed in range(160) for rows in [instances(2, seed=seed)]]  # fmt: skip

    async def send() -> list[tuple[str, list[str]]]:
        queue = list(bodies)
        answered: list[tuple[str, list[str]]] = []
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:

            async def client() -> None:
                while queue:
                    body, api = queue.pop()
                    url = serving.url + PATHS[api].format(serving.model_id)
                    async with session.post(url, data=orjson.dumps(body)) as response:
                        assert response.status == 200
                        answer = await response.json()
                    ids = [p["event_id"] for p in answer["predictions"]] if api == "v1" else None
                    answered.append((api, ids or outputs(answer)["event_id"]["data"]))

            await asyncio.gather(*(client() for _ in range(16)))
        return answered

    answered = asyncio.run(send())
    ours = {event_id for _, ids in answered for event_id in ids}
    assert len(ours) == 320
    messages = [ids for m in written_messages(serving.settings, serving.model_id) if (ids := set(m.event_ids) & ours)]
    assert sorted(i for m in messages for i in m) == sorted(ours)  # every answered prediction, once
    assert all(any(set(ids) <= m for m in messages) for _, ids in answered)  # a request's rows in one message
    front_end = {event_id: api for api, ids in answered for event_id in ids}
    # requests of both front-ends were scored and written together
    assert any({front_end[event_id] for event_id in m} == {"v1", "v2"} for m in messages)


def test_the_callers_event_ids_are_answered_and_written_and_an_unwritable_one_is_refused(serving):
    rows = instances(3, seed=5)
    mine = f"mine-{uuid.uuid4().hex}"
    ids = {"name": "event_id", "shape": [3], "datatype": "BYTES", "data": [mine, "", f"{mine}-3"]}
    body = infer_body(rows)
    status, answer = post(serving, body | {"inputs": [*body["inputs"], ids]}, api="v2")
    assert status == 200, answer
    answered = outputs(answer)["event_id"]["data"]
    assert answered[0] == mine and answered[2] == f"{mine}-3" and uuid.UUID(answered[1]).version == 4
    assert sorted(e.event_id for e in written_events(serving.settings, serving.model_id) if mine in e.event_id) == [
        mine, f"{mine}-3"]  # fmt: skip

    too_long = "x" * 129  # the monitor refuses it: the request gets a 422 and none of its rows is written
    ids["data"] = [f"{mine}-ok", too_long, f"{mine}-ok2"]
    status, answer = post(serving, body | {"inputs": [*body["inputs"], ids]}, api="v2")
    assert status == 422 and answer["error"].startswith("refused: prediction 1: the monitor would reject it")
    written = {e.event_id for e in written_events(serving.settings, serving.model_id)}
    assert not written & {f"{mine}-ok", too_long, f"{mine}-ok2"}


def with_input(body: dict, name: str, **changes: object) -> dict:
    return body | {"inputs": [t | changes if t["name"] == name else t for t in body["inputs"]]}


BODY = infer_body(instances(2))
BAD = [
    (BODY, None, 401, "bearer token"),
    ({"inputs": []}, TOKEN, 400, "body must be an object with a non-empty 'inputs' list"),
    ({"instances": instances(1)}, TOKEN, 400, "non-empty 'inputs' list"),
    (BODY | {"inputs": [t for t in BODY["inputs"] if t["name"] != "num_01"]}, TOKEN, 400,
     "input 'num_01': missing (model v1 needs it)"),
    (with_input(BODY, "num_02", shape=[2, 2]), TOKEN, 400, "input 'num_02': shape must be [N] or [N, 1]"),
    (with_input(BODY, "num_02", shape=[3, 1]), TOKEN, 400, "input 'num_02': shape [3, 1] holds 3 values, data has 2"),
    (with_input(BODY, "num_02", shape=[3], data=[1.0, 2.0, 3.0]), TOKEN, 400, "3 instances, but input 'num_00' has 2"),
    (with_input(BODY, "num_03", data=[1.0, float("nan")]), TOKEN, 400,
     "input 'num_03': data[1]: expected a number (FP64), got None"),  # (JSON has no NaN: it is sent as null)
    (with_input(BODY, "num_03", data=[1e39, 1.0]), TOKEN, 400,
     "input 'num_03': data[0]: 1e+39 is outside the float32 range the model takes"),
    (with_input(BODY, "num_03", data=["high", 1.0]), TOKEN, 400, "data[0]: expected a number (FP64), got 'high'"),
    (with_input(BODY, "num_03", datatype="FLOAT"), TOKEN, 400, "input 'num_03': datatype 'FLOAT' is not served"),
    (with_input(BODY, "cat_00", datatype="FP64", data=[1.0, 2.0]), TOKEN, 400,
     "input 'cat_00': model v1 takes text (BYTES) for it"),
    (with_input(BODY, "num_00", shape=[10**9, 1]), TOKEN, 413, "at most 10000 instances per request, got 1000000000"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "token", "code", "message"), BAD)
def test_bad_inference_requests_get_a_precise_4xx(serving, body, token, code, message):
    status, answer = post(serving, body, token=token, api="v2")
    assert status == code and message in answer["error"], answer


def test_an_unknown_model_is_404_and_more_rows_than_a_request_may_carry_is_413(serving):
    status, answer = post(serving, BODY, model_id="nobody", api="v2")
    assert status == 404 and "'nobody' is not served" in answer["error"]
    status, answer = post(serving, infer_body(instances(10_001, seed=4)), api="v2", timeout=60)
    assert status == 413 and "at most 10000 instances per request, got 10001" in answer["error"]


def get(serving, path: str, token: str | None = TOKEN) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(serving.url + path, headers=headers), timeout=10) as answer:
            return answer.status, orjson.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def test_the_metadata_and_health_endpoints_of_the_protocol(serving):
    status, metadata = get(serving, f"/v2/models/{serving.model_id}")
    assert status == 200 and metadata["name"] == serving.model_id and metadata["platform"] == "onnxruntime_onnx"
    assert {t["name"]: t["datatype"] for t in metadata["inputs"]} == {t["name"]: "FP32" if t["datatype"] == "FP64"
                                                                      else "BYTES" for t in BODY["inputs"]}  # fmt: skip
    assert [t["name"] for t in metadata["outputs"]] == ["event_id", "label", "scores"]
    assert get(serving, f"/v2/models/{serving.model_id}", token=None)[0] == 401
    assert get(serving, "/v2/models/nobody")[0] == 404
    assert get(serving, f"/v2/models/{serving.model_id}/ready")[0] == 200
    assert get(serving, "/v2/models/nobody/ready")[0] == 404
    assert get(serving, "/v2/health/live")[0] == 200 and get(serving, "/v2/health/ready")[0] == 200
    status, server = get(serving, "/v2", token=None)
    assert status == 200 and server["name"] == "driftwarden"
