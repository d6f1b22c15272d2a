"""The ``driftwarden`` command line. Errors are one line on stderr, never a traceback."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from driftwarden.config import Settings
from driftwarden.core.events import Alert, format_alert
from driftwarden.errors import DriftwardenError
from driftwarden.kafka.broker import EmbeddedBroker
from driftwarden.kafka.clients import ensure_topics
from driftwarden.kafka.reader import read_topic
from driftwarden.load.producer import ScenarioProducer
from driftwarden.load.scenarios import SCENARIOS, Scenario

cli = typer.Typer(
    name="driftwarden",
    help="Event-driven monitoring of ML models on Kafka: drift, performance, alerts, retraining.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
topics_cli = typer.Typer(help="Manage the project's Kafka topics.", no_args_is_help=True)
cli.add_typer(topics_cli, name="topics")

#: Errors a user can cause and fix; reported as one line.
USER_ERRORS = (
    DriftwardenError,
    KafkaError,
    LookupError,
    OSError,
    TimeoutError,
    ValueError,
    ValidationError,
)


def settings() -> Settings:
    return Settings()


@cli.command()
def broker(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).", min=0, max=65535)] = 9092,
    log_file: Annotated[Path, typer.Option(help="Where the broker's own log goes.")] = Path(".driftwarden/broker.log"),
    partitions: Annotated[int, typer.Option(help="Partitions of the predictions/labels topics.", min=1)] = 4,
) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, in memory) until Ctrl-C."""
    config = settings().model_copy(update={"partitions": partitions})
    embedded = EmbeddedBroker(log_file, port=port or None, settings=config)
    embedded.start()
    typer.echo(f"broker ready; in other shells: export DRIFTWARDEN_KAFKA_BOOTSTRAP={embedded.bootstrap}")
    try:
        _wait_for_signal(lambda: embedded.running)
    finally:
        embedded.stop()
    if not embedded.running:
        typer.echo("broker stopped")


def _wait_for_signal(alive: object) -> None:
    """Block until SIGINT/SIGTERM or until ``alive()`` turns false."""
    stop = False

    def handler(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not stop and alive():  # type: ignore[operator]
        time.sleep(0.2)


@cli.command()
def monitor(
    metrics_port: Annotated[
        int, typer.Option(help="Serve Prometheus /metrics on PORT (0 disables).", min=0, max=65535)
    ] = 9464,
) -> None:
    """Run the monitor worker (Faust): predictions in, alerts and dead letters out."""
    from prometheus_client import start_http_server

    from driftwarden.monitor.service import run_worker

    config = settings()
    asyncio.run(ensure_topics(config, config.topics.specs(config.partitions)))
    if metrics_port:
        start_http_server(metrics_port, addr=config.metrics_host)
    run_worker(config)


@cli.command()
def produce(
    scenario: Annotated[str, typer.Option(help=f"One of: {', '.join(SCENARIOS)}.")] = "abrupt-shift",
    events: Annotated[int, typer.Option(help="Number of predictions.", min=1)] = 30_000,
    onset: Annotated[int, typer.Option(help="Event index where the drift starts.", min=0)] = 10_000,
    drift_features: Annotated[str, typer.Option(help="Comma-separated numeric features to shift.")] = ("num_00,num_01"),
    magnitude: Annotated[float, typer.Option(help="Shift in standard deviations.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Events per Kafka message (1 = single events).", min=1)] = 200,
    rate: Annotated[float, typer.Option(help="Events per second (0 = as fast as possible).", min=0)] = 0.0,
    label_delay: Annotated[int, typer.Option(help="Labels trail their predictions by this many.", min=0)] = 500,
    label_fraction: Annotated[float, typer.Option(help="Share of predictions that get a label.")] = 1.0,
    malformed_every: Annotated[int, typer.Option(help="Inject a malformed message every N events.", min=0)] = 0,
    model_id: Annotated[str, typer.Option(help="Model id (the Kafka key).")] = "demo-model",
    model_version: Annotated[str, typer.Option()] = "1",
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Produce a synthetic scored stream with a known drift (the load generator)."""
    chosen = Scenario(
        name=scenario,  # type: ignore[arg-type]  # validated by Scenario itself
        n_events=events,
        onset=onset,
        drift_features=tuple(f.strip() for f in drift_features.split(",") if f.strip()),
        magnitude=magnitude,
        seed=seed,
        model_id=model_id,
        model_version=model_version,
        start_ts=time.time(),
        events_per_second=rate or 1_000.0,
    )
    producer = ScenarioProducer(
        settings(),
        chosen,
        batch_size=batch_size,
        rate=rate,
        label_delay=label_delay,
        label_fraction=label_fraction,
        malformed_every=malformed_every,
    )
    report = asyncio.run(producer.run())
    truth = chosen.ground_truth()
    typer.echo(
        f"produced {report.predictions} predictions in {report.prediction_messages} messages, "
        f"{report.labels} labels, {report.malformed} malformed, in {report.seconds:.1f} s "
        f"({report.rate:,.0f} events/s); drift: {', '.join(truth.drifting_features) or 'none'}"
        + (f" from event {truth.onset}" if truth.onset is not None else "")
    )


@cli.command()
def alerts(
    follow: Annotated[bool, typer.Option("--follow/--no-follow", help="Keep waiting for new alerts.")] = True,
    since: Annotated[float, typer.Option(help="Only alerts from the last SECONDS (0 = the whole topic).", min=0)] = 0.0,
    model_id: Annotated[str | None, typer.Option(help="Only this model's alerts.")] = None,
) -> None:
    """Print alerts from the alerts topic as readable lines."""
    config = settings()

    async def tail() -> None:
        since_ts = time.time() - since if since else None
        async for record in read_topic(config, config.topics.alerts, follow=follow, since_ts=since_ts):
            alert = Alert.model_validate_json(record.value or b"")
            if model_id is None or alert.model_id == model_id:
                typer.echo(format_alert(alert))

    asyncio.run(tail())


@topics_cli.command("create")
def topics_create() -> None:
    """Create the project's topics on the configured cluster (existing ones are left alone)."""
    config = settings()
    created = asyncio.run(ensure_topics(config, config.topics.specs(config.partitions)))
    typer.echo(f"created: {', '.join(created)}" if created else "all topics already exist")


@cli.command()
def demo(
    events: Annotated[int, typer.Option(help="Predictions to produce.", min=2_000)] = 60_000,
    rate: Annotated[float, typer.Option(help="Events per second.", min=100)] = 3_000.0,
    work_dir: Annotated[Path, typer.Option(help="Logs and state of the demo.")] = Path(".driftwarden/demo"),
) -> None:
    """Run everything on this machine: broker, monitor, a drifting load; print alerts and a summary."""
    from driftwarden.demo import run_demo

    run_demo(work_dir, n_events=events, rate=rate)


def main() -> None:
    """Entry point: run the CLI, turning expected errors into one line on stderr."""
    try:
        cli(standalone_mode=False)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: bad option, unknown command, ...
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        typer.echo(f"driftwarden: error: {message}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except USER_ERRORS as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, ValidationError):
            message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        typer.echo(f"driftwarden: error: {message}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
