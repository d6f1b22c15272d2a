"""``driftwarden bench serving``: predictions/s and latency of the ONNX server over real HTTP.

Starts its own embedded broker (serving writes every prediction back to it, as in production) and a
``driftwarden serve`` process with a freshly trained model, then sends requests of each batch size
from ``concurrency`` concurrent clients and measures rows/s and per-request latency percentiles. The
ceiling beside each row: a bare onnxruntime loop (``session.run`` on the same model, the same rows
already as input columns, one call per request's rows) in the benchmark's own process, same run.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import orjson

from driftwarden.errors import DriftwardenError
from driftwarden.kafka.broker import EmbeddedBroker, free_port
from driftwarden.processes import spawn, terminate
from driftwarden.registry.store import ModelRegistry
from driftwarden.serving.models import ActiveModels, ServedModel
from driftwarden.serving.readiness import wait_until_ready
from driftwarden.trainer.model import TrainerConfig
from driftwarden.trainer.workflow import bootstrap
from driftwarden_load.scenarios import Scenario, generate

MODEL_ID = "bench-model"


@dataclass
class ServingResult:
    batch_size: int
    requests: int
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    ceiling_rows_per_s: float

    def as_row(self) -> str:
        cells = [f"{self.batch_size}", f"{self.requests:,}", f"{self.rows_per_s:,.0f}", f"{self.p50_ms:.1f}"]
        return "| " + " | ".join([*cells, f"{self.p99_ms:.1f}", f"{self.ceiling_rows_per_s:,.0f}"]) + " |"


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


async def _load(url: str, batch_size: int, requests: int, concurrency: int) -> tuple[float, float, float]:
    """Rows/s, p50 and p99 latency (ms) of ``requests`` requests of ``batch_size`` rows."""
    body = orjson.dumps({"instances": _instances(batch_size)})
    latencies: list[float] = []
    remaining = requests

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            async with session.post(f"{url}/v1/models/{MODEL_ID}/predict", data=body) as response:
                await response.read()
                if response.status != 200:
                    raise DriftwardenError(f"serving answered {response.status} during the benchmark")
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await client_warmup(session, url, body)
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return requests * batch_size / elapsed, float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


async def client_warmup(session: aiohttp.ClientSession, url: str, body: bytes) -> None:
    for _ in range(5):
        async with session.post(f"{url}/v1/models/{MODEL_ID}/predict", data=body) as response:
            await response.read()


def run_serving_benchmark(batch_sizes: list[int], requests: int, concurrency: int) -> list[ServingResult]:
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
                url = f"http://127.0.0.1:{port}"
                asyncio.run(wait_until_ready(url, timeout_s=60, process=server))
                results = []
                for size in batch_sizes:
                    rate, p50, p99 = asyncio.run(_load(url, size, requests, concurrency))
                    results.append(ServingResult(size, requests, rate, p50, p99, onnxruntime_ceiling(served, size)))
                return results
            finally:
                terminate(server)
