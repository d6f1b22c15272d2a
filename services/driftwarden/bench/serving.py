"""``driftwarden bench serving``: predictions/s and latency of the ONNX server over real HTTP.

Starts its own embedded broker (serving writes every prediction back to it, as in production) and a
``driftwarden serve`` process with a freshly trained model, then sends requests of each batch size
from ``concurrency`` concurrent clients, in each protocol (``v1``: rows, a JSON object per instance;
``v2``: the Open Inference Protocol, a JSON array per feature), and measures rows/s and per-request
latency percentiles. The
ceiling beside each row: a bare onnxruntime loop (``session.run`` on the same model, the same rows
already as input columns, one call per request's rows) in the benchmark's own process, same run.
Every answer is checked against the model's own labels and scores for the request's rows. The
serving process's CPU time per request (``/proc``) is reported too: steadier than the rates on a
machine whose cores the client, the broker and others share.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from driftwarden.errors import DriftwardenError
from driftwarden.kafka.broker import EmbeddedBroker, free_port
from driftwarden.processes import spawn, terminate
from driftwarden.registry.store import ModelRegistry
from driftwarden.serving.models import ActiveModels, ServedModel
from driftwarden.serving.open_inference import infer_body
from driftwarden.serving.readiness import wait_until_ready
from driftwarden.trainer.model import TrainerConfig
from driftwarden.trainer.workflow import bootstrap
from driftwarden_load.scenarios import Scenario, generate

MODEL_ID = "bench-model"
PATHS = {"v1": f"/v1/models/{MODEL_ID}/predict", "v2": f"/v2/models/{MODEL_ID}/infer"}


@dataclass
class ServingResult:
    protocol: str
    batch_size: int
    requests: int
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    ceiling_rows_per_s: float
    server_cpu_us: float  # the serving process's CPU time per request (user + system)
    client_cpu_us: float  # the benchmark client's, on the same cores

    def as_row(self) -> str:
        cells = [self.protocol, f"{self.batch_size}", f"{self.requests:,}", f"{self.rows_per_s:,.0f}",
                 f"{self.p50_ms:.1f}", f"{self.p99_ms:.1f}", f"{self.ceiling_rows_per_s:,.0f}",
                 f"{self.server_cpu_us:,.0f}", f"{self.client_cpu_us:,.0f}"]  # fmt: skip
        return "| " + " | ".join(cells) + " |"


def _instances(batch_size: int) -> list[dict[str, object]]:
    events = next(generate(Scenario(n_events=batch_size, seed=3), chunk_size=batch_size)).prediction_events()
    return [{"features": e["features"]} for e in events]


def onnxruntime_ceiling(served: ServedModel, batch_size: int, seconds: float = 2.0) -> float:
    """Rows/s of ``session.run`` alone on the model, ``batch_size`` rows per call (at least ``seconds``)."""
    feeds = served.onnx.feeds(served.frame(_instances(batch_size)))
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or calls < 10:
        served.onnx.session.run(None, feeds)
        calls += 1
    return calls * batch_size / elapsed


class _Answers:
    """Checks every answer against the model's own predictions for the request's rows."""

    def __init__(self, served: ServedModel, instances: list[dict[str, object]], protocol: str) -> None:
        labels, probabilities = served.score(served.frame(instances))
        self.protocol = protocol
        self.version = served.version
        self.classes = served.manifest.classes
        self.labels = labels
        self.probabilities = probabilities

    def check(self, status: int, body: bytes) -> None:
        if status != 200:
            raise DriftwardenError(f"serving answered {status} during the benchmark: {body[:200]!r}")
        answer = orjson.loads(body)
        model = answer["model_id" if self.protocol == "v1" else "model_name"]
        if model != MODEL_ID or answer["model_version"] != self.version:
            raise DriftwardenError(f"answered by {model} v{answer['model_version']}")
        if self.protocol == "v1":
            predictions = answer["predictions"]
            labels, ids = [p["label"] for p in predictions], [p["event_id"] for p in predictions]
            scores = np.array([[p["scores"][c] for c in self.classes] for p in predictions])
        else:
            outputs = {output["name"]: output["data"] for output in answer["outputs"]}
            labels, ids = outputs["label"], outputs["event_id"]
            scores = np.array(outputs["scores"]).reshape(len(labels), len(self.classes))
        if labels != self.labels or set(map(type, ids)) != {str}:
            raise DriftwardenError("serving answered other labels than the model predicts for these rows")
        if not np.allclose(scores, self.probabilities, rtol=0, atol=1e-6):
            raise DriftwardenError("serving answered other scores than the model predicts for these rows")


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    """Send one prebuilt HTTP/1.1 request on a kept-alive connection; the answer's status and body."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
    if length is None:
        raise DriftwardenError(f"an answer without Content-Length: {head!r}")
    return int(head[9:12]), await reader.readexactly(int(length.group(1)))


