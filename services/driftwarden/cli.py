"""The ``driftwarden`` command line. Errors are one line on stderr; ``--debug`` shows their traceback."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar, cast

import orjson
import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from driftwarden.core.config import WINDOW_TESTS_SHARE, ModelMonitorConfig, MonitoringConfig
from driftwarden.core.events import MODEL_ID_PATTERN, Alert, format_alert
from driftwarden.errors import DriftwardenError
from driftwarden.kafka.broker import BrokerError, EmbeddedBroker
from driftwarden.kafka.clients import ensure_topics
from driftwarden.kafka.reader import read_topic
from driftwarden.settings import Settings
from driftwarden_load.scenarios import SCENARIOS, Scenario

if TYPE_CHECKING:  # (the profile's statistics import scipy.stats: ~1 s no on-call command needs)
    from driftwarden.core.profile import ReferenceProfile

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
config_cli = typer.Typer(help="Check monitoring configuration files.", no_args_is_help=True)
cli.add_typer(config_cli, name="config")
profile_cli = typer.Typer(help="Build reference profiles offline.", no_args_is_help=True)
cli.add_typer(profile_cli, name="profile")
bench_cli = typer.Typer(help="Benchmarks (results go to docs/benchmarks.md).", no_args_is_help=True)
cli.add_typer(bench_cli, name="bench")

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


class Options:
    """Global options (``--debug``), set by the callback before any command runs."""

    debug: bool = False


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"driftwarden {version('driftwarden')}")
        raise typer.Exit()


@cli.callback()
def global_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of any error.")] = False,
) -> None:
    """Event-driven monitoring of ML models on Kafka: drift, performance, alerts, retraining."""
    Options.debug = debug
    if not debug:  # (a command's own error is the one line; the workers' logging, once configured, still gets them)
        logging.getLogger("aiokafka").addHandler(logging.NullHandler())


def settings() -> Settings:
    return Settings()


def _check_model_ids(model_id: str, model_version: str) -> None:
    """``--model-id`` and ``--model-version`` by the events' rule (``schemas/prediction.v1.json``)."""
    for option, value in (("--model-id", model_id), ("--model-version", model_version)):
        if not re.match(MODEL_ID_PATTERN, value):
            raise DriftwardenError(
                f"{option} {value!r}: letters, digits, '.', '_', '-', starting with a letter or digit"
            )


@cli.command()
def broker(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).", min=0, max=65535)] = 9092,
    log_file: Annotated[Path, typer.Option(help="Where the broker's own log goes.")] = Path(".driftwarden/broker.log"),
    partitions: Annotated[int, typer.Option(help="Partitions of the predictions/labels topics.", min=1)] = 4,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Keep topics and group offsets in this directory across restarts (SeaweedFS S3 storage). "
            "Without it the broker keeps everything in memory and a restart loses it."
        ),
    ] = None,
) -> None:
    """Run the embedded Kafka-protocol broker (Tansu; in memory, or durable with --data) until Ctrl-C."""
    config = settings().model_copy(update={"partitions": partitions})
    embedded = EmbeddedBroker(log_file, port=port or None, settings=config, data_dir=data)
    embedded.start()
    storage = f"data in {data}" if data is not None else "in memory: a restart loses everything"
    exports = " ".join(f"{k}={v}" for k, v in embedded.client_env().items())
    typer.echo(f"broker ready ({storage}); in other shells: export {exports}")
    try:
        _wait_for_signal(lambda: embedded.running)
        failure = embedded.failure()
    finally:
        embedded.stop()
    if failure:
        raise BrokerError(failure)
    typer.echo("broker stopped")


Item = TypeVar("Item")


