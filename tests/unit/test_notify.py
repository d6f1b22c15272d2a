"""The pure core of ``driftwarden notify``: config, routing, payloads, signatures, retries, open alerts."""

from __future__ import annotations

import hashlib
import hmac
import sys
import uuid

import orjson
import pytest

from driftwarden.cli import main
from driftwarden.core.config import ConfigError
from driftwarden.core.events import Alert, alert_fingerprint
from driftwarden.notify.config import NotifyConfig, RetryPolicy, load_secrets
from driftwarden.notify.delivery import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    OpenAlerts,
    outcome,
    requests_for,
    signed_headers,
    verify_signature,
    wait_before_retry,
)

CONFIG = NotifyConfig.from_toml(
    """
[retry]
attempts = 4
initial_s = 0.5
max_s = 2

[[receivers]]
name = "am"
type = "alertmanager"
url = "http://127.0.0.1:9093/"
resend_interval_s = 30

[[receivers]]
name = "fraud-critical"
type = "webhook"
url = "http://127.0.0.1:8000/hook"
secret_env = "HOOK_SECRET"
severities = ["critical"]
models = ["fraud*"]
"""
)


def alert(state: str = "firing", severity: str = "warning", model_id: str = "fraud-eu", ts: float = 1000.0) -> Alert:
    fingerprint = alert_fingerprint(model_id, "3", "data_drift", "amount", "adwin")
    return Alert(alert_id=str(uuid.uuid4()), fingerprint=fingerprint, state=state, severity=severity,
                 kind="data_drift", model_id=model_id, model_version="3", subject="amount", detector="adwin", ts=ts,
                 summary=f"amount {state}", evidence={"shift_sigma": 1.5, "window": 2000})  # fmt: skip


def test_routing_by_severity_and_model_glob():
    def names(alert: Alert) -> list[str]:
        return [r.receiver for r in requests_for(CONFIG, OpenAlerts(), alert, 0.0)]

    assert names(alert(severity="critical")) == ["am", "fraud-critical"]
    assert names(alert(severity="warning")) == ["am"]
    assert names(alert(severity="critical", model_id="churn")) == ["am"]


def test_alertmanager_payload_has_the_labels_annotations_and_an_end_ahead_of_now():
    (request,) = requests_for(CONFIG, OpenAlerts(), alert(), now=1000.0)
    assert request.url == "http://127.0.0.1:9093/api/v2/alerts"
    (payload,) = orjson.loads(request.body)
    assert payload["labels"] == {"alertname": "DriftwardenDataDrift", "model_id": "fraud-eu", "model_version": "3",
                                 "kind": "data_drift", "subject": "amount", "severity": "warning"}  # fmt: skip
    assert orjson.loads(payload["annotations"]["evidence"]) == {"shift_sigma": 1.5, "window": 2000}
    assert payload["annotations"]["summary"] == "amount firing"
    assert payload["startsAt"] == "1970-01-01T00:16:40.000000Z"
    assert payload["endsAt"] == "1970-01-01T00:18:40.000000Z"  # 4 resend intervals of 30 s ahead


def test_a_resolve_carries_the_firing_alerts_labels_and_ends_at_the_resolve_time():
    book = OpenAlerts()
    firing = alert(severity="critical")
    requests_for(CONFIG, book, firing, 1000.0)
    assert list(book.firing) == [firing.fingerprint]
    resolved = alert(state="resolved", severity="info", ts=1500.0)
    am, hook = requests_for(CONFIG, book, resolved, 1600.0)
    (payload,) = orjson.loads(am.body)
    assert payload["labels"]["severity"] == "critical"  # not "info": same label set, so the same alert
    assert payload["endsAt"] == "1970-01-01T00:25:00.000000Z"
    assert orjson.loads(hook.body)["id"] == resolved.alert_id  # the webhook follows the firing alert's route
    assert book.firing == {}


def test_resend_refreshes_only_open_alerts_routed_to_that_receiver():
    book = OpenAlerts()
    am = CONFIG.receivers[0]
    assert book.resend(CONFIG, am, 2000.0) is None
    requests_for(CONFIG, book, alert(), 1000.0)
    requests_for(CONFIG, book, alert(model_id="churn"), 1000.0)
    request = book.resend(CONFIG, am, 2000.0)
    assert sorted(a["labels"]["model_id"] for a in orjson.loads(request.body)) == ["churn", "fraud-eu"]
    assert book.resend(CONFIG, CONFIG.receivers[1], 2000.0) is None  # webhooks are not refreshed