async def _load(
    port: int, instances: list[dict[str, object]], requests: int, concurrency: int, answers: _Answers, server_pid: int
) -> tuple[float, float, float, float, float]:
    """Rows/s, p50 and p99 latency (ms), and the server's and this client's CPU µs per request, of
    ``requests`` requests of ``instances`` from ``concurrency`` kept-alive connections, in ``answers.protocol``.

    The client is lean (raw asyncio streams, the request's bytes built once, the answers kept and checked
    once the timed run is over) so that it takes as little of the cores it shares with the server as it
    can, and sends its next request as soon as an answer is in; every answer is still checked (all are
    kept until then: requests times an answer's size of memory)."""
    body = orjson.dumps({"instances": instances} if answers.protocol == "v1" else infer_body(instances))
    request = (f"POST {PATHS[answers.protocol]} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip
    latencies: list[float] = []
    exchanged: list[tuple[int, bytes]] = []  # (status, body) of each answer, checked after the run
    remaining = requests

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            exchanged.append(await _exchange(reader, writer, request))
            latencies.append(time.perf_counter() - started)

    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]
    try:
        for reader, writer in connections:  # warm-up: every connection open and answered once
            answers.check(*await _exchange(reader, writer, request))
        server_cpu, client_cpu = _cpu_seconds(server_pid), time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(client(reader, writer) for reader, writer in connections))
        elapsed = time.perf_counter() - started
        server_cpu, client_cpu = _cpu_seconds(server_pid) - server_cpu, time.process_time() - client_cpu
    finally:
        for _, writer in connections:
            writer.close()
    for status, answer in exchanged:
        answers.check(status, answer)
    ms = np.array(latencies) * 1000
    p50, p99 = float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
    return requests * len(instances) / elapsed, p50, p99, server_cpu / requests * 1e6, client_cpu / requests * 1e6


def _cpu_seconds(pid: int) -> float:
    """CPU time process ``pid``'s threads have used so far, in nanoseconds from ``/proc/<pid>/task/*/schedstat``.

    Not ``/proc/<pid>/stat``'s utime and stime: they count 10 ms ticks, which a short run (the CI smoke test's
    20 requests, ~150 µs each) may not reach, reading 0. A thread that ended before the second read drops out
    of the difference: the server's threads (its event loop, onnxruntime's pool) live as long as it does.
    """
    tasks = Path(f"/proc/{pid}/task").glob("*/schedstat")
    return sum(int(stat.read_text().split()[0]) for stat in tasks) / 1e9


def run_serving_benchmark(
    batch_sizes: list[int], requests: int, concurrency: int, protocols: list[str]
) -> list[ServingResult]:
    """Each batch size in each protocol (in the order given), the same requests and clients."""
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        with EmbeddedBroker(work / "broker.log") as broker:
            settings = broker.settings.model_copy(update={"registry_dir": work / "registry", "state_dir": work})
            data = [
                e | {"model_id": MODEL_ID}
                for chunk in generate(Scenario(n_events=3_000))
                for e in chunk.training_examples()
            ]
            registry = ModelRegistry(settings.registry_dir)
            bootstrap(registry, MODEL_ID, data, TrainerConfig())
            models = ActiveModels(registry)
            models.load_champions()
            served = models.get(MODEL_ID)
            assert served is not None, "the bootstrapped model is the champion"
            port = free_port()
            server = spawn(["serve", "--port", str(port)], settings, work / "serving.log")
            try:
                asyncio.run(wait_until_ready(f"http://127.0.0.1:{port}", timeout_s=60, process=server))
                results = []
                for size in batch_sizes:
                    instances, ceiling = _instances(size), onnxruntime_ceiling(served, size)
                    for protocol in protocols:
                        answers = _Answers(served, instances, protocol)
                        rate, p50, p99, server_us, client_us = asyncio.run(
                            _load(port, instances, requests, concurrency, answers, server.pid)
                        )
                        results.append(ServingResult(protocol, size, requests, rate, p50, p99, ceiling, server_us,
                                                     client_us))  # fmt: skip
                return results
            finally:
                terminate(server)
