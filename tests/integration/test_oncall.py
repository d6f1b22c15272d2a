"""On call, end to end: the real monitor on a drifting stream, `driftwarden notify` as a real process,
a real Alertmanager and Prometheus (Debian's packages, the project's config and rule files), a real
aiohttp webhook receiver checking signatures, the dashboards' PromQL and the on-call CLI."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from helpers_integration import Worker, produce, unique_model
from oncall_stack import ROOT, Server, WebhookReceiver, get_json, poll, start_alertmanager, start_prometheus

from driftwarden.core.events import PREDICTION_BATCH_SCHEMA, Alert, DeadLetter, alert_fingerprint
from driftwarden.kafka.broker import free_port
from driftwarden.kafka.clients import client_options
from driftwarden.kafka.reader import read_topic
from driftwarden.monitor.status import probe_monitor, records_for, wait_for_status
from driftwarden.notify.delivery import alertname
from driftwarden.processes import spawn, terminate, terminate_all
from driftwarden.settings import Settings
from driftwarden_load.producer import envelope
from driftwarden_load.scenarios import Scenario, generate

pytestmark = pytest.mark.integration

SECRET_ENV = "DW_ONCALL_TEST_HOOK_SECRET"
SECRET = uuid.uuid4().hex


@dataclass
class Stack:
    alertmanager: Server
    prometheus: Server
    hook: WebhookReceiver
    notify: Worker


NOTIFY_CONFIG = """
group = "{group}"
[retry]
attempts = 3
initial_s = 0.2
max_s = 0.5
timeout_s = 5
[[receivers]]
name = "am"
type = "alertmanager"
url = "{alertmanager}"
resend_interval_s = 2
models = ["oncall-*"]
[[receivers]]
name = "hook"
type = "webhook"
url = "{hook}"
secret_env = "{secret_env}"
models = ["oncall-*"]
[[receivers]]
name = "nowhere"
type = "webhook"
url = "http://127.0.0.1:{closed_port}/closed"
secret_env = "{secret_env}"
models = ["deadend-*"]
"""


def spawn_notify(kafka: Settings, config: Path, metrics_port: int, log: Path) -> subprocess.Popen[bytes]:
    """``driftwarden notify`` with the webhook secret in its environment (only there)."""
    os.environ[SECRET_ENV] = SECRET
    try:
        return spawn(["notify", "--config", str(config), "--metrics-port", str(metrics_port)], kafka, log)
    finally:
        del os.environ[SECRET_ENV]


@pytest.fixture(scope="module")
def stack(kafka: Settings, monitor_worker: Worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Alertmanager, a webhook receiver (503 once, then 204), notify, a trainer and Prometheus scraping them."""
    work = tmp_path_factory.mktemp("oncall")
    started: list[Server | WebhookReceiver] = []
    children: list[subprocess.Popen[bytes]] = []
    try:
        alertmanager = start_alertmanager(work)
        started.append(alertmanager)
        hook = WebhookReceiver(SECRET.encode(), fail_first=1)
        started.append(hook)
        config = work / "notify.toml"
        group = f"{kafka.topic_prefix}notify"
        config.write_text(NOTIFY_CONFIG.format(group=group, alertmanager=alertmanager.url, hook=hook.url,
                                               secret_env=SECRET_ENV, closed_port=free_port()))  # fmt: skip
        notify_port, trainer_port = free_port(), free_port()
        notify = spawn_notify(kafka, config, notify_port, work / "notify.log")
        children.append(notify)
        trainer_settings = kafka.model_copy(update={"registry_dir": work / "registry", "state_dir": work})
        children.append(spawn(["trainer", "--metrics-port", str(trainer_port)], trainer_settings, work / "trainer.log"))
        targets = {"driftwarden-monitor": f"127.0.0.1:{monitor_worker.metrics_port}",
                   "driftwarden-notify": f"127.0.0.1:{notify_port}",
                   "driftwarden-trainer": f"127.0.0.1:{trainer_port}"}  # fmt: skip
        prometheus = start_prometheus(work, targets, f"127.0.0.1:{alertmanager.port}")
        started.append(prometheus)
        yield Stack(alertmanager, prometheus, hook, Worker(notify, notify_port, work / "notify.log"))
    finally:
        terminate_all(children)
        for part in reversed(started):
            part.stop()


