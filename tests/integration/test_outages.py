"""Broker outages on real processes: serving with its own broker, killed and restarted on the same port.

While the broker is down serving says so once (no flood of aiokafka connection errors), ``/readyz``
answers 503 naming Kafka, predict fails fast with 503 instead of blocking, and SIGTERM is honoured
within the shutdown timeout. When the broker is back, one line says so and serving answers again.
"""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
from helpers_integration import unique_model

from driftwarden.kafka.broker import EmbeddedBroker, free_port
from driftwarden.kafka.object_store import free_low_port
from driftwarden.processes import spawn, terminate
from driftwarden.registry.store import ModelRegistry
from driftwarden.serving.open_inference import infer_body
from driftwarden.serving.readiness import wait_until_ready
from driftwarden.settings import Settings
from driftwarden.trainer.model import TrainerConfig
from driftwarden.trainer.workflow import bootstrap
from driftwarden_load.scenarios import Scenario, generate

pytestmark = [pytest.mark.integration, pytest.mark.serial]  # time bounds: measured with no second test beside


def get(url: str, body: bytes | None = None, timeout: float = 30) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.25)


def test_serving_through_a_broker_outage(tmp_path):
    model_id = unique_model("outage")
    registry = ModelRegistry(tmp_path / "registry")
    examples = [e | {"model_id": model_id} for chunk in generate(Scenario(n_events=1_500, seed=3))
                for e in chunk.training_examples()]  # fmt: skip
    assert bootstrap(registry, model_id, examples, TrainerConfig()).status == "promoted"
    base = Settings(topic_prefix=f"dwout-{uuid.uuid4().hex[:8]}.", registry_dir=registry.root, state_dir=tmp_path)
    broker = EmbeddedBroker(tmp_path / "broker.log", port=free_low_port(), settings=base)
    broker.start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serving.log"
    process = spawn(["serve", "--port", str(port)], broker.settings, log_path)
    rows = [{"features": examples[0]["features"]}]
    body = orjson.dumps({"instances": rows})
    predict_url = f"{url}/v1/models/{model_id}/predict"
    infer = (f"{url}/v2/models/{model_id}/infer", orjson.dumps(infer_body(rows)))  # the Open Inference Protocol
    try:
        asyncio.run(wait_until_ready(url, timeout_s=60, process=process))
        assert get(predict_url, body)[0] == 200

        broker.stop()
        wait_until(lambda: "kafka" in get(f"{url}/readyz")[1]["problems"], "readyz names Kafka")
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:  # concurrent: micro-batches of several requests, each failing whole
            answers = list(pool.map(lambda i: get(*infer) if i % 2 else get(predict_url, body), range(8)))
        assert all(status == 503 and "could not be written to the stream" in a["error"] for status, a in answers)
        assert time.monotonic() - started < 5  # fails fast instead of blocking for the request timeout
        time.sleep(3)  # the time in which aiokafka used to log ~170 connection errors
        log = log_path.read_text()
        assert log.count("the Kafka broker is UNREACHABLE") == 1, log[-3000:]
        assert [line for line in log.splitlines() if "[ERROR] aiokafka" in line] == []

        broker.start()  # the same port
        wait_until(lambda: get(f"{url}/readyz")[0] == 200, "serving is ready again", timeout_s=90)
        assert "the Kafka broker is REACHABLE again" in log_path.read_text()
        assert get(predict_url, body)[0] == 200 and get(*infer)[0] == 200

        broker.stop()
        wait_until(lambda: get(f"{url}/readyz")[0] == 503, "readyz says not ready")
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        process.wait(timeout=20)
        assert time.monotonic() - started < 15, "SIGTERM not honoured within the shutdown timeout"
    finally:
        terminate(process)
        broker.stop()


@pytest.mark.parametrize(("service", "bound_s"), [("trainer", 15), ("monitor", 25)])
def test_a_worker_reports_an_outage_once_and_honours_sigterm_while_the_broker_is_down(tmp_path, service, bound_s):
    base = Settings(topic_prefix=f"dwout-{uuid.uuid4().hex[:8]}.", registry_dir=tmp_path / "registry",
                    state_dir=tmp_path)  # fmt: skip
    broker = EmbeddedBroker(tmp_path / "broker.log", port=free_low_port(), settings=base)
    broker.start()
    log_path = tmp_path / f"{service}.log"
    process = spawn([service, "--metrics-port", str(free_port())], broker.settings, log_path)
    try:
        wait_until(lambda: "[^Worker]: Ready" in log_path.read_text(), f"the {service} started")
        broker.stop()
        wait_until(lambda: "the Kafka broker is UNREACHABLE" in log_path.read_text(), "the outage is reported")
        time.sleep(3)
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        process.wait(timeout=40)
        assert time.monotonic() - started < bound_s, "SIGTERM not honoured within the shutdown timeout"
        log = log_path.read_text()
        assert log.count("the Kafka broker is UNREACHABLE") == 1
        assert [line for line in log.splitlines() if "[ERROR] aiokafka" in line] == []
    finally:
        terminate(process)
        broker.stop()
