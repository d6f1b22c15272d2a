"""Supervised serving tasks and the broker state lines (no Kafka: plain asyncio and logging)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from driftwarden.kafka.outages import BrokerState, quiet_connection_errors
from driftwarden.serving.supervisor import RESTARTS, Supervisor


def test_a_failing_task_is_restarted_with_backoff_and_reported_until_it_runs_again(caplog: pytest.LogCaptureFixture):
    attempts: list[int] = []

    async def flaky(started: Callable[[], None]) -> None:
        attempts.append(len(attempts))
        if len(attempts) < 3:
            raise RuntimeError(f"boom {len(attempts)}")
        started()
        await asyncio.Event().wait()

    async def scenario() -> tuple[dict[str, str], dict[str, str]]:
        supervisor = Supervisor(first_backoff_s=0.1, max_backoff_s=1.0)
        supervisor.start("flaky", flaky)
        await asyncio.sleep(0.01)
        failing = supervisor.problems()
        while len(attempts) < 3:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)
        running = supervisor.problems()
        await supervisor.stop(1.0)
        return failing, running

    before = RESTARTS.labels("flaky")._value.get()
    failing, running = asyncio.run(scenario())
    assert failing["flaky"].startswith("failed (1x): RuntimeError: boom 1; restarting in 0.1 s")
    assert running == {}
    assert RESTARTS.labels("flaky")._value.get() - before == 2
    restarts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("flaky failed (")]
    assert restarts == [
        "flaky failed (1x): RuntimeError: boom 1; restarting in 0.1 s",
        "flaky failed (2x): RuntimeError: boom 2; restarting in 0.2 s",  # the backoff doubles
    ]


def test_a_task_that_returns_is_a_failure_too():
    async def quits(started: Callable[[], None]) -> None:
        started()

    async def scenario() -> dict[str, str]:
        supervisor = Supervisor(first_backoff_s=10)
        supervisor.start("quits", quits)
        await asyncio.sleep(0.05)
        problems = supervisor.problems()
        await supervisor.stop(1.0)
        return problems

    assert "stopped unexpectedly" in asyncio.run(scenario())["quits"]


def test_connection_errors_become_one_state_line_and_a_reminder(caplog: pytest.LogCaptureFixture):
    state = BrokerState("unit", remind_every_s=0.0)
    connection_filter = quiet_connection_errors(state)
    aiokafka_log = logging.getLogger("aiokafka.consumer.fetcher")
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(50):
                aiokafka_log.error("Failed fetch messages from 1: NodeNotReadyError: not ready")
            aiokafka_log.error("Something else went wrong")
            state.up()
    finally:
        for name in logging.root.manager.loggerDict:
            if name.startswith("aiokafka"):
                logging.getLogger(name).removeFilter(connection_filter)
    messages = [record.getMessage() for record in caplog.records]
    assert not [m for m in messages if m.startswith("Failed fetch")]
    assert "Something else went wrong" in messages
    assert sum("UNREACHABLE" in m for m in messages) == 1
    assert any("still unreachable" in m for m in messages)  # reminders (every 0 s here)
    assert any("REACHABLE again" in m and "50 connection errors suppressed" in m for m in messages)