async def send_predictions(kafka: Settings, scenario: Scenario, extra: dict[str, float] | None = None) -> None:
    """A scenario's predictions with fresh event ids (a second stream of a seed), plus ``extra`` fields."""
    producer = AIOKafkaProducer(**client_options(kafka), acks="all")
    await producer.start()
    try:
        for chunk in generate(scenario):
            events = [e | {"event_id": str(uuid.uuid4())} | (extra or {}) for e in chunk.prediction_events()]
            for i in range(0, len(events), 200):
                value = envelope(PREDICTION_BATCH_SCHEMA, scenario.model_id, events[i : i + 200])
                await producer.send(kafka.topics.predictions, value, key=scenario.model_id.encode())
        await producer.flush()
    finally:
        await producer.stop()


@dataclass
class Streams:
    drift: str  # num_00 and num_01 shift at event 10,000 and come back at 30,000
    concept: str  # the label relation changes: performance drift, a retrain command, a verdict
    costly: str  # stable, with latency and cost on every prediction
    firing_in_alertmanager: dict[str, dict[str, Any]] = field(default_factory=dict)  # by fingerprint, during the shift


@pytest.fixture(scope="module")
def streams(kafka: Settings, stack: Stack) -> Streams:
    now = time.time()
    names = Streams(unique_model("oncall-drift"), unique_model("oncall-concept"), unique_model("oncall-costly"))
    shift = Scenario(name="abrupt-shift", n_events=30_000, onset=10_000, model_id=names.drift, start_ts=now)
    produce(kafka, shift, batch_size=200)

    def data_drift_in_alertmanager() -> dict[str, dict[str, Any]]:
        shown = [a for a in am_alerts(stack, names.drift) if a["labels"]["kind"] == "data_drift"]
        return {a["annotations"]["fingerprint"]: a for a in shown} if len(shown) >= 2 else {}

    names.firing_in_alertmanager = poll(data_drift_in_alertmanager, 120, "data-drift alerts in Alertmanager")
    back = Scenario(name="stable", n_events=40_000, model_id=names.drift, start_ts=now + 30)  # same seed: normal again
    asyncio.run(send_predictions(kafka, back))
    concept = Scenario(name="concept-drift", n_events=30_000, onset=10_000, seed=5, model_id=names.concept,
                       start_ts=now)  # fmt: skip
    produce(kafka, concept, batch_size=250, label_delay=400, malformed_every=1_000)  # dead letters too
    costly = Scenario(name="stable", n_events=12_000, seed=9, model_id=names.costly, start_ts=now)
    asyncio.run(send_predictions(kafka, costly, {"latency_ms": 12.5, "cost": 0.002}))
    for model_id, total in ((names.drift, 70_000), (names.concept, 30_000), (names.costly, 12_000)):
        asyncio.run(wait_for_status(kafka, model_id, lambda s, total=total: s.events_processed >= total, 240))
    poll(lambda: am_alerts(stack, names.concept), 60, "the concept model's performance alert in Alertmanager")
    return names


def am_alerts(stack: Stack, model_id: str) -> list[dict[str, Any]]:
    return get_json(f"{stack.alertmanager.url}/api/v2/alerts", {"filter": f'model_id="{model_id}"'})


def topic_alerts(kafka: Settings, model_id: str) -> list[Alert]:
    return [Alert.model_validate_json(v) for v in asyncio.run(records_for(kafka, kafka.topics.alerts, model_id))]


def labels_of(alert: Alert) -> dict[str, str]:
    return {"alertname": alertname(alert.kind), "model_id": alert.model_id, "model_version": alert.model_version,
            "kind": alert.kind, "subject": alert.subject, "severity": alert.severity}  # fmt: skip


def test_drift_alerts_reached_alertmanager_with_their_labels_and_resolved(kafka, stack: Stack, streams: Streams):
    alerts = topic_alerts(kafka, streams.drift)
    firing = {a.fingerprint: a for a in alerts if a.state == "firing"}
    resolved = {a.fingerprint: a for a in alerts if a.state == "resolved"}
    assert {a.subject for a in firing.values() if a.kind == "data_drift"} == {"num_00", "num_01"}
    open_ = [(a.kind, a.subject, a.detector, a.summary) for f, a in firing.items() if f not in resolved]
    assert open_ == []  # the stream went back to normal: the monitor resolved every alert
    # While the shift lasted, Alertmanager had the data-drift alerts with the alert's labels and annotations.
    for alert in (a for a in firing.values() if a.kind == "data_drift"):
        shown = streams.firing_in_alertmanager[alert.fingerprint]
        assert shown["labels"] == labels_of(alert) and shown["status"]["state"] == "active"
        assert shown["annotations"]["summary"] == alert.summary
        assert json.loads(shown["annotations"]["evidence"]) == alert.evidence
    # Back to normal: the resolves reached Alertmanager, which lists none of them any more.
    poll(lambda: am_alerts(stack, streams.drift) == [], 60, "the resolved alerts leaving Alertmanager")


