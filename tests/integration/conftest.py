"""One real broker and one real monitor worker per test session (per pytest worker under xdist: `make test`
runs two); tests keep apart by model_id.

With DRIFTWARDEN_KAFKA_BOOTSTRAP set, the tests run against that cluster instead of the embedded
broker, under a topic prefix of their own.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest
from helpers_integration import Worker

from driftwarden.kafka.broker import EmbeddedBroker, free_port
from driftwarden.kafka.clients import ensure_topics
from driftwarden.monitor.status import probe_monitor
from driftwarden.processes import spawn, terminate
from driftwarden.settings import Settings

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run last in the session: Playwright's sync API keeps an event loop running in the
    main thread from its first use until the session ends, and ``asyncio.run()`` (which many tests and
    fixtures call) refuses to run beside it."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)  # a stable sort


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at a running broker with the project's topics created."""
    run_id = uuid.uuid4().hex[:8]
    base = Settings(topic_prefix=f"dwtest-{run_id}.", monitor_group=f"dwtest-{run_id}-monitor")
    if os.environ.get("DRIFTWARDEN_KAFKA_BOOTSTRAP"):
        asyncio.run(ensure_topics(base, base.topics.specs(base.partitions)))
        yield base
        return
    broker = EmbeddedBroker(tmp_path_factory.mktemp("broker") / "broker.log", settings=base)
    broker.start()
    try:
        yield broker.settings
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def monitor_worker(kafka: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """A real ``driftwarden monitor`` process, ready (it has processed a probe event)."""
    state = tmp_path_factory.mktemp("monitor")
    settings = kafka.model_copy(update={"state_dir": state})
    port = free_port()
    worker = Worker(spawn(["monitor", "--metrics-port", str(port)], settings, state / "monitor.log"), port,
                    state / "monitor.log")  # fmt: skip
    try:
        asyncio.run(probe_monitor(kafka, timeout_s=60))
    except BaseException:
        terminate(worker.process)
        raise RuntimeError(f"monitor worker did not become ready:\n{worker.log_tail()}") from None
    yield worker
    terminate(worker.process)
