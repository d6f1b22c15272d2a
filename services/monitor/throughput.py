"""``driftwarden bench throughput``: the monitor against the transport and framework ceilings.

In one run, on one embedded broker and the same pre-produced events (the stable 20-feature stream)
for each message size (1 event per message, or batch envelopes):

* (a) raw aiokafka consume + orjson decode: the transport ceiling;
* (b) an empty Faust agent reading in batches like the monitor: the framework ceiling;
* (c) the monitor worker with the default detector set.

Rates are events/s. The monitor's rate comes from its status topic (cumulative processed count and
time), measured from its first to its last report, so start-up and group joins are excluded.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from driftwarden.config import Settings
from driftwarden.errors import DriftwardenError
from driftwarden.kafka.broker import EmbeddedBroker, free_port
from driftwarden.kafka.clients import client_options, ensure_topics
from driftwarden.load.producer import ScenarioProducer
from driftwarden.load.scenarios import Scenario
from driftwarden.monitor.status import latest_status
from driftwarden.processes import spawn, terminate


@dataclass
class ThroughputResult:
    batch_size: int
    events: int
    raw: float
    empty_faust: float
    monitor: float

    def as_row(self) -> str:
        rates = [self.raw, self.empty_faust, self.monitor]
        cells = [f"{self.batch_size}", f"{self.events:,}", *(f"{rate:,.0f}" for rate in rates)]
        cells += [f"{self.monitor / self.raw:.2f}", f"{self.monitor / self.empty_faust:.2f}"]
        return "| " + " | ".join(cells) + " |"


async def _raw_rate(settings: Settings, messages: int) -> float:
    """Read every message of the predictions topic from the start and decode it; events/s."""
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False,
                                max_partition_fetch_bytes=8 * 1024 * 1024)  # fmt: skip
    await consumer.start()
    try:
        topic = settings.topics.predictions
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen = events = 0
        started = time.perf_counter()
        while seen < messages:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                for record in records:
                    document = orjson.loads(record.value or b"")
                    events += len(document["events"]) if "events" in document else 1
                seen += len(records)
        return events / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def _empty_faust_rate(settings: Settings, messages: int, events: int, log: Path) -> float:
    env_settings = settings.model_copy(update={"state_dir": log.parent / "empty-agent"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")} | env_settings.to_env()
    result = subprocess.run(
        [sys.executable, "-m", "driftwarden.monitor.empty_agent", settings.topics.predictions, str(messages)],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    log.write_text(result.stdout + result.stderr)
    # Faust's worker redirects stdout into its log, so the line may come on either stream.
    found = re.search(r"first=([\d.]+) last=([\d.]+)", result.stdout + result.stderr)
    if found is None:
        raise DriftwardenError(f"the empty Faust agent did not finish: {result.stderr[-300:]}")
    return events / max(float(found.group(2)) - float(found.group(1)), 1e-9)


def _monitor_rate(settings: Settings, model_id: str, events: int, work: Path) -> float:
    monitor = spawn(["monitor", "--metrics-port", str(free_port())], settings, work / "monitor.log")
    try:
        first = last = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            status = asyncio.run(latest_status(settings, model_id))
            if status is not None:
                first = first or status
                last = status
                if status.events_processed >= events:
                    break
            time.sleep(0.5)
        if first is None or last is None or last.events_processed < events:
            raise DriftwardenError(f"the monitor did not process the events; see {work / 'monitor.log'}")
        if last.ts <= first.ts:  # everything fitted between two reports: a lower bound
            return float(events)
        return (last.events_processed - first.events_processed) / (last.ts - first.ts)
    finally:
        terminate(monitor)


def run_throughput_benchmark(batch_sizes: list[int], events: int, single_events: int) -> list[ThroughputResult]:
    results = []
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        with EmbeddedBroker(work / "broker.log") as broker:
            for batch_size in batch_sizes:
                n = single_events if batch_size == 1 else events
                prefix = f"bench{batch_size}."
                settings = broker.settings.model_copy(update={
                    "topic_prefix": prefix, "monitor_group": f"bench{batch_size}-monitor", "state_dir": work / prefix,
                    "partitions": 1,
                })  # fmt: skip
                asyncio.run(ensure_topics(settings, settings.topics.specs(settings.partitions)))
                scenario = Scenario(name="stable", n_events=n, model_id=f"bench-{batch_size}")
                report = asyncio.run(
                    ScenarioProducer(settings, scenario, batch_size=batch_size, label_fraction=0.0).run()
                )
                raw = asyncio.run(_raw_rate(settings, report.prediction_messages))
                empty = _empty_faust_rate(settings, report.prediction_messages, n, work / f"empty-{batch_size}.log")
                monitor = _monitor_rate(settings, scenario.model_id, n, work)
                results.append(ThroughputResult(batch_size, n, raw, empty, monitor))
    return results
