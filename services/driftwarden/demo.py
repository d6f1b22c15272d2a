"""``driftwarden demo``: the whole system on this machine, end to end, in about a minute.

Starts the embedded broker, a monitor, a trainer and an ONNX server (v1 of a model bootstrapped on
synthetic data), then runs two streams at once:

* **data drift**: a model server's prediction log where two features move by 1σ a third of the way
  in, with some malformed messages mixed in;
* **the loop**: clients send requests to the ONNX server while the label/feature relation changes
  (concept drift) a third of the way in; the monitor sees accuracy fall, asks for a retrain, the
  trainer promotes v2 and the server hot-swaps to it.

Alerts and model verdicts are printed as they happen, and the live page (``driftwarden ui``) shows
them; a summary counted from the topics follows. The page keeps serving until Ctrl-C (``wait=False``,
``--no-wait``: stop at once); then every process the demo started is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Set as AbstractSet
from pathlib import Path

import typer

from driftwarden.core.events import Alert, DeadLetter, ModelPublished, RetrainCommand, format_alert
from driftwarden.errors import DriftwardenError
from driftwarden.kafka.broker import EmbeddedBroker, free_port
from driftwarden.kafka.reader import read_topic
from driftwarden.monitor.status import probe_monitor, records_for, wait_for_status
from driftwarden.processes import spawn, terminate_all
from driftwarden.registry.store import ModelRegistry
from driftwarden.serving.readiness import wait_until_ready
from driftwarden.settings import Settings
from driftwarden.trainer.model import TrainerConfig
from driftwarden.trainer.workflow import bootstrap
from driftwarden_load.producer import ProduceReport, ScenarioProducer
from driftwarden_load.scenarios import Scenario, generate
from driftwarden_load.serving_load import ServedStream, drive_serving

MODEL_ID = "demo-model"
LOOP_MODEL_ID = "demo-served"


class DemoFailedError(DriftwardenError):
    """The demo ran but the system did not do what it should (the summary says what)."""


class Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        typer.echo(f"[{time.monotonic() - self.started:5.1f}s] {text}")


def run_demo(work_dir: Path, n_events: int, rate: float, loop_events: int = 36_000, wait: bool = False) -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):  # `kill`, `timeout`, a service manager, Ctrl-C: stop everything
        signal.signal(signum, _interrupt)
    clock = Clock()
    typer.echo("driftwarden demo: broker, monitor, trainer, ONNX serving and drifting load, all on 127.0.0.1")
    broker = EmbeddedBroker(work_dir / "broker.log")
    broker.start()  # (stops what it started if interrupted)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:  # from here on, whenever it is interrupted (set-up included), what was started is stopped
        clock.say(f"broker (Tansu, in memory) ready at {broker.bootstrap}; log {broker.log_path}")
        settings = broker.settings.model_copy(
            update={"state_dir": work_dir / "state", "registry_dir": work_dir / "registry"}
        )
        registry = ModelRegistry(settings.registry_dir)
        seed_data = [e | {"model_id": LOOP_MODEL_ID} for chunk in generate(Scenario(n_events=4_000, seed=100))
                     for e in chunk.training_examples()]  # fmt: skip
        v1 = bootstrap(registry, LOOP_MODEL_ID, seed_data, TrainerConfig())
        _stop_if_asked()
        clock.say(f"registered {LOOP_MODEL_ID} v{v1.model_version} (holdout accuracy {v1.metrics['accuracy']:.3f})")
        serving_port, ui_port = free_port(), free_port()
        for name, args in (
            ("monitor", ["monitor", "--metrics-port", str(free_port())]),
            ("trainer", ["trainer", "--metrics-port", str(free_port())]),
            ("serving", ["serve", "--port", str(serving_port)]),
            ("ui", ["ui", "--port", str(ui_port)]),
        ):
            processes[name] = spawn(args, settings, work_dir / f"{name}.log")
        _stop_if_asked()
        clock.say(
            "started " + ", ".join(f"{name} (pid {p.pid})" for name, p in processes.items())
            + f"; serving http://127.0.0.1:{serving_port}"
        )  # fmt: skip
        page = f"http://127.0.0.1:{ui_port}/"
        clock.say(f"LIVE PAGE {page} (drift per feature, alerts, accuracy, versions)")
        try:
            asyncio.run(_run(settings, clock, n_events, rate, loop_events, f"http://127.0.0.1:{serving_port}"))
            _stop_if_asked()
        except DemoFailedError:
            if wait:
                _serve_until_interrupted(clock, page)
            raise
        if wait:
            _serve_until_interrupted(clock, page)
    finally:
        codes = dict(zip(processes, terminate_all(list(processes.values())), strict=True))
        broker.stop()
        stopped = ", ".join(f"{name} (exit code {code})" for name, code in codes.items())
        clock.say(f"stopped {stopped + ' and ' if stopped else ''}the broker; logs in {work_dir}/")


#: Set by SIGTERM or SIGINT: a KeyboardInterrupt raised while a finalizer runs (an asyncio transport's ``__del__``
#: during garbage collection) is printed and dropped by Python, and the demo then went on to serve until interrupted
#: again; each step of the set-up and the serving loop look here too.
_STOP = threading.Event()


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C: the demo's processes and broker are stopped on the way out (the default would leave them)."""
    _STOP.set()
    raise KeyboardInterrupt


