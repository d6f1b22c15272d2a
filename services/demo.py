"""``driftwarden demo``: the whole system on this machine, end to end, in about a minute.

Starts the embedded broker and a monitor worker, produces an ``abrupt-shift`` stream (two features
move by 1σ a third of the way in) with some malformed messages, prints alerts as they fire, then
prints a summary counted from the topics and stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import typer

from driftwarden.config import Settings
from driftwarden.core.events import Alert, DeadLetter, format_alert
from driftwarden.errors import DriftwardenError
from driftwarden.kafka.broker import EmbeddedBroker, free_port
from driftwarden.kafka.reader import read_topic
from driftwarden.load.producer import ProduceReport, ScenarioProducer
from driftwarden.load.scenarios import Scenario, generate
from driftwarden.monitor.status import probe_monitor, records_for, wait_for_status
from driftwarden.processes import spawn, terminate

MODEL_ID = "demo-model"


class DemoFailedError(DriftwardenError):
    """The demo ran but the system did not do what it should (the summary says what)."""


class Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        typer.echo(f"[{time.monotonic() - self.started:5.1f}s] {text}")


def run_demo(work_dir: Path, n_events: int, rate: float) -> None:
    clock = Clock()
    typer.echo("driftwarden demo: broker, monitor and a drifting load, all on 127.0.0.1")
    broker = EmbeddedBroker(work_dir / "broker.log")
    broker.start()
    clock.say(f"broker (Tansu, in memory) ready at {broker.bootstrap}; log {broker.log_path}")
    settings = broker.settings.model_copy(update={"state_dir": work_dir / "state"})
    metrics_port = free_port()
    monitor = spawn(["monitor", "--metrics-port", str(metrics_port)], settings, work_dir / "monitor.log")
    clock.say(f"monitor worker started (pid {monitor.pid}); metrics http://127.0.0.1:{metrics_port}/metrics")
    try:
        asyncio.run(_run(settings, clock, n_events, rate))
    finally:
        code = terminate(monitor)
        broker.stop()
        clock.say(f"stopped the monitor (exit code {code}) and the broker; logs in {work_dir}/")


async def _run(settings: Settings, clock: Clock, n_events: int, rate: float) -> None:
    await probe_monitor(settings, timeout_s=60)
    clock.say("monitor ready (it has processed a probe event)")
    scenario = Scenario(
        name="abrupt-shift", n_events=n_events, onset=n_events // 3, model_id=MODEL_ID, start_ts=time.time(),
        events_per_second=rate,
    )  # fmt: skip
    malformed_every = max(n_events // 10, 1)
    clock.say(
        f"producing {n_events:,} predictions at {rate:,.0f}/s: {', '.join(scenario.drift_features)} shift "
        f"by {scenario.magnitude:g}σ from event {scenario.onset:,}; "
        f"a malformed message every {malformed_every:,}"
    )
    tail = asyncio.create_task(_print_alerts(settings, clock))
    producer = ScenarioProducer(settings, scenario, batch_size=100, rate=rate, malformed_every=malformed_every)
    report = await producer.run()
    clock.say(f"produced everything in {report.seconds:.1f} s; waiting for the monitor to catch up")
    total = report.predictions + report.malformed
    await wait_for_status(
        settings, MODEL_ID, lambda s: s.events_processed + s.events_dead_lettered >= total, timeout_s=60
    )
    await asyncio.sleep(0.5)  # let the tail print the last alert
    tail.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await tail
    await _summary(settings, scenario, report)


def _kinds(pairs: set[tuple[str, str]] | frozenset[tuple[str, str]]) -> str:
    return ", ".join(f"{kind} on {subject}" for kind, subject in sorted(pairs))


async def _print_alerts(settings: Settings, clock: Clock) -> None:
    async for record in read_topic(settings, settings.topics.alerts, follow=True):
        if record.key == MODEL_ID.encode():
            clock.say("ALERT " + format_alert(Alert.model_validate_json(record.value or b"")))


async def _summary(settings: Settings, scenario: Scenario, report: ProduceReport) -> None:
    status = await wait_for_status(settings, MODEL_ID, lambda s: True, timeout_s=10)
    alerts = [Alert.model_validate_json(v) for v in await records_for(settings, settings.topics.alerts, MODEL_ID)]
    dead = [
        DeadLetter.model_validate_json(v) for v in await records_for(settings, settings.topics.dead_letters, MODEL_ID)
    ]
    truth = scenario.ground_truth()
    index = {event_id: chunk.start + i for chunk in generate(scenario) for i, event_id in enumerate(chunk.event_ids)}
    delays = ", ".join(
        f"{a.subject} after {index[a.trigger_event_id] - scenario.onset:,} events"
        for a in alerts
        if a.kind == "data_drift" and a.trigger_event_id in index
    )
    accounted = status.events_processed + len(dead) == report.predictions + report.malformed
    found = {(a.kind, a.subject) for a in alerts if a.state == "firing"}
    right_alerts = found == truth.expected_alerts
    rows = [
        ("events produced", f"{report.predictions:,} (+{report.malformed} malformed messages)"),
        ("events processed", f"{status.events_processed:,}"),
        ("dead-lettered", f"{len(dead)} ({dead[0].reason})" if dead else "0"),
        ("alerts", f"{len(alerts)}: {_kinds(found) or 'none'}"),
        ("expected", _kinds(truth.expected_alerts)),
        ("detection delay", delays or "-"),
        ("accounting", "produced = processed + dead-lettered" if accounted else "MISMATCH"),
    ]
    typer.echo("\nSummary (counted from the topics)")
    for name, value in rows:
        typer.echo(f"  {name:<20} {value}")
    if not (accounted and right_alerts):
        raise DemoFailedError("the demo did not find what it should; see the summary above and the logs")
    typer.echo("  result               OK")