def test_webhook_body_is_a_structured_cloudevent_with_the_alert_as_data():
    firing = alert(severity="critical")
    _, hook = requests_for(CONFIG, OpenAlerts(), firing, 0.0)
    event = orjson.loads(hook.body)
    assert hook.headers["Content-Type"].startswith("application/cloudevents+json")
    assert {k: event[k] for k in ("specversion", "id", "type", "subject")} == {
        "specversion": "1.0", "id": firing.alert_id, "type": "dev.driftwarden.alert.firing",
        "subject": "fraud-eu/3/data_drift/amount"}  # fmt: skip
    assert Alert.model_validate(event["data"]) == firing


def test_signature_is_hmac_sha256_over_timestamp_and_body_and_verifies_only_fresh_and_intact():
    body, secret = b'{"id": "x"}', b"s3cret"
    headers = signed_headers(secret, body, now=1_700_000_000.7)
    assert headers[TIMESTAMP_HEADER] == "1700000000"
    expected = hmac.new(secret, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"t=1700000000,v1={expected}"
    header = headers[SIGNATURE_HEADER]
    assert verify_signature(secret, header, body, now=1_700_000_100)
    assert not verify_signature(secret, header, body + b" ", now=1_700_000_100)  # tampered body
    assert not verify_signature(b"other", header, body, now=1_700_000_100)  # wrong key
    assert not verify_signature(secret, header, body, now=1_700_000_301)  # a replay, too late
    assert not verify_signature(secret, "v1=abc", body, now=1_700_000_000)  # no timestamp


def test_retry_schedule_is_exponential_bounded_and_finite():
    policy = RetryPolicy(attempts=6, initial_s=0.5, max_s=3)
    assert [wait_before_retry(policy, n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, None]
    assert [outcome(s) for s in (204, 400, 401, 422, 429, 502)] == ["delivered", "reject", "reject", "reject",
                                                                    "retry", "retry"]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[receivers]]\nname = "h"\ntype = "webhook"\nurl = "http://x"', "needs secret_env"),
        ('[[receivers]]\nname = "a"\ntype = "pager"\nurl = "http://x"', "notify.receivers.0.type"),
        ("receivers = []", "notify.receivers"),
        ('[retry]\nattempts = 20\nmax_s = 60\n[[receivers]]\nname = "a"\ntype = "alertmanager"\nurl = "http://x"',
         "retry budget"),
        ('[[receivers]]\nname = "a"\ntype = "alertmanager"\nurl = "http://x"\npassword = "x"', "unknown key"),
        ("[[receivers]", "not valid TOML"),
        ('[[receivers]]\nname = "a"\ntype = "alertmanager"\nurl = "http://u:pw@x"', "no credentials in the URL"),
    ],
)  # fmt: skip
def test_bad_config_names_the_key(text, message):
    with pytest.raises(ConfigError, match=message):
        NotifyConfig.from_toml(text)


def test_secrets_come_from_the_environment_and_never_show_in_reprs():
    with pytest.raises(ConfigError, match="HOOK_SECRET is not set"):
        load_secrets(CONFIG, {})
    secrets = load_secrets(CONFIG, {"HOOK_SECRET": "hunter2"})
    assert secrets["HOOK_SECRET"].get_secret_value() == "hunter2"
    assert "hunter2" not in repr(secrets) and "hunter2" not in str(secrets)


def run_cli(monkeypatch, capsys, *args: str) -> tuple[object, str, str]:
    monkeypatch.setattr(sys, "argv", ["driftwarden", *args])
    code: object = 0
    try:
        main()
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_version_and_debug_flags(monkeypatch, capsys):
    from importlib.metadata import version

    assert run_cli(monkeypatch, capsys, "--version")[:2] == (0, f"driftwarden {version('driftwarden')}\n")
    code, _, err = run_cli(monkeypatch, capsys, "alerts", "--kind", "nope")
    assert code == 1 and err.startswith("driftwarden: error: unknown kind 'nope'") and "Traceback" not in err
    monkeypatch.setattr(sys, "argv", ["driftwarden", "--debug", "alerts", "--kind", "nope"])
    with pytest.raises(Exception, match="unknown kind 'nope'"):  # --debug: the exception itself, traceback and all
        main()


def test_notify_refuses_a_missing_secret_before_connecting(monkeypatch, capsys, tmp_path):
    config = tmp_path / "notify.toml"
    config.write_text('[[receivers]]\nname = "h"\ntype = "webhook"\nurl = "http://x"\nsecret_env = "DW_TEST_NOPE"')
    monkeypatch.delenv("DW_TEST_NOPE", raising=False)
    code, _, err = run_cli(monkeypatch, capsys, "notify", "--config", str(config))
    assert code == 1 and "DW_TEST_NOPE is not set" in err
