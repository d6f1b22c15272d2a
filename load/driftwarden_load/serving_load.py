"""Drive a scenario through the serving API, as client applications would, and send the true labels
later with the event ids serving returned. Measures what users see: accuracy per model version.

The served model answers; the scenario's ground truth says whether it was right.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from driftwarden.core.events import LABEL_BATCH_SCHEMA
from driftwarden.kafka.clients import client_options
from driftwarden.settings import Settings
from driftwarden_load.producer import envelope
from driftwarden_load.scenarios import Scenario, generate


@dataclass
class ServedStream:
    """What happened, request by request: (first event index, model version, correct answers, rows)."""

    requests: list[tuple[int, str, int, int]] = field(default_factory=list)
    labels: int = 0
    failed_requests: int = 0

    def accuracy(self, start: int, stop: int, version: str | None = None) -> float | None:
        """Share of correct answers to the requests that began in events ``[start, stop)``.

        >>> stream = ServedStream(requests=[(0, "1", 90, 100), (100, "1", 40, 100), (100, "2", 95, 100)])
        >>> stream.accuracy(0, 200), stream.accuracy(100, 200, version="2"), stream.accuracy(500, 600)
        (0.75, 0.95, None)
        >>> stream.versions()
        ['1', '2']
        """
        hits = rows = 0
        for index, served_version, correct, n in self.requests:
            if start <= index < stop and (version is None or served_version == version):
                hits, rows = hits + correct, rows + n
        return hits / rows if rows else None

    def versions(self) -> list[str]:
        return list(dict.fromkeys(version for _, version, _, _ in self.requests))

    def rows(self, start: int = 0, version: str | None = None) -> int:
        """Rows answered in requests that began at event ``start`` or later (by ``version`` if given).

        >>> ServedStream(requests=[(0, "1", 90, 100), (100, "2", 95, 100)]).rows(50, version="2")
        100
        """
        return sum(n for index, v, _, n in self.requests if index >= start and version in (None, v))


async def drive_serving(
    settings: Settings,
    scenario: Scenario,
    url: str,
    *,
    token: str | None = None,
    batch_size: int = 100,
    rate: float = 2_000.0,
    label_delay: int = 300,
    until: Callable[[ServedStream], bool] | None = None,
) -> ServedStream:
    """Send the scenario's feature rows to ``url`` (the serving base URL) at ``rate`` events/s, all of
    them, or (with ``until``) until ``until(stream)`` holds after a request."""
    stream = ServedStream()
    waiting: deque[dict[str, Any]] = deque()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=5)
    await producer.start()
    started = time.perf_counter()
    sent = 0
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            predict = f"{url}/v1/models/{scenario.model_id}/predict"
            for chunk in generate(scenario, chunk_size=batch_size):
                body = orjson.dumps({"instances": [{"features": e["features"]} for e in chunk.prediction_events()]})
                async with session.post(predict, data=body) as response:
                    if response.status != 200:
                        stream.failed_requests += 1
                        continue
                    answer = await response.json()
                truth = [str(label) for label in chunk.label.tolist()]
                predictions = answer["predictions"]
                correct = sum(p["label"] == t for p, t in zip(predictions, truth, strict=True))
                stream.requests.append((chunk.start, answer["model_version"], correct, len(predictions)))
                waiting.extend(
                    {"event_id": p["event_id"], "model_id": scenario.model_id, "ts": time.time(), "label": int(t)}
                    for p, t in zip(predictions, truth, strict=True)
                )
                while len(waiting) > label_delay:
                    due = [waiting.popleft() for _ in range(min(batch_size, len(waiting) - label_delay))]
                    await producer.send(settings.topics.labels, envelope(LABEL_BATCH_SCHEMA, scenario.model_id, due),
                                        key=scenario.model_id.encode())  # fmt: skip
                    stream.labels += len(due)
                sent += len(chunk)
                if until is not None and until(stream):
                    break
                ahead = sent / rate - (time.perf_counter() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        if waiting:
            await producer.send(settings.topics.labels, envelope(LABEL_BATCH_SCHEMA, scenario.model_id, list(waiting)),
                                key=scenario.model_id.encode())  # fmt: skip
            stream.labels += len(waiting)
        await producer.flush()
    finally:
        await producer.stop()
    return stream
