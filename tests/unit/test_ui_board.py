"""The live page's board: what it keeps from statuses, alerts and verdicts, and what it sends again."""

from __future__ import annotations

import uuid

from driftwarden.core.events import Alert, ModelPublished, MonitorStatus, MonitorStatusV1, alert_fingerprint
from driftwarden.ui.board import HISTORY, Board

GROUP = "driftwarden-monitor"


def status(ts: float, window: list[tuple[str, str, str, float]], accuracy: float | None = None,
           group: str = GROUP) -> MonitorStatus:  # fmt: skip
    return counters(ts, window, accuracy).published(group, "host:1")


def counters(ts: float, window: list[tuple[str, str, str, float]], accuracy: float | None = None) -> MonitorStatusV1:
    return MonitorStatusV1(model_id="fraud", ts=ts, model_version="1", events_processed=int(ts),
                           events_dead_lettered=0, alerts_fired=0,
                           performance={"accuracy": accuracy, "estimated_accuracy": 0.9},
                           window_statistics=window)  # fmt: skip


def alert(state: str, subject: str, kind: str = "data_drift") -> Alert:
    return Alert(alert_id=str(uuid.uuid4()), fingerprint=alert_fingerprint("fraud", "1", kind, subject, "ks"),
                 state=state, severity="critical" if state == "firing" else "info", kind=kind, model_id="fraud",
                 model_version="1", subject=subject, detector="ks", ts=5.0, summary=f"{subject} moved",
                 evidence={"psi": 0.4})  # fmt: skip


def test_each_new_window_adds_a_point_per_feature_and_a_repeated_one_does_not():
    board = Board(GROUP)
    board.status(status(1.0, [("data_drift", "amount", "psi", 0.1), ("data_drift", "amount", "wasserstein_normed",
                                                                          0.05)]))  # fmt: skip
    board.status(status(2.0, [("data_drift", "amount", "psi", 0.1), ("data_drift", "amount", "wasserstein_normed",
                                                                          0.05)]))  # fmt: skip
    board.status(
        status(
            3.0,
            [
                ("data_drift", "amount", "wasserstein_normed", 0.5),
                ("data_drift", "city", "js_distance", 0.2),
                ("data_quality", "amount/missing", "rate", 0.3),
            ],
            accuracy=0.8,
        )
    )
    view = board.view("fraud")
    assert view["ts"] == [1.0, 3.0]
    assert view["drift"] == {"amount": [0.05, 0.5], "city": [None, 0.2]}  # data quality is not a feature's drift
    assert view["accuracy"] == [None, 0.8] and view["estimated_accuracy"] == [0.9, 0.9]
    assert view["status"]["events_processed"] == 3
    assert view["features"]["city"] == {"state": "stable", "statistic": "js_distance", "value": 0.2}


def test_history_is_bounded():
    board = Board(GROUP)
    for i in range(HISTORY + 10):
        board.status(status(float(i), [("data_drift", "amount", "psi", float(i)),
                                       ("data_drift", "amount", "wasserstein_normed", float(i))]))  # fmt: skip
    view = board.view("fraud")
    assert len(view["ts"]) == len(view["drift"]["amount"]) == HISTORY and view["ts"][0] == 10.0


def test_a_feature_fires_while_its_alert_is_open_and_the_resolved_alert_keeps_its_evidence():
    board = Board(GROUP)
    board.status(status(1.0, [("data_drift", "amount", "wasserstein_normed", 0.5)]))
    board.alert(alert("firing", "amount"))
    board.alert(alert("firing", "score", kind="prediction_drift"))
    board.alert(alert("firing", "numeric_features", kind="multivariate_drift"))
    view = board.view("fraud")
    assert {name: f["state"] for name, f in view["features"].items()} == {"amount": "firing", "score": "firing"}
    assert [a["subject"] for a in view["open_alerts"]] == ["amount", "score", "numeric_features"]
    board.alert(alert("resolved", "amount"))
    view = board.view("fraud")
    assert view["features"]["amount"]["state"] == "stable"
    (resolved,) = view["resolved_alerts"]
    assert resolved["subject"] == "amount" and resolved["evidence"] == {"psi": 0.4} and resolved["fired_ts"] == 5.0


def test_versions_show_their_latest_verdict_rollout_and_history():
    board = Board(GROUP)
    command = str(uuid.uuid4())
    board.verdict(ModelPublished(model_id="fraud", model_version="2", status="canary", ts=10, command_id=command,
                                 traffic_fraction=0.1, metrics={"accuracy": 0.91}, parent_version="1"))  # fmt: skip
    board.verdict(ModelPublished(model_id="fraud", model_version="2", status="promoted", ts=20, command_id=command,
                                 reason="canary held", metrics={"accuracy": 0.92}))  # fmt: skip
    (version,) = board.view("fraud")["versions"]
    assert version["status"] == "promoted" and version["accuracy"] == 0.92 and version["reason"] == "canary held"
    assert [h["status"] for h in version["history"]] == ["canary", "promoted"]


def test_only_models_that_changed_since_a_client_saw_them_are_sent_again():
    board = Board(GROUP)
    board.status(status(1.0, []))
    seen = {"fraud": board.view("fraud")["revision"]}
    assert board.changed_since(seen) == []
    board.alert(alert("firing", "amount").model_copy(update={"model_id": "churn"}))
    assert board.changed_since(seen) == ["churn"]
    board.alert(alert("firing", "amount"))
    assert board.changed_since(seen) == ["churn", "fraud"]


def test_a_page_shows_its_groups_statuses_and_v1_ones_and_only_names_the_other_groups():
    board = Board(GROUP)
    board.status(counters(1.0, [("data_drift", "amount", "psi", 0.1), ("data_drift", "amount", "js_distance", 0.1)]))
    board.status(status(2.0, [("data_drift", "amount", "js_distance", 0.2)]))
    board.status(status(3.0, [("data_drift", "amount", "js_distance", 0.9)], group="canary"))
    revision = board.revision
    board.status(status(4.0, [("data_drift", "amount", "js_distance", 0.8)], group="canary"))
    view = board.view("fraud")
    assert view["drift"]["amount"] == [0.1, 0.2] and view["ts"] == [1.0, 2.0]  # v1, then its group's: no canary's
    assert view["status"]["events_processed"] == 2
    assert (view["group"], view["other_groups"]) == (GROUP, ["canary"])
    assert board.revision == revision  # a group already named changes nothing on the page
