"""Broker outages: one state line when the broker becomes unreachable, one when it is back.

While the broker is down, aiokafka logs every failed connection attempt ("Unable connect to node with
id 1", "Unable to update metadata from [1]", ~59 lines per second for one service).
:func:`quiet_connection_errors` filters those lines out of every ``aiokafka`` logger and turns the first
one into a :class:`BrokerState` transition instead; :class:`BrokerProbe` asks the cluster for its metadata
every second, so the state also notices when the broker is back (and when it goes away while the
service is idle). A reminder with the number of suppressed lines is logged every ``remind_every_s``.

>>> state = BrokerState("example")
>>> state.reachable, state.describe()
(True, 'reachable')
>>> state.down("connection refused")
>>> state.reachable, state.describe().startswith("unreachable for")
(False, True)
>>> state.up()
>>> state.reachable
True
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from prometheus_client import Gauge

from driftwarden.kafka.clients import client_options
from driftwarden.settings import Settings

log = logging.getLogger(__name__)

REACHABLE = Gauge("driftwarden_broker_reachable", "1 while the broker answers, 0 while it does not.", ["service"])
# What aiokafka 0.14 logs per attempt while it cannot reach the cluster (client, fetcher, coordinator).
CONNECTION_ERRORS = (
    "Unable connect to",
    "Unable to update metadata",
    "Unable to request metadata",
    "NodeNotReadyError",
    "KafkaConnectionError",
    "Connect call failed",
    "GroupCoordinatorNotAvailable",
    "Marking the coordinator dead",
)


class BrokerState:
    """Whether the broker answers, logging each change once (and a reminder while it stays down)."""

    def __init__(self, service: str, remind_every_s: float = 30.0) -> None:
        self.service = service
        self.remind_every_s = remind_every_s
        self.reachable = True
        self.since = time.monotonic()
        self.suppressed = 0
        self._reminded = self.since
        REACHABLE.labels(service).set(1)

    def down(self, reason: str) -> None:
        """The broker did not answer (a failed connection, probe or write)."""
        now = time.monotonic()
        if self.reachable:
            self.reachable, self.since, self._reminded, self.suppressed = False, now, now, 0
            REACHABLE.labels(self.service).set(0)
            log.error("%s: the Kafka broker is UNREACHABLE (%s); retrying quietly", self.service, reason)
        elif now - self._reminded >= self.remind_every_s:
            self._reminded = now
            log.error("%s: the Kafka broker is still unreachable after %.0f s (%d connection errors; last: %s)",
                      self.service, now - self.since, self.suppressed, reason)  # fmt: skip

    def up(self) -> None:
        """The broker answered."""
        if not self.reachable:
            log.warning("%s: the Kafka broker is REACHABLE again after %.1f s (%d connection errors suppressed)",
                        self.service, time.monotonic() - self.since, self.suppressed)  # fmt: skip
            self.reachable, self.since = True, time.monotonic()
            REACHABLE.labels(self.service).set(1)

    def describe(self) -> str:
        if self.reachable:
            return "reachable"
        return f"unreachable for {time.monotonic() - self.since:.0f} s"


class ConnectionErrorFilter(logging.Filter):
    """Drops aiokafka's per-attempt connection errors, reporting them to a :class:`BrokerState`."""

    def __init__(self, state: BrokerState) -> None:
        super().__init__()
        self.state = state

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not any(marker in message for marker in CONNECTION_ERRORS):
            return True
        self.state.down(message)
        self.state.suppressed += 1
        return False


def quiet_connection_errors(state: BrokerState) -> ConnectionErrorFilter:
    """Install the filter on every ``aiokafka`` logger (filters do not apply to records of child loggers)."""
    connection_filter = ConnectionErrorFilter(state)
    import aiokafka.consumer.fetcher
    import aiokafka.consumer.group_coordinator
    import aiokafka.producer.sender  # noqa: F401  (their loggers must exist before the filter is installed)

    names = ["aiokafka", *(name for name in logging.root.manager.loggerDict if name.startswith("aiokafka."))]
    for name in names:
        logging.getLogger(name).addFilter(connection_filter)
    return connection_filter


class BrokerProbe:
    """Asks the cluster for its metadata every ``interval_s``; reports the answer to a :class:`BrokerState`."""

    def __init__(self, settings: Settings, state: BrokerState, interval_s: float = 1.0, timeout_s: float = 2.0) -> None:
        self.settings = settings
        self.state = state
        self.interval_s = interval_s
        self.timeout_s = timeout_s

    async def check(self, client: AIOKafkaClient) -> bool:
        try:
            if client.cluster.brokers():
                await asyncio.wait_for(client.fetch_all_metadata(), self.timeout_s)
            else:  # not connected yet (the broker was down when the probe started)
                await asyncio.wait_for(client.bootstrap(), self.timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            self.state.down(f"metadata request failed: {type(exc).__name__}: {exc}")
            return False
        self.state.up()
        return True

    async def run(self) -> None:
        """Until cancelled."""
        options = client_options(self.settings)
        client = AIOKafkaClient(**options, request_timeout_ms=int(self.timeout_s * 1000))
        try:
            while True:
                await self.check(client)
                await asyncio.sleep(self.interval_s)
        finally:
            await client.close()


def exit_if_stuck(app: Any, timeout_s: float) -> None:
    """Once the Faust ``app`` begins to shut down, end the process after ``timeout_s`` if it is still running.

    With the broker down, Faust's consumer thread waits 60 s to leave its group: SIGTERM would not be
    honoured in time. Nothing is lost by exiting: offsets are committed only after messages are handled."""

    async def arm(*_: Any, **__: Any) -> None:
        def expire() -> None:
            log.error("shutdown did not finish within %.0f s (is the broker down?); exiting now", timeout_s)
            logging.shutdown()
            os._exit(1)

        timer = threading.Timer(timeout_s, expire)
        timer.daemon = True
        timer.start()

    app.on_before_shutdown.connect(arm, weak=False)


def watch_broker(app: Any, settings: Settings, service: str, shutdown_timeout_s: float) -> BrokerState:
    """Everything a Faust worker needs for broker outages: state lines instead of aiokafka's flood, a probe
    that notices the broker coming back, and SIGTERM honoured within ``shutdown_timeout_s``."""
    state = BrokerState(service)
    quiet_connection_errors(state)
    app.task(BrokerProbe(settings, state).run)
    exit_if_stuck(app, shutdown_timeout_s)
    return state
