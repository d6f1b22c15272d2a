"""The pure core of alert delivery: routing, payloads, signatures, retry decisions, open alerts.

Nothing here does I/O; :mod:`driftwarden.notify.service` sends what these functions build.

**Alertmanager** (``POST /api/v2/alerts``): labels ``alertname``, ``model_id``, ``model_version``,
``kind``, ``subject``, ``severity``; annotations ``summary``, ``evidence`` (JSON), ``alert_id``,
``fingerprint``, ``detector``. A firing alert is sent with ``endsAt`` four resend intervals ahead and
re-sent every interval while open, so Alertmanager never times it out on its own (its
``resolve_timeout`` only applies to alerts without ``endsAt``); the resolve is sent with the *firing*
alert's labels (the monitor's resolve event carries severity ``info``, and Alertmanager identifies an
alert by its label set) and ``endsAt`` = the resolve time.

**Webhook**: one CloudEvent 1.0 in structured JSON mode (``application/cloudevents+json``), ``id`` =
the alert id, ``data`` = the alert.v1 event. Headers ``X-Driftwarden-Timestamp: T`` and
``X-Driftwarden-Signature: t=T,v1=HEX`` with HEX = HMAC-SHA256(secret, ``T.`` + body). A receiver must
(1) recompute and compare in constant time (:func:`verify_signature` does it), (2) reject a timestamp
more than 5 minutes from its clock (replays), and (3) dedupe by the CloudEvent ``id``: delivery is
at-least-once, so after a retry or a restart the same alert can arrive twice, always with the same id.
Retries are re-signed with a fresh timestamp.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import orjson

from driftwarden.core.events import Alert
from driftwarden.notify.config import NotifyConfig, Receiver, RetryPolicy

SIGNATURE_HEADER = "X-Driftwarden-Signature"
TIMESTAMP_HEADER = "X-Driftwarden-Timestamp"
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
#: A firing alert's endsAt lies this many resend intervals ahead.
ENDS_AHEAD_INTERVALS = 4
Outcome = Literal["delivered", "retry", "reject"]


@dataclass(frozen=True)
class Request:
    """One HTTP POST to make (headers that depend on the send time are added by :func:`signed_headers`)."""

    receiver: str
    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def routes(config: NotifyConfig, alert: Alert) -> list[Receiver]:
    """The receivers an alert goes to: severity, model (glob) and kind all match the receiver's lists.

    A resolve follows its firing alert's route, so route on the alert whose labels are sent.
    """
    return [r for r in config.receivers if _matches(r, alert)]


def _matches(receiver: Receiver, alert: Alert) -> bool:
    return (
        (not receiver.severities or alert.severity in receiver.severities)
        and (not receiver.models or any(fnmatch.fnmatchcase(alert.model_id, p) for p in receiver.models))
        and (not receiver.kinds or alert.kind in receiver.kinds)
    )


def rfc3339(ts: float) -> str:
    """>>> rfc3339(1767225600.25)
    '2026-01-01T00:00:00.250000Z'
    """
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def alertname(kind: str) -> str:
    """>>> alertname("data_drift")
    'DriftwardenDataDrift'
    """
    return "Driftwarden" + "".join(part.capitalize() for part in kind.split("_"))


def alertmanager_alert(firing: Alert, ends_at: float) -> dict[str, object]:
    """One alert of Alertmanager's v2 API, labelled by the firing alert, ending at ``ends_at``."""
    return {
        "labels": {
            "alertname": alertname(firing.kind),
            "model_id": firing.model_id,
            "model_version": firing.model_version,
            "kind": firing.kind,
            "subject": firing.subject,
            "severity": firing.severity,
        },
        "annotations": {
            "summary": firing.summary,
            "evidence": orjson.dumps(firing.evidence, option=orjson.OPT_SORT_KEYS).decode(),
            "alert_id": firing.alert_id,
            "fingerprint": firing.fingerprint,
            "detector": firing.detector,
        },
        "startsAt": rfc3339(firing.ts),
        "endsAt": rfc3339(max(ends_at, firing.ts)),
    }