def publish(kafka: Settings, *records: tuple[str, bytes]) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(**client_options(kafka), acks="all")
        await producer.start()
        try:
            for key, value in records:
                await producer.send_and_wait(kafka.topics.alerts, value, key=key.encode())
        finally:
            await producer.stop()

    asyncio.run(send())


def made_alert(model_id: str, state: str, severity: str = "critical", subject: str = "num_03") -> Alert:
    """An alert event as the monitor writes it (for notify-only behaviour the stream cannot stage)."""
    fingerprint = alert_fingerprint(model_id, "2", "data_drift", subject, "adwin")
    return Alert(alert_id=str(uuid.uuid4()), fingerprint=fingerprint, state=state, severity=severity,
                 kind="data_drift", model_id=model_id, model_version="2", subject=subject, detector="adwin",
                 ts=time.time(), summary=f"{subject} moved", evidence={"shift_sigma": 3.2})  # fmt: skip


def test_a_firing_alert_is_labelled_refreshed_before_it_ends_and_resolved_with_its_labels(kafka, stack: Stack):
    model_id = unique_model("oncall-refresh")
    firing = made_alert(model_id, "firing")
    publish(kafka, (model_id, firing.to_json()))
    (shown,) = poll(lambda: am_alerts(stack, model_id), 60, "the alert in Alertmanager")
    assert shown["labels"] == labels_of(firing)
    assert shown["annotations"]["summary"] == firing.summary
    assert json.loads(shown["annotations"]["evidence"]) == firing.evidence
    assert shown["annotations"]["alert_id"] == firing.alert_id
    first_end = datetime.fromisoformat(shown["endsAt"]).timestamp()
    # endsAt is 4 resend intervals (8 s) ahead; notify re-sends every 2 s, so it is still active later.
    poll(lambda: time.time() > first_end + 3, 30, "the first endsAt passing")
    (still,) = am_alerts(stack, model_id)
    assert still["status"]["state"] == "active" and datetime.fromisoformat(still["endsAt"]).timestamp() > time.time()
    resolve = made_alert(model_id, "resolved", severity="info").model_copy(update={"fingerprint": firing.fingerprint})
    publish(kafka, (model_id, resolve.to_json()))
    poll(lambda: am_alerts(stack, model_id) == [], 60, "the resolved alert leaving Alertmanager")


def test_the_webhook_got_each_alert_as_a_signed_cloudevent_despite_a_503(kafka, stack: Stack, streams: Streams):
    alerts = {a.alert_id: a for a in topic_alerts(kafka, streams.drift)}
    received = poll(lambda: alerts.keys() <= stack.hook.events.keys() and stack.hook.events, 60, "webhook events")
    for alert_id, alert in alerts.items():
        event = received[alert_id]
        assert event["type"] == f"dev.driftwarden.alert.{alert.state}" and event["specversion"] == "1.0"
        assert Alert.model_validate(event["data"]) == alert
    assert stack.hook.bad_signatures == 0
    assert stack.hook.signed_deliveries > len(stack.hook.events)  # the first answer was 503: retried


