"""Every service's ``/metrics`` follows Prometheus' conventions, and a monitor worker exports only the
models of the partitions it owns: after a second worker joins, the first one's series of the revoked
partitions are gone and each model is counted by exactly one worker (real broker, two real workers)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.partitioner import murmur2
from helpers_integration import produce
from oncall_stack import poll
from prometheus_client.metrics_core import Metric

from driftwarden.bench.scrape import samples, scrape
from driftwarden.kafka.broker import free_port
from driftwarden.kafka.clients import ensure_topics
from driftwarden.monitor.status import wait_for_status
from driftwarden.processes import spawn, terminate_all
from driftwarden.settings import Settings
from driftwarden_load.scenarios import Scenario

pytestmark = pytest.mark.integration

#: Suffixes of a unit that is not a base unit (https://prometheus.io/docs/practices/naming/#base-units).
NOT_BASE_UNITS = re.compile(r"_(ms|milliseconds|microseconds|minutes|hours|percent|kilobytes|megabytes|kb|mb)(_|$)")
#: What a histogram measures must be in its name.
HISTOGRAM_UNITS = ("_seconds", "_bytes", "_rows")
#: Families of prometheus_client's default collectors.
DEFAULT_PREFIXES = ("python_", "process_")


def check_conventions(families: dict[str, Metric]) -> list[str]:
    """Every way the families break the naming conventions (empty when none)."""
    problems = []
    for name, family in families.items():
        if name.startswith(DEFAULT_PREFIXES):
            continue
        if not name.startswith("driftwarden_"):
            problems.append(f"{name}: not in the driftwarden_ namespace")
        if NOT_BASE_UNITS.search(name):
            problems.append(f"{name}: not a base unit")
        if family.type == "counter":
            bad = {s.name for s in family.samples} - {f"{name}_total", f"{name}_created"}
            problems += [f"{name}: counter sample {b} does not end in _total" for b in sorted(bad)]
        elif name.endswith("_total"):
            problems.append(f"{name}: a {family.type} named like a counter")
        if family.type == "histogram" and not name.endswith(HISTOGRAM_UNITS):
            problems.append(f"{name}: histogram without its unit in the name")
        if family.type not in ("counter", "gauge", "histogram"):
            problems.append(f"{name}: unexpected type {family.type}")
    return problems


def types(families: dict[str, Metric]) -> dict[str, str]:
    return {name: family.type for name, family in families.items() if name.startswith("driftwarden_")}


def models_of(families: dict[str, Metric]) -> set[str]:
    """Models with any series at all in a worker's metrics."""
    return {s.labels["model_id"] for f in families.values() for s in f.samples if s.labels.get("model_id")}


@pytest.fixture
def isolated(kafka: Settings, tmp_path: Path) -> Settings:
    """Topics and a monitor group of their own on the session broker: the workers here rebalance freely."""
    run = uuid.uuid4().hex[:8]
    settings = kafka.model_copy(update={"topic_prefix": f"dwmetrics-{run}.", "monitor_group": f"dwmetrics-{run}",
                                        "state_dir": tmp_path, "registry_dir": tmp_path / "registry"})  # fmt: skip
    asyncio.run(ensure_topics(settings, settings.topics.specs(settings.partitions)))
    return settings


class Services:
    def __init__(self, settings: Settings, work: Path) -> None:
        self.settings, self.work = settings, work
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> int:
        port = free_port()
        option = "--port" if name == "serve" else "--metrics-port"
        process = spawn([name, option, str(port), *args], self.settings, self.work / f"{name}-{port}.log")
        self.processes.append(process)
        poll(lambda: process.poll() is not None or _answers(port), 60, f"{name} serving /metrics")
        assert process.poll() is None, (self.work / f"{name}-{port}.log").read_text()[-2000:]
        return port