def alertmanager_request(receiver: Receiver, alerts: list[dict[str, object]]) -> Request:
    url = str(receiver.url).rstrip("/") + "/api/v2/alerts"
    return Request(receiver.name, url, orjson.dumps(alerts), {"Content-Type": "application/json"})


def cloudevent(alert: Alert) -> bytes:
    """The alert as a CloudEvent 1.0, structured JSON mode."""
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": alert.alert_id,
            "source": "/driftwarden/monitor",
            "type": f"dev.driftwarden.alert.{alert.state}",
            "subject": f"{alert.model_id}/{alert.model_version}/{alert.kind}/{alert.subject}",
            "time": rfc3339(alert.ts),
            "datacontenttype": "application/json",
            "dataschema": "https://driftwarden.dev/schemas/alert.v1.json",
            "data": orjson.loads(alert.to_json()),
        }
    )


def webhook_request(receiver: Receiver, alert: Alert) -> Request:
    return Request(receiver.name, str(receiver.url), cloudevent(alert), {"Content-Type": CLOUDEVENTS_CONTENT_TYPE})


def signature(secret: bytes, body: bytes, timestamp: int) -> str:
    """The signature header's value.

    >>> signature(b"k", b"{}", 1700000000)
    't=1700000000,v1=c6ef4734033cee2367414a0939385eca0397754aa7a59716da7463a9298b5146'
    """
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def signed_headers(secret: bytes, body: bytes, now: float) -> dict[str, str]:
    timestamp = int(now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, body, timestamp)}


def verify_signature(secret: bytes, header: str, body: bytes, now: float, tolerance_s: float = 300.0) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` at a time within ``tolerance_s`` of ``now``."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, body, timestamp), header.strip())


def outcome(status: int) -> Outcome:
    """What an HTTP status means for a delivery: done, try again, or give up now.

    >>> [outcome(s) for s in (200, 202, 400, 404, 408, 429, 500, 503)]
    ['delivered', 'delivered', 'reject', 'reject', 'retry', 'retry', 'retry', 'retry']
    """
    if 200 <= status < 300:
        return "delivered"
    if status in (408, 425, 429) or status >= 500:
        return "retry"
    return "reject"


def wait_before_retry(policy: RetryPolicy, attempts_made: int) -> float | None:
    """Seconds to wait before the next attempt, or ``None`` once ``attempts_made`` used up the budget.

    >>> policy = RetryPolicy(attempts=3, initial_s=1, max_s=10)
    >>> [wait_before_retry(policy, n) for n in (1, 2, 3)]
    [1.0, 2.0, None]
    """
    delays = policy.delays()
    return delays[attempts_made - 1] if attempts_made <= len(delays) else None


@dataclass
class OpenAlerts:
    """The firing alerts by fingerprint, so resolves carry their labels and firing ones are re-sent."""

    firing: dict[str, Alert] = field(default_factory=dict)

    def observe(self, alert: Alert) -> Alert:
        """Record an alert event; return the alert whose labels and route describe it."""
        if alert.state == "firing":
            self.firing[alert.fingerprint] = alert
            return alert
        return self.firing.pop(alert.fingerprint, alert)

    def resend(self, config: NotifyConfig, receiver: Receiver, now: float) -> Request | None:
        """The refresh of every open alert routed to an Alertmanager receiver, or ``None`` if none."""
        ends = now + ENDS_AHEAD_INTERVALS * receiver.resend_interval_s
        alerts = [alertmanager_alert(a, ends) for a in self.firing.values() if receiver in routes(config, a)]
        return alertmanager_request(receiver, alerts) if alerts else None


def requests_for(config: NotifyConfig, open_alerts: OpenAlerts, alert: Alert, now: float) -> list[Request]:
    """Record ``alert`` in ``open_alerts`` and build one request per receiver it is routed to."""
    labels = open_alerts.observe(alert)
    requests = []
    for receiver in routes(config, labels):
        if receiver.type == "webhook":
            requests.append(webhook_request(receiver, alert))
            continue
        ends = alert.ts if alert.state == "resolved" else now + ENDS_AHEAD_INTERVALS * receiver.resend_interval_s
        requests.append(alertmanager_request(receiver, [alertmanager_alert(labels, ends)]))
    return requests