def listed(text: str, option: str, convert: Callable[[str], Item]) -> list[Item]:
    """The comma-separated items of an option's value, blanks dropped, each ``convert``-ed; an item it refuses
    is a one-line error naming the option.

    >>> listed("1, 10,,100", "--sizes", int)
    [1, 10, 100]
    >>> try:
    ...     listed("1,x", "--sizes", int)
    ... except typer.BadParameter as error:
    ...     print(error.message)
    --sizes takes a comma-separated list of int, got '1,x'
    """
    try:
        return [convert(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        kind = getattr(convert, "__name__", "values")
        raise typer.BadParameter(f"{option} takes a comma-separated list of {kind}, got {text!r}") from None


Choice = TypeVar("Choice", bound=str)


def one_of(value: str, choices: tuple[Choice, ...], what: str) -> Choice:
    """``value`` as one of ``choices`` (the members of a ``Literal``), or an error naming them.

    >>> one_of("canary", ("direct", "canary", "shadow"), "rollout")
    'canary'
    >>> one_of("blue-green", ("direct", "canary", "shadow"), "rollout")
    Traceback (most recent call last):
    ...
    driftwarden.errors.DriftwardenError: unknown rollout 'blue-green': direct, canary or shadow
    """
    for choice in choices:
        if choice == value:
            return choice
    raise DriftwardenError(f"unknown {what} {value!r}: {', '.join(choices[:-1])} or {choices[-1]}")


def _wait_for_signal(alive: Callable[[], bool]) -> None:
    """Block until SIGINT/SIGTERM or until ``alive()`` turns false."""
    stop = False

    def handler(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    while not stop and alive():
        time.sleep(0.2)


@cli.command()
def monitor(
    metrics_port: Annotated[
        int, typer.Option(help="Serve Prometheus /metrics on PORT (0 disables).", min=0, max=65535)
    ] = 9464,
    config_file: Annotated[
        Path | None, typer.Option("--config", help="Monitoring config (TOML); defaults need none.")
    ] = None,
    profiles_dir: Annotated[
        Path | None, typer.Option(help="Reference profiles as DIR/<model_id>/<model_version>.json.")
    ] = None,
) -> None:
    """Run the monitor worker (Faust): predictions and labels in; alerts, retrain commands, dead letters out."""
    from prometheus_client import start_http_server

    from driftwarden.core.profile import check_profiles_dir
    from driftwarden.monitor.service import run_worker

    updates = {"monitor_config": config_file, "profiles_dir": profiles_dir}
    config = settings().model_copy(update={k: v for k, v in updates.items() if v is not None})
    if config.monitor_config:
        MonitoringConfig.from_file(config.monitor_config)  # fail fast, with the key, before starting
    if config.profiles_dir is not None:
        check_profiles_dir(config.profiles_dir)  # (the same: a typo, a file that is not a profile)
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
    from driftwarden_load.producer import ScenarioProducer

    _check_model_ids(model_id, model_version)  # (events the contract refuses: every one a dead letter)
    if not math.isfinite(magnitude):
        raise DriftwardenError(f"--magnitude {magnitude}: a finite shift in standard deviations")

    chosen = Scenario(
        name=one_of(scenario, SCENARIOS, "scenario"),
        n_events=events,
        onset=onset,
        drift_features=tuple(listed(drift_features, "--drift-features", str)),
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
    since: Annotated[
        str | None,
        typer.Option(help="Only alerts since SECONDS ago or an ISO-8601 time, found by timestamp, not by a scan."),
    ] = None,
    model_id: Annotated[str | None, typer.Option(help="Only this model's alerts.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only alerts of this kind (e.g. data_drift).")] = None,
    severity: Annotated[str | None, typer.Option(help="Only this severity: info, warning or critical.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One alert.v1 JSON document per line.")] = False,
) -> None:
    """Print alerts from the alerts topic as readable lines (or JSON lines)."""
    from typing import get_args

    from driftwarden.core.decoding import describe
    from driftwarden.core.events import AlertKind
    from driftwarden.notify.reading import records_since, since_timestamp

    if kind is not None and kind not in get_args(AlertKind):
        raise DriftwardenError(f"unknown kind {kind!r}: {', '.join(get_args(AlertKind))}")
    if severity not in (None, "info", "warning", "critical"):
        raise DriftwardenError(f"unknown severity {severity!r}: info, warning or critical")
    config = settings()
    wanted = {"model_id": model_id, "kind": kind, "severity": severity}
    since_ts = None if since is None else since_timestamp(since, time.time())

    async def tail() -> None:
        topic = config.topics.alerts
        if since_ts is not None:
            source = records_since(config, topic, since_ts, follow=follow)
        else:
            source = read_topic(config, topic, follow=follow)
        async for record in source:
            try:
                alert = Alert.model_validate_json(record.value or b"")
            except ValidationError as exc:
                where = f"{record.topic}[{record.partition}]@{record.offset}"
                typer.echo(f"driftwarden: skipped malformed record {where}: {describe(exc.errors())}", err=True)
                continue
            if all(value is None or getattr(alert, key) == value for key, value in wanted.items()):
                typer.echo(alert.to_json().decode() if as_json else format_alert(alert))

    asyncio.run(tail())


@cli.command()
def status(
    model_id: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    group: Annotated[str | None, typer.Option(help="Only this monitor group's (default: every group's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of text.")] = False,
) -> None:
    """Per model and monitor group: counters, accuracy, label joins and open alerts (status and alerts topics),
    monitor lag."""
    from driftwarden.notify.reading import overview

    models = asyncio.run(overview(settings(), model_id, group))
    if not models:
        of = "".join([f" for model {model_id!r}" if model_id else "", f" of group {group!r}" if group else ""])
        raise DriftwardenError(f"no status{of} yet" if of else "no model status yet")
    for model in models:
        typer.echo(orjson.dumps(model.as_dict()).decode() if as_json else model.as_text())


@cli.command()
def notify(
    config_file: Annotated[Path, typer.Option("--config", help="Receivers and routes (TOML, see deploy/notify).")],
    metrics_port: Annotated[int, typer.Option(help="Serve /metrics on PORT (0 disables).", min=0, max=65535)] = 9466,
) -> None:
    """Deliver alerts to Alertmanager and signed webhooks, at least once; failures are dead-lettered."""
    from prometheus_client import start_http_server

    from driftwarden.notify.config import NotifyConfig, load_secrets
    from driftwarden.notify.service import run_notify

    notify_config = NotifyConfig.from_file(config_file)
    secrets = load_secrets(notify_config)  # fail fast, naming the variable, before connecting
    config = settings()
    asyncio.run(ensure_topics(config, config.topics.specs(config.partitions)))
    if metrics_port:
        start_http_server(metrics_port, addr=config.metrics_host)
    run_notify(config, notify_config, secrets)


@topics_cli.command("create")
def topics_create(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be created (and what exists) without creating.")
    ] = False,
) -> None:
    """Create the project's topics on the configured cluster (existing ones are left alone).

    Each topic gets DRIFTWARDEN_TOPIC_REPLICATION_FACTOR replicas (default 3) and
    DRIFTWARDEN_TOPIC_MIN_INSYNC_REPLICAS (default 2): a 3-broker cluster's usual choice."""
    from driftwarden.kafka.clients import describe_topics

    config = settings()
    specs = config.topics.specs(config.partitions)
    if not dry_run:
        created = asyncio.run(ensure_topics(config, specs))
        typer.echo(f"created: {', '.join(created)}" if created else "all topics already exist")
        return
    states, brokers = asyncio.run(describe_topics(config, specs))
    for state in states:
        typer.echo(f"{'exists' if state.exists else 'would create'}  {state.as_row()}")
    missing = sum(not state.exists for state in states)
    typer.echo(f"dry run: {missing} of {len(states)} topics would be created on a cluster of {brokers} brokers")
    if missing and config.topic_replication_factor > brokers:
        raise DriftwardenError(
            f"replication factor {config.topic_replication_factor} exceeds the cluster's {brokers} brokers: "
            "creating would fail (set DRIFTWARDEN_TOPIC_REPLICATION_FACTOR)"
        )


@topics_cli.command("list")
def topics_list() -> None:
    """Each project topic with its partitions, replication factor and configs (or that it is missing)."""
    from driftwarden.kafka.clients import describe_topics

    config = settings()
    states, brokers = asyncio.run(describe_topics(config, config.topics.specs(config.partitions)))
    for state in states:
        typer.echo(state.as_row() if state.exists else f"{state.name}  missing (run `driftwarden topics create`)")
    typer.echo(f"{sum(s.exists for s in states)} of {len(states)} topics exist; {brokers} brokers")


@cli.command()
def trainer(
    registry: Annotated[Path | None, typer.Option(help="Model registry directory.")] = None,
    model_family: Annotated[
        str, typer.Option(help="logistic_regression or gradient_boosting.")
    ] = "logistic_regression",
    promotion_margin: Annotated[float, typer.Option(help="Accuracy a challenger must gain to be promoted.")] = 0.01,
    min_examples: Annotated[int, typer.Option(help="Fewest labelled examples to train on.", min=10)] = 500,
    rollout: Annotated[str, typer.Option(help="How a winner goes live: direct, canary or shadow.")] = "direct",
    canary_fraction: Annotated[float, typer.Option(help="Share of requests a canary answers.", min=0, max=1)] = 0.1,
    seed: Annotated[int, typer.Option()] = 0,
    metrics_port: Annotated[int, typer.Option(help="Serve /metrics on PORT (0 disables).", min=0, max=65535)] = 9465,
    monitoring_config: Annotated[
        Path | None,
        typer.Option("--config", help="Monitoring TOML (or DRIFTWARDEN_MONITOR_CONFIG): its declared feature types."),
    ] = None,
) -> None:
    """Run the trainer worker: retrain commands in, validated ONNX models and verdicts out."""
    from prometheus_client import start_http_server

    from driftwarden.trainer.model import MODEL_FAMILIES, ROLLOUTS, TrainerConfig
    from driftwarden.trainer.service import run_trainer

    family, chosen_rollout = one_of(model_family, MODEL_FAMILIES, "model family"), one_of(rollout, ROLLOUTS, "rollout")
    if not 0 <= promotion_margin < 1:  # (NaN too: it would promote nothing, or with a negative margin a worse model)
        raise DriftwardenError(f"--promotion-margin {promotion_margin}: an accuracy gain from 0 to below 1")
    updates = {"registry_dir": registry, "monitor_config": monitoring_config}
    config = settings().model_copy(update={k: v for k, v in updates.items() if v is not None})
    trainer_config = TrainerConfig(  # (before connecting: a bad config file is one line, at once)
        model_family=family,
        seed=seed,
        promotion_margin=promotion_margin,
        min_examples=min_examples,
        rollout=chosen_rollout,
        canary_fraction=canary_fraction,
        monitoring=MonitoringConfig.from_file(config.monitor_config) if config.monitor_config else MonitoringConfig(),
    )
    asyncio.run(ensure_topics(config, config.topics.specs(config.partitions)))
    if metrics_port:
        start_http_server(metrics_port, addr=config.metrics_host)
    run_trainer(config, trainer_config)


@cli.command()
def serve(
    registry: Annotated[Path | None, typer.Option(help="Model registry directory.")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.", min=1, max=65535)] = 8080,
    token: Annotated[
        str | None, typer.Option(help="Require 'Authorization: Bearer TOKEN' (or DRIFTWARDEN_SERVING_TOKEN).")
    ] = None,
    max_batch_rows: Annotated[int, typer.Option(help="Rows per micro-batch at most.", min=1)] = 256,
    max_wait_ms: Annotated[
        float, typer.Option(help="How long a micro-batch waits at most for requests after its first.", min=0)
    ] = 2.0,
    idle_ms: Annotated[
        float, typer.Option(help="A micro-batch closes sooner once no request has arrived for this long.", min=0)
    ] = 0.25,
    cost_per_request: Annotated[float, typer.Option(help="Cost model: fixed cost of one prediction.", min=0)] = 0.0,
    cost_per_ms: Annotated[float, typer.Option(help="Cost model: cost per millisecond of latency.", min=0)] = 0.0,
    stream: Annotated[
        bool, typer.Option("--stream/--no-stream", help="Also answer requests from the inference-requests topic.")
    ] = True,
) -> None:
    """Serve the registry's champions over HTTP (ONNX Runtime); predictions go back to the stream."""
    from driftwarden.serving.server import ServingConfig, run_server

    config = settings().model_copy(update={"registry_dir": registry} if registry else {})
    asyncio.run(ensure_topics(config, config.topics.specs(config.partitions)))
    if token is None and config.serving_token is not None:
        token = config.serving_token.get_secret_value()
    serving = ServingConfig(
        max_batch_rows=max_batch_rows,
        max_wait_s=max_wait_ms / 1000,
        idle_s=idle_ms / 1000,
        cost_per_request=cost_per_request,
        cost_per_ms=cost_per_ms,
        token=token,
        stream=stream,
    )
    typer.echo(f"serving {config.registry_dir} on http://{host}:{port}")
    run_server(config, serving, host, port)


@cli.command()
def ui(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.", min=1, max=65535)] = 8765,
    group: Annotated[str | None, typer.Option(help="This monitor group's statuses (default: the configured).")] = None,
) -> None:
    """Serve a live page of every model (drift per feature, alerts, accuracy, versions) read from the topics."""
    from driftwarden.ui.server import run_ui

    config = settings()
    run_ui(config, host, port, lambda url: typer.echo(f"driftwarden ui: {url}"), group or config.monitor_group)


def _announce_promotion(config: Settings, model_id: str, version: str, reason: str) -> None:
    """Publish that a registered version is promoted, so every server swaps to it."""
    import uuid

    from aiokafka import AIOKafkaProducer

    from driftwarden.core.events import ModelPublished
    from driftwarden.kafka.clients import client_options
    from driftwarden.registry.store import ModelRegistry

    models = ModelRegistry(config.registry_dir)
    manifest = models.manifest(model_id, version)
    event = ModelPublished(
        model_id=model_id, model_version=version, status="promoted", ts=time.time(),
        command_id=str(uuid.uuid4()), reason=reason, artifact_uri=models.uri(model_id, version),
        sha256=manifest.sha256, parent_version=manifest.parent_version, metrics=manifest.metrics,
    )  # fmt: skip

    async def send() -> None:
        producer = AIOKafkaProducer(**client_options(config), acks="all")
        try:
            await producer.start()
            await producer.send_and_wait(config.topics.models, event.to_json(), key=model_id.encode())
        finally:
            await producer.stop()

    asyncio.run(send())


@cli.command()
def rollback(
    model_id: Annotated[str, typer.Option(help="The model to roll back.")],
    to: Annotated[str | None, typer.Option(help="Version to restore (default: the one before the champion).")] = None,
    registry: Annotated[Path | None, typer.Option(help="Model registry directory.")] = None,
) -> None:
    """Restore an earlier promoted version and announce it, so every server swaps back."""
    from driftwarden.registry.store import ModelRegistry

    config = settings().model_copy(update={"registry_dir": registry} if registry else {})
    models = ModelRegistry(config.registry_dir)
    previous = models.champion(model_id)
    manifest = models.rollback(model_id, to)
    was = previous.version if previous else "?"
    _announce_promotion(config, model_id, manifest.version, f"rollback from v{was}")
    typer.echo(f"{model_id}: champion is v{manifest.version} again (was v{was})")


@cli.command()
def promote(
    model_id: Annotated[str, typer.Option(help="The model.")],
    version: Annotated[str, typer.Option(help="The version to make champion (e.g. a canary that did well).")],
    registry: Annotated[Path | None, typer.Option(help="Model registry directory.")] = None,
) -> None:
    """Make a registered version the champion and announce it (ends a canary or shadow rollout)."""
    from driftwarden.registry.store import ModelRegistry

    config = settings().model_copy(update={"registry_dir": registry} if registry else {})
    models = ModelRegistry(config.registry_dir)
    models.load(model_id, version)  # refuse a missing or corrupt version before switching
    previous = models.champion(model_id)
    models.set_champion(model_id, version)
    _announce_promotion(
        config, model_id, version, f"promoted by an operator (was v{previous.version if previous else '?'})"
    )
    typer.echo(f"{model_id}: champion is v{version}")


@config_cli.command("check")
def config_check(
    path: Annotated[Path, typer.Argument(help="The TOML file.")],
    model_id: Annotated[str | None, typer.Option(help="Print the effective settings of this model.")] = None,
) -> None:
    """Validate a monitoring config; print the effective settings of a model (or the defaults).

    A ``--model-id`` without a ``[models.<id>]`` section is an error: a typo would otherwise print
    the defaults as if they were that model's settings."""
    config = MonitoringConfig.from_file(path)
    if model_id and model_id not in config.models:
        known = ", ".join(sorted(config.models)) or "none"
        raise DriftwardenError(f"{path}: no [models.{model_id}] section (sections: {known})")
    effective = config.for_model(model_id) if model_id else config.defaults
    typer.echo(f"{path}: valid ({len(config.models)} model sections)")
    typer.echo(orjson.dumps(effective.model_dump(), option=orjson.OPT_INDENT_2).decode())
    typer.echo(
        f"false-alarm budget {effective.false_alarms_per_million:g} per million events: window tests "
        f"{WINDOW_TESTS_SHARE:.0%} (level {effective.window_level:g} per window of {effective.window_size} events), "
        f"streaming detectors {1 - WINDOW_TESTS_SHARE:.0%}; a classifier's error-stream CUSUMs: one false alarm per "
        f"{effective.label_arl:,.0f} labels"
    )


@profile_cli.command("build")
def profile_build(
    model_id: Annotated[str, typer.Option(help="Model the profile is for.")],
    model_version: Annotated[str, typer.Option(help="Model version the profile is for.")],
    output_dir: Annotated[Path, typer.Option("--output", help="Profiles directory (the monitor's --profiles-dir).")],
    input_file: Annotated[
        Path | None, typer.Option("--input", help="JSON lines of prediction events or batch envelopes.")
    ] = None,
    table_file: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="A training set: Parquet (.parquet, .pq) or CSV (.csv[.gz]), one column per feature (an "
            "embedding: a list column of numbers, or JSON arrays in CSV cells).",
        ),
    ] = None,
    exclude: Annotated[str, typer.Option(help="--from: comma-separated columns that are not features.")] = "",
    task: Annotated[str, typer.Option(help="--from: classification or regression.")] = "classification",
    positive_class: Annotated[
        str | None, typer.Option(help="--from: the class the scores are the probability of.")
    ] = None,
    score_column: Annotated[
        str | None,
        typer.Option(help="--from: the model's score (or regression output) per row: the prediction signal."),
    ] = None,
    config_file: Annotated[Path | None, typer.Option("--config", help="Monitoring config for feature types.")] = None,
) -> None:
    """Build a reference profile from prediction events (--input) or a training set (--from)."""

    from driftwarden.core.profile_report import feature_counts

    if (input_file is None) == (table_file is None):
        raise DriftwardenError("give exactly one of --input (prediction events) and --from (a training set)")
    _check_model_ids(model_id, model_version)  # (also: no path out of --output)
    model_config = (MonitoringConfig.from_file(config_file) if config_file else MonitoringConfig()).for_model(model_id)
    profile: ReferenceProfile
    if table_file is not None:
        from driftwarden.core.profile import TASKS
        from driftwarden.training_data import profile_from_table, read_table

        chosen_task = one_of(task, TASKS, "task")
        if score_column and chosen_task == "classification" and positive_class is None:
            raise DriftwardenError("--score-column of a classifier needs --positive-class (the class it scores)")
        profile = profile_from_table(
            read_table(table_file), model_id, model_version, dict(model_config.features), model_config.ignore_features,
            listed(exclude, "--exclude", str), chosen_task, positive_class, score_column,
        )  # fmt: skip
        skipped = ""
    else:
        assert input_file is not None
        profile, skipped = _profile_of_events(input_file, model_id, model_version, model_config)
    unit = "rows" if table_file else "events"
    if profile.n_events < 100:
        source = table_file or input_file
        raise DriftwardenError(f"{source}: {profile.n_events} {unit} of {model_id} v{model_version}; need at least 100")
    target = output_dir / model_id / f"{model_version}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(".json.tmp")
    temporary.write_bytes(profile.to_json())
    temporary.replace(target)
    typer.echo(f"wrote {target}: {profile.n_events} {unit}, {feature_counts(profile)}, task {profile.task}{skipped}")


def _profile_of_events(
    input_file: Path, model_id: str, model_version: str, model_config: ModelMonitorConfig
) -> tuple[ReferenceProfile, str]:
    """The profile of a model version's events in a JSON lines file, and a note on skipped lines."""
    from driftwarden.core.decoding import PREDICTIONS
    from driftwarden.core.profile import build_profile

    events, rejected = [], 0
    try:
        lines = input_file.read_bytes().splitlines()
    except OSError as exc:
        raise DriftwardenError(f"cannot read {input_file}: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        decoded = PREDICTIONS.decode(line)
        rows = [*decoded.events, *(e for batch in decoded.columns for e in batch.events())]
        events += [e for e in rows if (e.model_id, e.model_version) == (model_id, model_version)]
        for rejection in decoded.rejections:
            rejected += 1
            typer.echo(f"{input_file}:{number}: skipped: {rejection.reason}", err=True)
    profile = build_profile(model_id, model_version, events, dict(model_config.features), model_config.ignore_features)
    return profile, f"; {rejected} lines skipped" if rejected else ""


@profile_cli.command("show")
def profile_show(
    path: Annotated[Path, typer.Argument(help="A profile (PROFILES_DIR/<model>/<version>.json).")],
) -> None:
    """A readable summary of a profile: one line per feature."""
    from driftwarden.core.profile import read_profile
    from driftwarden.core.profile_report import describe

    typer.echo(describe(read_profile(path)))


@profile_cli.command("diff")
def profile_diff(
    a: Annotated[Path, typer.Argument(help="Profile A (the reference).")],
    b: Annotated[Path, typer.Argument(help="Profile B (compared with A).")],
    config_file: Annotated[
        Path | None, typer.Option("--config", help="Monitoring config: the tests and thresholds of A's model.")
    ] = None,
) -> None:
    """Which features of B differ from A, by the monitor's own drift tests; exit 1 when any does."""
    from driftwarden.core.profile import read_profile
    from driftwarden.core.profile_report import compare

    reference, current = read_profile(a), read_profile(b)
    config = (MonitoringConfig.from_file(config_file) if config_file else MonitoringConfig()).for_model(
        reference.model_id
    )
    rows = compare(reference, current, config)
    differ = [row.feature for row in rows if row.drift or row.change != "compared"]
    typer.echo(
        f"A = {reference.model_id} v{reference.model_version} ({reference.n_events:,} rows), "
        f"B = {current.model_id} v{current.model_version} ({current.n_events:,} rows); "
        f"tests at level {config.window_level:g}"
    )
    for row in rows:
        typer.echo(row.as_text())
    typer.echo(f"{len(differ)} of {len(rows)} features differ" + (f": {', '.join(differ)}" if differ else ""))
    if differ:
        raise typer.Exit(1)


@bench_cli.command("bank-overhead")
def bench_bank_overhead(
    targets: Annotated[str, typer.Option(help="Comma-separated values between each CUSUM's false alarms.")] = (
        "29e3,29e4,29e5"
    ),
    alarms: Annotated[int, typer.Option(help="About this many of the bank's false alarms per target.", min=10)] = 300,
    references: Annotated[int, typer.Option(help="References whose exact θ is computed.", min=10)] = 2_000,
    reference_n: Annotated[int, typer.Option(help="Values per reference.", min=100)] = 5_000,
    seed: Annotated[int, typer.Option(help="Seed of the uniform ranks and references.")] = 0,
) -> None:
    """The rank-CUSUM bank's threshold overhead: its effective multiplicity, and its margin over references."""
    from driftwarden.bench.bank_overhead import run_bank_overhead

    levels = tuple(listed(targets, "--targets", float))
    for line in run_bank_overhead(levels, alarms, references, reference_n, seed):
        typer.echo(line)


@bench_cli.command("core")
def bench_core(
    events: Annotated[int, typer.Option(help="Events to push through the core.", min=10_000)] = 200_000,
    batch_size: Annotated[int, typer.Option(help="Events per batch envelope.", min=1)] = 500,
    rss_every: Annotated[
        int | None,
        typer.Option(help="Instead: stream columnar batches with labels, RSS every this many events.", min=1),
    ] = None,
    label_delay: Annotated[
        int, typer.Option(help="With --rss-every: events from each 10,000 predictions' last to their labels.", min=0)
    ] = 50_000,
) -> None:
    """Events/s of decode + the default detector set, 20 features, no Kafka (the worker's hot path).

    With ``--rss-every``: the process's RSS as the core runs long with half the predictions labelled.
    """
    if rss_every is not None:
        from driftwarden.bench.memory import MemorySample, run_memory_benchmark

        def progress(sample: MemorySample) -> None:
            typer.echo(f"{sample.events:,} events: RSS {sample.rss_mb:.0f} MB", err=True)

        typer.echo(run_memory_benchmark(events, batch_size, rss_every, label_delay, progress).as_text())
        return
    from driftwarden.bench.core import run_core_benchmark

    typer.echo(run_core_benchmark(events, batch_size).as_text())


@bench_cli.command("joiner")
def bench_joiner(
    pending: Annotated[int, typer.Option(help="Pending predictions to fill the joiner with.", min=1)] = 1_000_000,
    events: Annotated[
        int | None, typer.Option(help="Predictions streamed through a joiner bounded at --pending (RSS).", min=1)
    ] = None,
    label_calls: Annotated[
        str, typer.Option(help="Also µs of CPU a joined label in the monitor core, at these labels a call.")
    ] = "1,10,100,1000",
    labels: Annotated[int, typer.Option(help="Labelled predictions for --label-calls.", min=1_000)] = 100_000,
) -> None:
    """Bytes the label joiner holds per pending prediction (tracemalloc), RSS as it stays full, and the CPU a
    joined label costs the monitor core."""
    from driftwarden.bench.joiner import run_joiner_benchmark

    calls = tuple(listed(label_calls, "--label-calls", int))
    typer.echo(run_joiner_benchmark(pending, max(events or pending, pending), calls, labels).as_text())


@bench_cli.command("shards")
def bench_shards(
    events: Annotated[int, typer.Option(help="Events of the one model spread over the workers.", min=1)] = 200_000,
    workers: Annotated[str, typer.Option(help="Worker counts, comma-separated.")] = "1,2,4",
    null_values: Annotated[int, typer.Option(help="Values per family with no change (false alarms).", min=0)] = 200_000,
    delay_runs: Annotated[int, typer.Option(help="Changed streams per family (delays).", min=1)] = 10,
    arl: Annotated[float, typer.Option(help="Mean values between false alarms of a feature's CUSUMs.", min=2)] = 1e3,
    on_broker: Annotated[
        bool, typer.Option(help="Only the throughput, of real monitor workers on an embedded broker (8 shards).")
    ] = False,
) -> None:
    """One model over several workers: throughput at 1, 2, 4 workers, and what deciding per bucket costs."""
    from driftwarden.bench.shards import HEADER, run_bucket_costs, run_scaling, run_window_false_alarms

    if on_broker:
        from driftwarden.bench.shard_trials import run_broker_scaling
        from driftwarden.bench.throughput import bench_broker

        typer.echo("| workers | events | events/s (owner's merged count over time) |\n|---:|---:|---:|")
        with bench_broker() as (base, work):
            counts = tuple(listed(workers, "--workers", int))
            for n, rate in run_broker_scaling(base, work, events, counts):
                typer.echo(f"| {n} | {events:,} | {rate} |")
        return
    typer.echo(HEADER)
    for result in run_scaling(events, 500, tuple(listed(workers, "--workers", int))):
        typer.echo(result.as_row())
    if null_values:
        typer.echo(f"\nCUSUMs at {arl:g} values between false alarms (budget {1e6 / arl:,.0f} per million values):")
        typer.echo("| family | decided | false alarms per million values | mean delay (values), location KL 0.05 |")
        typer.echo("|---|---|---:|---:|")
        for cost in run_bucket_costs(null_values, delay_runs, 20_000, (10, 100, 1_000), arl):
            typer.echo(cost.as_row())
        windows = max(1, null_values // 2_000)
        typer.echo(f"\nWindow tests at level 0.05 (4 references x {windows} windows of 2,000, no change):")
        typer.echo("| family | share of windows rejected |\n|---|---:|")
        for family, share in run_window_false_alarms(4, windows, 0.05).items():
            typer.echo(f"| {family} | {share:.4f} |")


@bench_cli.command("peers")
def bench_peers(
    tools: Annotated[str, typer.Option(help="Comma-separated tools, in this order.")] = (
        "driftwarden-columns,driftwarden-rows,driftwarden-columns-joiner,evidently,nannyml-chunks,nannyml-frame,"
        "river-adwin"
    ),
    rows: Annotated[int, typer.Option(help="Rows in all (the shift comes half way).", min=1_000)] = 200_000,
    chunk: Annotated[int, typer.Option(help="Rows per chunk (driftwarden: per window).", min=100)] = 2_000,
    reference_rows: Annotated[int, typer.Option(help="The first rows, every tool's reference.", min=100)] = 10_000,
    envs_dir: Annotated[Path, typer.Option(help="Where the peers' virtual environments are kept.")] = Path(
        "~/.cache/driftwarden/peer-envs"
    ),
) -> None:
    """The same rows through driftwarden, Evidently, NannyML and River, each in its own process/environment."""
    import tempfile

    from driftwarden.bench.peers import HEADER, run_peers_benchmark

    names = listed(tools, "--tools", str)
    typer.echo(f"{rows:,} rows, reference {reference_rows:,}, chunks of {chunk:,}; num_00/num_01 +0.5σ at half")
    typer.echo(HEADER)
    with tempfile.TemporaryDirectory() as work:
        for result in run_peers_benchmark(names, Path(work), envs_dir.expanduser(), rows, chunk, reference_rows):
            typer.echo(result.as_row())


@bench_cli.command("serving")
def bench_serving(
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated rows per request.")] = "1,32,256",
    requests: Annotated[int, typer.Option(help="Requests per batch size.", min=10)] = 2_000,
    concurrency: Annotated[int, typer.Option(help="Concurrent clients.", min=1)] = 16,
    protocols: Annotated[
        str, typer.Option(help="Comma-separated: v1 (a JSON object per row), v2 (Open Inference Protocol: columns).")
    ] = "v1,v2",
) -> None:
    """Predictions/s and p50/p99 latency of `driftwarden serve` over HTTP, write-back included."""
    from driftwarden.bench.serving import PATHS, run_serving_benchmark

    sizes = listed(batch_sizes, "--batch-sizes", int)
    apis = listed(protocols, "--protocols", str)
    if not apis or set(apis) - set(PATHS):
        raise typer.BadParameter(f"expected some of {', '.join(PATHS)}, got {protocols!r}", param_hint="--protocols")
    typer.echo(f"| protocol | rows/request | requests | predictions/s | p50 ms | p99 ms | onnxruntime alone, rows/s "
               f"| server CPU µs/request | client CPU µs/request |  ({concurrency} clients)")  # fmt: skip
    typer.echo("|---|---|---|---|---|---|---|---|---|")
    for result in run_serving_benchmark(sizes, requests, concurrency, apis):
        typer.echo(result.as_row())


@bench_cli.command("throughput")
def bench_throughput(
    batch_sizes: Annotated[
        str, typer.Option(help="Comma-separated events per message (1 = single events).")
    ] = "1,100,1000",
    columnar_sizes: Annotated[
        str, typer.Option(help="Comma-separated rows per columnar batch (prediction-columns.v1; empty: none).")
    ] = "1000",
    events: Annotated[int, typer.Option(help="Events per run with batch envelopes.", min=1_000)] = 500_000,
    single_events: Annotated[int, typer.Option(help="Events per run with single-event messages.", min=1_000)] = 60_000,
    latency_rate: Annotated[float, typer.Option(help="Steady events/s for the latency run (0: skip).", min=0)] = 5_000,
    latency_models: Annotated[int, typer.Option(help="Model servers sharing that rate.", min=1)] = 25,
    latency_events: Annotated[
        int, typer.Option(help="Events per model in the latency run (drift at 2/3).", min=9_000)
    ] = 12_000,
    memory_events: Annotated[int, typer.Option(help="Events of the memory run (0: skip).", min=0)] = 5_000_000,
    scaling_events: Annotated[int, typer.Option(help="Events of the 1-vs-2-workers run (0: skip).", min=0)] = 400_000,
) -> None:
    """Monitor events/s against raw aiokafka and an empty Faust agent, latency, memory and scaling."""
    from driftwarden.bench.loadtests import run_latency, run_memory, run_scaling
    from driftwarden.bench.throughput import bench_broker, bench_settings, run_throughput_benchmark

    sizes = listed(batch_sizes, "--batch-sizes", int)
    columnar = listed(columnar_sizes, "--columnar-sizes", int)
    with bench_broker() as (base, work):
        if sizes:
            typer.echo(
                "| events/message | events | raw aiokafka+orjson | empty Faust agent | monitor | monitor/raw "
                "| monitor/Faust |\n|---|---|---|---|---|---|---|"
            )
        cpu_lines = []  # after the table
        for result in run_throughput_benchmark(base, work, sizes, events, single_events, columnar):
            typer.echo(result.as_row())
            cpu_lines.append(result.cpu_line())
        for line in filter(None, cpu_lines):
            typer.echo(line)
        if latency_rate:
            settings = bench_settings(base, work, "latency")
            typer.echo(run_latency(settings, work, latency_rate, latency_models, latency_events).as_text())
        if scaling_events:
            rates = run_scaling(bench_settings(base, work, "scaling", partitions=2), work, scaling_events)
            typer.echo(
                f"2 partitions, {scaling_events:,} events: 1 worker {rates[1]} events/s, 2 workers "
                f"{rates[2]} events/s ({rates[2].events_per_s / rates[1].events_per_s:.2f}x)"
            )
        if memory_events:
            typer.echo(run_memory(bench_settings(base, work, "memory"), work, memory_events).as_text())


@bench_cli.command("detection")
def bench_detection(
    out: Annotated[Path, typer.Option(help="Directory for results.md, results.json and the plots.")] = Path(
        "docs/detection-benchmark"
    ),
    seeds: Annotated[int, typer.Option(help="Seeds per concept stream and for the stable stream.", min=1)] = 3,
    concepts: Annotated[int, typer.Option(help="Concepts per concept stream.", min=2)] = 10,
    concept_length: Annotated[int, typer.Option(help="Events per concept.", min=500)] = 5_000,
    gradual_width: Annotated[int, typer.Option(help="Events a gradual change takes.", min=2)] = 1_000,
    shift_seeds: Annotated[int, typer.Option(help="Seeds per feature-shift stream.", min=1)] = 10,
    shift_events: Annotated[int, typer.Option(help="Events per feature-shift stream.", min=10_000)] = 40_000,
    stable_events: Annotated[
        int, typer.Option(help="Events per stable stream (false alarms).", min=10_000)
    ] = 1_000_000,
    workers: Annotated[int, typer.Option(help="Processes (0: one per core).", min=0)] = 0,
    parts: Annotated[
        str, typer.Option(help="Comma-separated: concepts, features, shapes.")
    ] = "concepts,features,shapes",
    shape_seeds: Annotated[int, typer.Option(help="Seeds per shape family.", min=1)] = 10,
    shape_stable_events: Annotated[
        int, typer.Option(help="Unchanged values per shape family and seed (false alarms).", min=1_000)
    ] = 111_112,
    kl_sizes: Annotated[str, typer.Option(help="KL(post || pre) sizes of the shape changes.")] = "0.02,0.05,0.2",
    kswin_seeds: Annotated[int, typer.Option(help="Shape seeds whose change streams KSWIN also watches.", min=0)] = 2,
    shape_reference_size: Annotated[
        int, typer.Option(help="Values of each shape stream's reference (training data: more).", min=1_000)
    ] = 5_000,
    shape_families: Annotated[str, typer.Option(help="Shape families (default: all).")] = "",
    feature_streams: Annotated[str, typer.Option(help="Comma-separated feature streams (default: all).")] = "",
    concept_detector: Annotated[
        list[str] | None,
        typer.Option(help="A configuration run on concept streams, e.g. 'driftwarden (default)' (repeat; none: all)."),
    ] = None,
) -> None:
    """Detection quality (delay, misses, false alarms) against River's detectors and dummy baselines."""
    from driftwarden.bench.detection import (
        Settings,
        as_json,
        error_stream_configurations,
        markdown,
        pooled,
        run_detection_benchmark,
        summary_table,
    )
    from driftwarden.bench.detection_corpus import (
        ALL_FAMILIES,
        DRIFTWARDEN,
        STREAMING,
        CorpusSettings,
        change_table,
        corpus_json,
        corpus_targets,
        family_table,
        run_corpus,
    )
    from driftwarden.bench.detection_plots import plot_run
    from driftwarden.bench.detection_streams import CONCEPTS, FEATURE_STREAMS, FeatureStreamName

    if gradual_width > concept_length:
        raise typer.BadParameter("--gradual-width must not exceed --concept-length")
    chosen = set(listed(parts, "--parts", str))
    if not chosen or chosen - {"concepts", "features", "shapes"}:
        raise typer.BadParameter("--parts takes concepts, features and/or shapes")
    sizes = tuple(listed(kl_sizes, "--kl-sizes", float))
    streams = tuple(listed(feature_streams, "--feature-streams", str)) or FEATURE_STREAMS
    if set(streams) - set(FEATURE_STREAMS):
        raise typer.BadParameter(f"--feature-streams takes {', '.join(FEATURE_STREAMS)}")
    configurations = tuple(concept_detector or ())
    known = tuple(error_stream_configurations(Settings().period))
    if set(configurations) - set(known):
        raise typer.BadParameter(f"--concept-detector takes one of: {'; '.join(known)}")
    settings = Settings(
        seeds=seeds,
        n_concepts=concepts,
        concept_length=concept_length,
        gradual_width=gradual_width,
        shift_seeds=shift_seeds,
        shift_events=shift_events,
        shift_onset=shift_events // 2,
        stable_events=stable_events,
        generators=tuple(CONCEPTS) if "concepts" in chosen else (),
        concept_configurations=configurations,
        feature_streams=cast("tuple[FeatureStreamName, ...]", streams) if "features" in chosen else (),
    )
    out.mkdir(parents=True, exist_ok=True)
    runs = run_detection_benchmark(settings, workers) if chosen - {"shapes"} else []
    rows = pooled(runs)
    report = f"{summary_table(rows)}\n{markdown(rows, settings)}\n" if runs else ""
    if "shapes" in chosen:
        families = tuple(listed(shape_families, "--shape-families", str)) or ALL_FAMILIES
        if set(families) - set(ALL_FAMILIES):
            raise typer.BadParameter(f"--shape-families takes {', '.join(ALL_FAMILIES)}")
        corpus = CorpusSettings(shape_seeds, shape_stable_events, sizes, families, shape_reference_size,
                                kswin_seeds=kswin_seeds)  # fmt: skip
        shape_rows = run_corpus(corpus, workers)
        (out / "shapes.json").write_bytes(corpus_json(shape_rows))
        verdicts = [
            f"- {'met' if met else 'NOT met'}: {t} ({e})"
            for configuration in (DRIFTWARDEN, STREAMING)
            for t, met, e in corpus_targets(shape_rows, corpus, configuration)
        ]
        report += "\n".join(["## Shape corpus", "", f"Each stream's reference: {corpus.reference_size:,} values.", "",
                              family_table(shape_rows),
                              f"Targets, {DRIFTWARDEN} (first four) and {STREAMING} (last four):", *verdicts, "",
                              "Per change, the streaming detector alone → the default set:", "",
                              change_table(shape_rows), ""])  # fmt: skip
    (out / "results.md").write_text(report)
    (out / "results.json").write_bytes(as_json(runs, rows, settings))
    for run in runs:
        if run.seed == 0:
            plot_run(run, out / f"{run.stream.replace('/', '-')}.png")
    typer.echo(report)
    typer.echo(f"wrote {out}/results.md, results.json, shapes.json and one plot per stream")


@cli.command()
def faults(
    trials: Annotated[int, typer.Option(help="kill -9 trials in all (runs of up to 6 kills).", min=1)] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the first run (each run adds one).")] = 1,
    parallel: Annotated[int, typer.Option(help="Runs side by side (each with its own topics).", min=1)] = 3,
    work_dir: Annotated[Path, typer.Option(help="Broker and worker logs.")] = Path(".driftwarden/faults"),
) -> None:
    """Soak: kill -9 monitor workers at random moments under live load; one row per run (exit 1 on a failure)."""
    from driftwarden.bench.kill_trials import RunResult, default_runs, run_all, trial_broker

    runs = default_runs(trials, seed)
    failed = False
    work_dir.mkdir(parents=True, exist_ok=True)
    with trial_broker(work_dir) as base:
        typer.echo(RunResult.HEADER)
        for i in range(0, len(runs), parallel):
            for result in run_all(base, work_dir, runs[i : i + parallel]):
                typer.echo(result.as_row())
                failed |= not result.ok
    if failed:
        raise typer.Exit(1)


@cli.command()
def demo(
    events: Annotated[int, typer.Option(help="Predictions to produce.", min=2_000)] = 60_000,
    rate: Annotated[float, typer.Option(help="Events per second.", min=100)] = 3_000.0,
    work_dir: Annotated[Path, typer.Option(help="Logs and state of the demo.")] = Path(".driftwarden/demo"),
    loop_events: Annotated[
        int, typer.Option(help="Requests sent to serving in the retraining loop.", min=15_000)
    ] = 36_000,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Keep the live page serving after the summary until Ctrl-C.")
    ] = True,
) -> None:
    """Run everything on this machine: broker, monitor, trainer, serving, drifting load, the live page; print a
    summary."""
    import shutil

    from driftwarden.demo import run_demo

    shutil.rmtree(work_dir / "registry", ignore_errors=True)  # each demo starts from a fresh registry
    run_demo(work_dir, n_events=events, rate=rate, loop_events=loop_events, wait=wait)


def main() -> None:
    """Entry point: run the CLI, turning expected errors into one line on stderr."""
    try:
        exit_code = cli(standalone_mode=False)  # a command's typer.Exit(code) comes back as its code
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: bad option, unknown command, ...
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        typer.echo(f"driftwarden: error: {message}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except USER_ERRORS as exc:
        if Options.debug:
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, ValidationError):
            message = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"].removeprefix("Value error, ")
                for e in exc.errors()
            )
        typer.echo(f"driftwarden: error: {message}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    if isinstance(exit_code, int) and exit_code:
        sys.exit(exit_code)