def _answers(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True


@pytest.fixture
def services(isolated: Settings, tmp_path: Path) -> Iterator[Services]:
    started = Services(isolated, tmp_path)
    yield started
    terminate_all(started.processes)


def test_every_service_exports_conventional_names_types_and_units(isolated: Settings, services: Services):
    config = services.work / "notify.toml"
    config.write_text(f'group = "{isolated.topic_prefix}notify"\n[[receivers]]\nname = "am"\ntype = "alertmanager"\n'
                      f'url = "http://127.0.0.1:{free_port()}"\n')  # fmt: skip
    ports = {
        "monitor": services.start("monitor"),
        "serving": services.start("serve"),
        "trainer": services.start("trainer"),
        "notify": services.start("notify", "--config", str(config)),
    }
    scraped = {name: scrape(port) for name, port in ports.items()}
    for name, families in scraped.items():
        assert check_conventions(families) == [], name
    assert types(scraped["monitor"]) | {
        "driftwarden_events_processed": "counter",
        "driftwarden_dead_letters": "counter",
        "driftwarden_alerts": "counter",
        "driftwarden_alert_firing": "gauge",
        "driftwarden_drift_psi": "gauge",
        "driftwarden_drift_p_value": "gauge",
        "driftwarden_accuracy_ratio": "gauge",
        "driftwarden_estimated_accuracy_ratio": "gauge",
        "driftwarden_prediction_latency_p99_seconds": "gauge",
        "driftwarden_batch_seconds": "histogram",
    } == types(scraped["monitor"])
    assert {"driftwarden_serving_requests": "counter", "driftwarden_serving_latency_seconds": "histogram"}.items() <= (
        types(scraped["serving"]).items()
    )
    assert {"driftwarden_trainer_runs": "counter", "driftwarden_trainer_run_seconds": "histogram"}.items() <= (
        types(scraped["trainer"]).items()
    )
    assert {"driftwarden_notify_deliveries": "counter", "driftwarden_notify_open_alerts": "gauge"}.items() <= (
        types(scraped["notify"]).items()
    )


def test_a_revoked_partitions_series_leave_the_old_worker_and_each_model_is_counted_once(
    isolated: Settings, services: Services
):
    first = services.start("monitor")
    models = models_on_every_partition(isolated.partitions)
    for model_id in models:  # the reference (5,000) and one drifted window: statistics and open alerts
        produce(isolated, Scenario(name="abrupt-shift", n_events=6_000, onset=5_000, model_id=model_id))
    for model_id in models:
        asyncio.run(wait_for_status(isolated, model_id, lambda s: s.events_processed == 6_000, 120))
    alone = scrape(first)
    assert models_of(alone) == set(models)
    assert samples(alone, "driftwarden_alert_firing", model_id=models[0], kind="data_drift", subject="num_00")
    assert len(lag_partitions(alone, isolated)) == isolated.partitions

    second = services.start("monitor")
    poll(lambda: len(lag_partitions(scrape(first), isolated)) < isolated.partitions, 120, "the second worker's share")
    # After the rebalance every model gets a little more traffic, so that its new owner exports it (a day
    # after the first stream: an event time in the future would be dead-lettered by the time screen).
    for model_id in models:
        produce(isolated, Scenario(name="stable", n_events=100, seed=3, model_id=model_id, start_ts=1_767_312_000.0))

    def settled() -> tuple[set[str], set[str]] | None:
        on_first, on_second = models_of(scrape(first)), models_of(scrape(second))
        return (on_first, on_second) if on_first | on_second == set(models) and on_first and on_second else None

    on_first, on_second = poll(settled, 120, "both workers exporting models")
    assert on_first.isdisjoint(on_second)  # a revoked partition's models left the first worker: no double count
    first_now, second_now = scrape(first), scrape(second)
    for families, owned in ((first_now, on_first), (second_now, on_second)):
        for model_id in owned:
            (count,) = samples(families, "driftwarden_events_processed_total", model_id=model_id).values()
            # What this worker processed since it got the partition: the eager rebalance revokes every
            # partition, so a worker that kept one counts anew from its checkpoint too.
            assert count in (100, 6_100)
    partitions = [lag_partitions(families, isolated) for families in (first_now, second_now)]
    assert partitions[0].isdisjoint(partitions[1]) and partitions[0] and partitions[1]


def lag_partitions(families: dict[str, Metric], settings: Settings) -> set[str]:
    """The input partitions whose consumer lag a worker exports."""
    lag = samples(families, "driftwarden_consumer_lag", topic=settings.topics.predictions)
    return {dict(labels)["partition"] for labels in lag}


def models_on_every_partition(partitions: int) -> list[str]:
    """Model ids (message keys) that land on every partition, by the producers' default partitioner."""
    models: dict[int, str] = {}
    while len(models) < partitions:
        model_id = f"rebalance-{uuid.uuid4().hex[:8]}"
        models.setdefault((murmur2(model_id.encode()) & 0x7FFFFFFF) % partitions, model_id)
    return list(models.values())