def _stop_if_asked() -> None:
    """Raise the interrupt a finalizer swallowed, if one came."""
    if _STOP.is_set():
        raise KeyboardInterrupt


def _serve_until_interrupted(clock: Clock, page: str) -> None:
    clock.say(f"the live page keeps serving at {page}; press Ctrl-C to stop everything")
    with contextlib.suppress(KeyboardInterrupt):
        while not _STOP.wait(1.0):
            pass


async def _run(settings: Settings, clock: Clock, n_events: int, rate: float, loop_events: int, url: str) -> None:
    await probe_monitor(settings, timeout_s=60)
    await wait_until_ready(url, timeout_s=60)
    clock.say("monitor and serving ready")
    drift = Scenario(
        name="abrupt-shift", n_events=n_events, onset=n_events // 3, model_id=MODEL_ID, start_ts=time.time(),
        events_per_second=rate,
    )  # fmt: skip
    # At least ``loop_events`` requests, then on until a promoted version answered a quarter as many rows
    # after the change (a loaded machine retrains later, not worse); at most three times as many.
    loop = Scenario(name="concept-drift", n_events=3 * loop_events, onset=loop_events // 3, model_id=LOOP_MODEL_ID,
                    seed=101)  # fmt: skip
    malformed_every = max(n_events // 10, 1)
    clock.say(
        f"{MODEL_ID}: producing {n_events:,} logged predictions at {rate:,.0f}/s; "
        f"{', '.join(drift.drift_features)} shift by {drift.magnitude:g}σ from event {drift.onset:,}; "
        f"a malformed message every {malformed_every:,}"
    )
    clock.say(
        f"{LOOP_MODEL_ID}: clients send {loop_events:,} requests to serving at 2,500/s (more until a retrained "
        f"version has answered {loop_events // 4:,}); the label/feature relation changes from event "
        f"{loop.onset:,}; labels arrive 300 events late"
    )
    tails = [asyncio.create_task(_print_alerts(settings, clock)), asyncio.create_task(_print_models(settings, clock))]
    producer = ScenarioProducer(settings, drift, batch_size=100, rate=rate, malformed_every=malformed_every)

    def enough(served: ServedStream) -> bool:
        retrained = served.rows(loop.onset) - served.rows(loop.onset, version="1")
        return served.rows() >= loop_events and retrained >= loop_events // 4

    report, served = await asyncio.gather(
        producer.run(), drive_serving(settings, loop, url, rate=2_500, batch_size=100, label_delay=300, until=enough)
    )
    clock.say("all traffic sent; waiting for the monitor to catch up")
    total = report.predictions + report.malformed
    await wait_for_status(settings, MODEL_ID, lambda s: s.events_processed + s.events_dead_lettered >= total, 60)
    await asyncio.sleep(1.0)  # let the tails print the last lines
    for tail in tails:
        tail.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tail
    await _summary(settings, drift, report, loop, served)


async def _print_alerts(settings: Settings, clock: Clock) -> None:
    async for record in read_topic(settings, settings.topics.alerts, follow=True):
        clock.say("ALERT " + format_alert(Alert.model_validate_json(record.value or b"")))


async def _print_models(settings: Settings, clock: Clock) -> None:
    async for record in read_topic(settings, settings.topics.models, follow=True):
        event = ModelPublished.model_validate_json(record.value or b"")
        if event.reason != "no champion yet":
            clock.say(f"MODEL {event.model_id} v{event.model_version} {event.status.upper()}: {event.reason}")


def _describe(verdict: ModelPublished) -> str:
    metrics = verdict.metrics
    return (
        f"v{verdict.model_version} (holdout accuracy {metrics['accuracy']:.3f}, "
        f"champion {metrics.get('champion_accuracy', 0):.3f}, parity error {metrics['parity_error']:.1e})"
    )


def _kinds(pairs: AbstractSet[tuple[str, str]]) -> str:
    return ", ".join(f"{kind} on {subject}" for kind, subject in sorted(pairs))


async def _summary(
    settings: Settings, scenario: Scenario, report: ProduceReport, loop: Scenario, served: ServedStream
) -> None:
    topics = settings.topics
    status = await wait_for_status(settings, MODEL_ID, lambda s: True, timeout_s=10)
    alerts = [Alert.model_validate_json(v) for v in await records_for(settings, topics.alerts, MODEL_ID)]
    dead = [DeadLetter.model_validate_json(v) for v in await records_for(settings, topics.dead_letters, MODEL_ID)]
    truth = scenario.ground_truth()
    index = {event_id: chunk.start + i for chunk in generate(scenario) for i, event_id in enumerate(chunk.event_ids)}
    delays = ", ".join(
        f"{a.subject} after {index[a.trigger_event_id] - scenario.onset:,} events"
        for a in alerts
        if a.kind == "data_drift" and a.trigger_event_id in index
    )
    accounted = status.events_processed + len(dead) == report.predictions + report.malformed
    found = {(a.kind, a.subject) for a in alerts if a.state == "firing"}
    commands = [RetrainCommand.model_validate_json(v) for v in await records_for(settings, topics.retrain_commands,
                                                                                 LOOP_MODEL_ID)]  # fmt: skip
    verdicts = [
        ModelPublished.model_validate_json(v) for v in await records_for(settings, topics.models, LOOP_MODEL_ID)
    ]
    promoted = [v for v in verdicts if v.status == "promoted" and v.command_id in {c.command_id for c in commands}]
    before = served.accuracy(0, loop.onset) or 0.0
    degraded = served.accuracy(loop.onset, loop.n_events, version="1") or 0.0
    last = served.versions()[-1]
    after = served.accuracy(loop.onset, loop.n_events, version=last) or 0.0  # what the newest version answered
    loop_ok = served.failed_requests == 0 and served.versions() == ["1", "2"] and after >= before - 0.05
    rows = [
        (f"{MODEL_ID} (logged predictions)", ""),
        ("events produced", f"{report.predictions:,} (+{report.malformed} malformed messages)"),
        ("events processed", f"{status.events_processed:,}"),
        ("dead-lettered", f"{len(dead)} ({dead[0].reason})" if dead else "0"),
        ("alerts", f"{len(alerts)}: {_kinds(found) or 'none'}"),
        ("expected", _kinds(truth.expected_alerts)),
        ("detection delay", delays or "-"),
        ("accounting", "produced = processed + dead-lettered" if accounted else "MISMATCH"),
        (f"{LOOP_MODEL_ID} (served, concept drift)", ""),
        ("requests", f"{sum(n for *_, n in served.requests):,} rows, {served.failed_requests} failed"),
        ("served by versions", ", ".join(served.versions())),
        ("retrain commands", f"{len(commands)}"),
        ("promoted", ", ".join(_describe(v) for v in promoted) or "none"),
        ("accuracy before drift", f"{before:.3f} (v1)"),
        ("accuracy after drift", f"{degraded:.3f} (v1)"),
        ("accuracy at the end", f"{after:.3f} (v{last}, {served.rows(loop.onset, last):,} rows after the change)"),
    ]
    typer.echo("\nSummary (counted from the topics and the clients' answers)")
    for name, value in rows:
        typer.echo(f"  {name:<24} {value}" if value else f"  {name}")
    if not (accounted and found == truth.expected_alerts and loop_ok and promoted):
        raise DemoFailedError("the demo did not find what it should; see the summary above and the logs")
    typer.echo("  result                   OK")