def test_malformed_and_undeliverable_alerts_are_dead_lettered_and_delivery_goes_on(kafka, stack: Stack):
    model_id = unique_model("deadend")
    stuck = made_alert(model_id, "firing")
    publish(kafka, (model_id, b'{"not": "an alert"}'), (model_id, stuck.to_json()))
    after = made_alert(unique_model("oncall-after"), "firing")
    publish(kafka, (after.model_id, after.to_json()))
    poll(lambda: am_alerts(stack, after.model_id), 60, "an alert after the bad ones reaching Alertmanager")

    def letters() -> list[DeadLetter]:
        values = asyncio.run(records_for(kafka, kafka.topics.dead_letters, model_id))
        return [DeadLetter.model_validate_json(v) for v in values]

    invalid, undeliverable = poll(lambda: len(found := letters()) >= 2 and found, 60, "two dead letters")
    assert invalid.reason.startswith("invalid alert:") and invalid.source_topic == kafka.topics.alerts
    assert undeliverable.reason.startswith("receiver nowhere: gave up after 3 attempts")
    assert stuck.alert_id in undeliverable.reason
    assert Alert.model_validate_json(base64.b64decode(undeliverable.payload_b64)) == stuck
    # Prometheus' rule on notify's dead letters fires and reaches Alertmanager.
    rule = {"filter": 'alertname="DriftwardenAlertDeliveryFailing"'}
    poll(lambda: get_json(f"{stack.alertmanager.url}/api/v2/alerts", rule), 90, "the delivery-failing rule")


def test_offsets_are_committed_once_everything_is_delivered(kafka, stack: Stack, streams: Streams):
    async def behind() -> dict[int, tuple[int, int]]:
        """Partitions of the alerts topic where notify's committed offset is short of the high-water mark."""
        consumer = AIOKafkaConsumer(**client_options(kafka), group_id=f"{kafka.topic_prefix}notify",
                                    enable_auto_commit=False)  # fmt: skip
        await consumer.start()
        try:
            topic = kafka.topics.alerts
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            while any(consumer.highwater(tp) is None for tp in partitions):
                await consumer.getmany(timeout_ms=200)
            committed = {tp: await consumer.committed(tp) or 0 for tp in partitions}
            return {tp.partition: (committed[tp], consumer.highwater(tp)) for tp in partitions
                    if committed[tp] != consumer.highwater(tp)}  # fmt: skip
        finally:
            await consumer.stop()

    poll(lambda: asyncio.run(behind()) == {} or None, 60, "notify's committed offsets reaching the end of the topic")


def test_prometheus_runs_the_project_rules_and_knows_alertmanager(stack: Stack, streams: Streams):
    groups = get_json(f"{stack.prometheus.url}/api/v1/rules")["data"]["groups"]
    assert {g["name"] for g in groups} == {"driftwarden-operations", "driftwarden-recording"}
    rules = [r for g in groups for r in g["rules"]]
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    managers = get_json(f"{stack.prometheus.url}/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
    assert [m["url"] for m in managers] == [f"{stack.alertmanager.url}/api/v2/alerts"]


def dashboard_queries() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted((ROOT / "deploy/grafana/dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                found.append((path.stem, f"variable {variable['name']}", variable["query"]["query"]))
        for panel in dashboard["panels"]:
            found += [(path.stem, panel["title"], target["expr"]) for target in panel["targets"]]
    return found


@pytest.mark.parametrize(("dashboard", "title", "expr"), dashboard_queries())
def test_every_dashboard_query_returns_data_after_the_drifting_stream(stack: Stack, streams: Streams, dashboard,
                                                                      title, expr):  # fmt: skip
    if expr.startswith("label_values("):
        metric, label = expr.removeprefix("label_values(").removesuffix(")").split(", ")
        values = get_json(f"{stack.prometheus.url}/api/v1/label/{label}/values", {"match[]": metric})["data"]
        assert {streams.drift, streams.concept, streams.costly} <= set(values)
        return
    query = expr.replace("$model_id", "oncall-.*").replace("$__rate_interval", "1m")

    def result() -> list[dict[str, Any]]:
        answer = get_json(f"{stack.prometheus.url}/api/v1/query", {"query": query})
        assert answer["status"] == "success"
        return answer["data"]["result"]

    poll(result, 30, f"data for {dashboard}: {title}: {query}")


def test_cli_alerts_since_seeks_by_timestamp_and_filters(kafka, stack: Stack, streams: Streams):
    async def stamped() -> list[tuple[int, int, int, Alert]]:
        return [(r.timestamp, r.partition, r.offset, Alert.model_validate_json(r.value))
                async for r in read_topic(kafka, kafka.topics.alerts) if r.key == streams.drift.encode()]  # fmt: skip

    records = asyncio.run(stamped())
    first_resolve = min(r for r in records if r[3].state == "resolved")
    # The broker answers ListOffsets by timestamp (aiokafka offsets_for_times) with the first record at or after it.
    found = asyncio.run(offsets_for(kafka, first_resolve[0], first_resolve[1]))
    assert found == min(offset for ts, partition, offset, _ in records
                        if partition == first_resolve[1] and ts >= first_resolve[0])  # fmt: skip
    since = datetime.fromtimestamp(first_resolve[0] / 1000, UTC).isoformat()
    out = run_cli(kafka, "alerts", "--no-follow", "--json", "--since", since, "--model-id", streams.drift,
                  "--kind", "data_drift")  # fmt: skip
    shown = [Alert.model_validate_json(line) for line in out.splitlines()]
    expected = [r[3] for r in records if r[0] >= first_resolve[0] and r[3].kind == "data_drift"]
    assert sorted(a.alert_id for a in shown) == sorted(a.alert_id for a in expected) and expected
    assert {a.state for a in shown} == {"resolved"}


async def offsets_for(kafka: Settings, timestamp_ms: int, partition: int) -> int:
    consumer = AIOKafkaConsumer(**client_options(kafka), group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(kafka.topics.alerts, partition)
        return (await consumer.offsets_for_times({tp: timestamp_ms}))[tp].offset
    finally:
        await consumer.stop()


def run_cli(kafka: Settings, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")} | kafka.to_env()
    result = subprocess.run([sys.executable, "-m", "driftwarden", *args], env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_cli_status_shows_counters_accuracy_and_the_same_open_alerts_as_alertmanager(kafka, stack, streams):
    (line,) = run_cli(kafka, "status", "--json", "--model-id", streams.concept).splitlines()
    status = json.loads(line)
    assert status["events_processed"] == 30_000 and status["label_joins"]["joined"] > 25_000
    assert 0 < status["performance"]["accuracy"] < 1
    open_alerts = {a["fingerprint"] for a in status["open_alerts"]}
    assert open_alerts and all(a["state"] == "firing" for a in status["open_alerts"])
    poll(lambda: {a["annotations"]["fingerprint"] for a in am_alerts(stack, streams.concept)} == open_alerts, 30,
         "Alertmanager showing the same open alerts")  # fmt: skip
    text = run_cli(kafka, "status", "--model-id", streams.concept)
    assert text.startswith(f"{streams.concept} v1  group {kafka.monitor_group} (") and "  open: " in text
    assert "  processed 30,000  " in text
    # Everything was processed: once the monitor committed, its lag on the model's partition is 0.
    poll(lambda: json.loads(run_cli(kafka, "status", "--json", "--model-id", streams.concept))["lag"] == 0, 60,
         "the monitor's committed lag reaching 0")  # fmt: skip
    asyncio.run(probe_monitor(kafka, timeout_s=60))  # reading the group's offsets left the monitor working


def test_an_alert_in_flight_when_notify_stops_is_delivered_after_the_restart(kafka, stack: Stack, tmp_path):
    receiver = WebhookReceiver(SECRET.encode(), fail_first=10_000)  # down until told otherwise
    config = tmp_path / "notify.toml"
    config.write_text(f"""
group = "{kafka.topic_prefix}notify-restart"
[retry]
attempts = 20
initial_s = 0.5
max_s = 2
timeout_s = 2
[[receivers]]
name = "flaky"
type = "webhook"
url = "{receiver.url}"
secret_env = "{SECRET_ENV}"
models = ["restart-*"]
""")

    def retrying(process: subprocess.Popen[bytes]) -> bool:
        if process.poll() is not None:
            pytest.fail(f"notify exited: {(tmp_path / 'notify.log').read_text()[-2000:]}")
        return receiver.signed_deliveries >= 2

    alert = made_alert(unique_model("restart"), "firing")
    publish(kafka, (alert.model_id, alert.to_json()))
    process = spawn_notify(kafka, config, 0, tmp_path / "notify.log")
    try:
        poll(lambda: retrying(process), 90, "notify retrying the alert")
        process.terminate()  # a stop in the middle of the retries: no commit, and no waiting for the budget
        assert process.wait(10) == 0
        assert receiver.events == {}
        receiver.fail_first = 0
        process = spawn_notify(kafka, config, 0, tmp_path / "notify.log")
        event = poll(lambda: receiver.events.get(alert.alert_id), 90, "the alert after the restart")
        assert Alert.model_validate(event["data"]) == alert
    finally:
        terminate(process)
        receiver.stop()
