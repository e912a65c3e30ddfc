"""Alerts by webhook: per-task `notify`, the default webhook, signatures, retries, one alert for a failed parent."""
from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from tests.ops.ops_helpers import WEBHOOK_SECRET, Webhook, free_port
from scheduler_service.config import ConfigError, load_settings
from scheduler_service.engine.records import FinishedRun
from scheduler_service.extensions import db
from scheduler_service.masking import mask_url
from scheduler_service.ops.alerts import AlertIntake, Target, finished_events, target_for
from scheduler_service.ops.delivery import (
    DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, AlertSender, delivery_retry_policy,
    signature, verify_signature,
)
from scheduler_service.models import Task
from scheduler_service.ops.models import Alert

FAIL = {"type": "shell", "command": "echo broken >&2; exit 3"}
NOW = datetime(2026, 11, 28, 2, 0, tzinfo=timezone.utc)


def alerts(client, **filters) -> list[dict]:
    response = client.get("/api/alerts/", query_string=filters)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def assert_signed(item: dict) -> None:
    headers = item["headers"]
    assert verify_signature(WEBHOOK_SECRET, headers[TIMESTAMP_HEADER], item["body"], headers[SIGNATURE_HEADER])
    assert not verify_signature("another-secret-xxxxxxxx", headers[TIMESTAMP_HEADER], item["body"],
                                headers[SIGNATURE_HEADER])


# --- delivered, signed, recorded -----------------------------------------------------------------


def test_a_failure_after_the_last_retry_is_posted_signed_and_recorded(app, client, engine, make_task, webhook,
                                                                      wait_until):
    task = make_task(action=FAIL, max_retries=0, notify={"url": webhook.url, "events": ["failure"]})
    # The webhook's path is write-only (it is the credential of Slack-style hooks).
    assert task["notify"] == {"url": mask_url(webhook.url), "events": ["failure"], "late_after_seconds": None,
                              "slow_after_seconds": None}
    run = client.post(f"/api/tasks/{task['id']}/run/").get_json()

    wait_until(lambda: webhook.of("failure"))
    [item] = webhook.received
    assert_signed(item)
    body = item["json"]
    assert item["headers"][EVENT_HEADER] == "failure"
    assert item["headers"]["Content-Type"] == "application/json"
    assert body["event"] == "failure" and body["task"] == {"id": task["id"], "name": task["name"]}
    assert body["run"]["id"] == run["id"] and body["run"]["status"] == "failed" and body["run"]["attempt"] == 1
    assert body["run"]["retry_at"] is None and body["skipped_children"] == []
    assert "failed" in body["text"] and task["name"] in body["text"]

    recorded = wait_until(lambda: [a for a in alerts(client) if a["status"] == "delivered"])
    [alert] = recorded
    assert alert["id"] == body["id"] == int(item["headers"][DELIVERY_HEADER])
    assert alert["event"] == "failure" and alert["task_id"] == task["id"] and alert["attempts"] == 1
    assert alert["url"] == mask_url(webhook.url) and alert["delivered_at"] is not None and alert["last_error"] == ""
    assert alert["payload"]["run"]["id"] == run["id"]
    assert alerts(client, event="failure", task_id=task["id"], status="delivered") == recorded
    assert alerts(client, event="success") == [] and alerts(client, status="pending") == []
    assert alerts(client, task_id=task["id"] + 1) == []


def test_the_default_webhook_hears_failure_and_recovery_of_tasks_without_notify(app, client, engine, make_task,
                                                                              webhook, wait_until, runs_of):
    app.config["ALERT_WEBHOOK_URL"] = webhook.url
    task = make_task(action=FAIL, max_retries=0)
    assert task["notify"] is None
    client.post(f"/api/tasks/{task['id']}/run/")
    wait_until(lambda: webhook.of("failure"))
    client.patch(f"/api/tasks/{task['id']}/", json={"action": {"type": "shell", "command": "true"}})
    client.post(f"/api/tasks/{task['id']}/run/")
    wait_until(lambda: webhook.of("recovered"))
    time.sleep(0.3)
    assert webhook.events() == ["failure", "recovered"]  # not `success`: not a default event
    assert all(item["path"] == "/hook" for item in webhook.received)
    for item in webhook.received:
        assert_signed(item)


def test_retry_success_and_a_successful_retry_is_not_a_recovery(app, client, engine, make_task, webhook,
                                                                wait_until, tmp_path):
    marker = tmp_path / "second-time"
    # Fails the first time, succeeds the second (the retry, one second later).
    command = f"if [ -e {marker} ]; then echo ok; else touch {marker}; exit 1; fi"
    task = make_task(action={"type": "shell", "command": command}, max_retries=2, retry_delay_seconds=1,
                     notify={"url": webhook.url, "events": ["retry", "success", "recovered", "failure"]})
    client.post(f"/api/tasks/{task['id']}/run/")
    wait_until(lambda: webhook.of("success"))
    time.sleep(0.3)
    assert webhook.events() == ["retry", "success"]
    retry = webhook.of("retry")[0]["json"]
    assert retry["run"]["attempt"] == 1 and retry["run"]["retry_at"] is not None
    assert webhook.of("success")[0]["json"]["run"]["attempt"] == 2


def test_slow_is_raised_while_the_run_is_still_running(app, client, engine, make_task, webhook, wait_until):
    task = make_task(action={"type": "shell", "command": "sleep 2"},
                     notify={"url": webhook.url, "events": ["slow", "success"], "slow_after_seconds": 1})
    client.post(f"/api/tasks/{task['id']}/run/")
    slow = wait_until(lambda: webhook.of("slow"))[0]["json"]
    assert slow["run"]["status"] == "running" and slow["slow_after_seconds"] == 1
    assert slow["running_seconds"] > 1
    assert not webhook.of("success")  # it came before the run ended
    wait_until(lambda: webhook.of("success"))
    time.sleep(0.3)
    assert webhook.events() == ["slow", "success"]  # once per run


def test_late_and_missed_slots(app, client, engine, make_task, webhook, wait_until, set_task, runs_of):
    yearly = "0 0 1 1 *"
    late = make_task(cron_expression=yearly, misfire_grace_seconds=3600,
                     notify={"url": webhook.url, "events": ["late"], "late_after_seconds": 2})
    missed = make_task(cron_expression=yearly, misfire_grace_seconds=60,
                       notify={"url": webhook.url, "events": ["missed"]})
    now = datetime.now(timezone.utc)
    set_task(late["id"], next_run_at=now - timedelta(seconds=10))  # within the grace: runs, 10 s late
    set_task(missed["id"], next_run_at=now - timedelta(hours=2))  # beyond it: skipped
    engine.wake()

    late_alert = wait_until(lambda: webhook.of("late"))[0]["json"]
    assert late_alert["task"]["id"] == late["id"] and 9 < late_alert["late_by_seconds"] < 20
    assert late_alert["late_after_seconds"] == 2 and late_alert["run"]["trigger"] == "schedule"
    missed_alert = wait_until(lambda: webhook.of("missed"))[0]["json"]
    assert missed_alert["task"]["id"] == missed["id"]
    [skipped] = runs_of(missed["id"])
    assert skipped.status == "skipped" and missed_alert["message"] == skipped.message
    assert "more than 60s late" in missed_alert["text"]


def test_a_failing_parent_sends_one_alert_naming_its_skipped_children(app, client, engine, make_task, webhook,
                                                                     wait_until, set_task, runs_of):
    app.config["ALERT_WEBHOOK_URL"] = webhook.url  # everyone: failure, recovered, missed
    parent = make_task(name="extract", cron_expression="0 0 1 1 *", action=FAIL, max_retries=0)
    children = [
        make_task(name=f"load-{n}", cron_expression="0 0 1 1 *", depends_on=[parent["id"]]) for n in (1, 2)
    ]
    client.post(f"/api/tasks/{parent['id']}/run/")
    wait_until(lambda: webhook.of("failure"))

    now = datetime.now(timezone.utc)
    for child in children:  # their slots come due while the parent is failed: the gate skips them
        set_task(child["id"], next_run_at=now - timedelta(seconds=1))
    engine.wake()
    wait_until(lambda: all(runs_of(child["id"]) for child in children))
    assert all(runs_of(child["id"])[0].message == "parent 'extract' failed" for child in children)
    time.sleep(0.5)  # time enough for any (wrong) `missed` alert to arrive

    assert webhook.events() == ["failure"]
    body = webhook.of("failure")[0]["json"]
    assert body["task"]["name"] == "extract"
    assert body["skipped_children"] == [{"id": child["id"], "name": child["name"]} for child in children]
    assert "'load-1', 'load-2'" in body["text"]


def test_a_child_alerted_elsewhere_still_hears_of_its_own_skip(app, client, engine, make_task, webhook,
                                                              wait_until, set_task, runs_of):
    other = Webhook()
    try:
        app.config["ALERT_WEBHOOK_URL"] = webhook.url
        parent = make_task(name="extract", cron_expression="0 0 1 1 *", action=FAIL, max_retries=0)
        child = make_task(name="report", cron_expression="0 0 1 1 *", depends_on=[parent["id"]],
                          notify={"url": other.url, "events": ["missed"]})
        client.post(f"/api/tasks/{parent['id']}/run/")
        wait_until(lambda: webhook.of("failure"))
        set_task(child["id"], next_run_at=datetime.now(timezone.utc) - timedelta(seconds=1))
        engine.wake()
        missed = wait_until(lambda: other.of("missed"))[0]["json"]
        assert missed["task"]["id"] == child["id"] and missed["message"] == "parent 'extract' failed"
        assert webhook.events() == ["failure"]
    finally:
        other.close()


# --- a webhook that is down ----------------------------------------------------------------------


def test_a_webhook_that_is_down_is_retried_and_does_not_delay_runs(app, client, engine, make_task, wait_until,
                                                                   runs_of):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    task = make_task(cron_expression="* * * * * *", action=FAIL, max_retries=0, concurrency_policy="allow",
                     notify={"url": url, "events": ["failure"]})
    # While it is down: alerts are retried (0.2 s, 0.4 s, ...), runs keep their slots.
    wait_until(lambda: len([r for r in runs_of(task["id"]) if r.status == "failed"]) >= 2)
    retried = wait_until(lambda: [a for a in alerts(client) if a["attempts"] >= 2])
    assert all(a["status"] == "pending" for a in retried)
    assert retried[0]["last_error"] == "could not connect (ConnectionError)"

    receiver = Webhook(port)  # it comes back up
    try:
        first_id = min(a["id"] for a in retried)
        wait_until(lambda: any(item["json"]["id"] == first_id for item in receiver.received), timeout=20)
        # The sender records the delivery only once the receiver has answered: wait for the row too.
        [delivered] = wait_until(lambda: [a for a in alerts(client, status="delivered") if a["id"] == first_id])
        assert delivered["attempts"] >= 2  # one failed at least, then the one that arrived
        client.patch(f"/api/tasks/{task['id']}/", json={"enabled": False})
        wait_until(lambda: not alerts(client, status="pending"), timeout=20)
        ids = [item["json"]["id"] for item in receiver.received]
        assert len(ids) == len(set(ids))  # none sent twice
        for item in receiver.received:
            assert_signed(item)
    finally:
        receiver.close()

    runs = [run for run in runs_of(task["id"]) if run.started_at is not None and run.status != "skipped"]
    assert len(runs) >= 2
    lags = [(run.started_at - run.scheduled_for).total_seconds() for run in runs]
    assert max(lags) < 0.9, lags


def test_a_webhook_that_hangs_does_not_delay_runs(app, client, engine, make_task, webhook, wait_until, runs_of):
    webhook.delay = 1.5  # every delivery waits 1.5 s for an answer
    task = make_task(cron_expression="* * * * * *", action=FAIL, max_retries=0, concurrency_policy="allow",
                     notify={"url": webhook.url, "events": ["failure"]})
    wait_until(lambda: len([r for r in runs_of(task["id"]) if r.status == "failed"]) >= 3)
    client.patch(f"/api/tasks/{task['id']}/", json={"enabled": False})
    runs = [run for run in runs_of(task["id"]) if run.status == "failed"]
    lags = [(run.started_at - run.scheduled_for).total_seconds() for run in runs]
    assert max(lags) < 0.9, lags
    assert len(webhook.received) < len(runs)  # the sender is behind, the scheduler is not


# --- several senders ------------------------------------------------------------------------------


def test_two_senders_never_send_one_alert_twice(app, webhook, wait_until):
    with app.app_context():
        now = datetime.now(timezone.utc)
        db.session.add_all([
            Alert(task_id=None, event="failure", payload={"event": "failure", "n": n}, url=webhook.url,
                  next_attempt_at=now, created_at=now)
            for n in range(20)
        ])
        db.session.commit()
    senders = [AlertSender(app, lambda result: None) for _ in range(3)]
    threads = [threading.Thread(target=lambda s=s: [s.send_due(limit=20) for _ in range(2)]) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    ids = [item["json"]["id"] for item in webhook.received]
    assert len(ids) == 20 and len(set(ids)) == 20
    with app.app_context():
        assert db.session.execute(sa.select(Alert.status, Alert.attempts).distinct()).all() == [("delivered", 1)]


def test_an_alert_is_given_up_after_the_last_attempt(app, client):
    app.config["ALERT_RETRY_BASE_SECONDS"] = 0
    url = f"http://127.0.0.1:{free_port()}/hook"
    with app.app_context():
        now = datetime.now(timezone.utc)
        db.session.add(Alert(task_id=None, event="failure", payload={}, url=url, next_attempt_at=now, created_at=now))
        db.session.commit()
    sender = AlertSender(app, lambda result: None)
    for _ in range(10):
        sender.send_due()
    [alert] = alerts(client)
    assert alert["status"] == "failed" and alert["attempts"] == 8
    assert alert["last_error"] == "could not connect (ConnectionError)"


def test_deleting_a_task_keeps_its_alerts(app, client, make_task):
    task = make_task(cron_expression="@daily")
    with app.app_context():
        now = datetime.now(timezone.utc)
        db.session.add(Alert(task_id=task["id"], event="failure", payload={}, url="http://x.test/",
                             next_attempt_at=now, created_at=now))
        db.session.commit()
    assert client.delete(f"/api/tasks/{task['id']}/").status_code == 204
    [alert] = alerts(client)
    assert alert["task_id"] is None


# --- the notify field -------------------------------------------------------------------------------


INVALID_NOTIFY = [
    ({"url": "ftp://x.test/", "events": ["failure"]}, "url"),
    ({"url": "not a url"}, "url"),
    ({"url": "http://x.test/", "events": ["explode"]}, "events"),
    ({"url": "http://x.test/", "events": ["late"]}, "late_after_seconds"),
    ({"url": "http://x.test/", "events": ["slow"], "slow_after_seconds": 0}, "slow_after_seconds"),
    ({"url": "http://x.test/", "colour": "red"}, "colour"),
    ({"events": ["failure"]}, "url"),  # no url and no ALERT_WEBHOOK_URL
    ("http://x.test/", "_schema"),
]


def test_invalid_notify_settings_are_422_naming_the_field(client, make_task):
    for notify, field in INVALID_NOTIFY:
        body = {"name": "n", "cron_expression": "@daily", "action": {"type": "shell", "command": "true"},
                "notify": notify}
        response = client.post("/api/tasks/", json=body)
        assert response.status_code == 422, (notify, response.get_json())
        errors = response.get_json()["errors"]["json"]["notify"]
        assert field in errors, (notify, errors)
    task = make_task()
    response = client.patch(f"/api/tasks/{task['id']}/", json={"notify": {"events": ["late"], "url": "http://x.test/"}})
    assert response.status_code == 422  # a PATCH replaces notify whole, so it is checked whole
    assert "late_after_seconds" in response.get_json()["errors"]["json"]["notify"]


def test_notify_is_stored_changed_and_cleared(app, client, make_task):
    app.config["ALERT_WEBHOOK_URL"] = "https://alerts.example.test/hook"
    task = make_task(cron_expression="@daily", notify={"events": ["late", "failure", "late"], "late_after_seconds": 30})
    assert task["notify"] == {"url": None, "events": ["late", "failure"], "late_after_seconds": 30,
                              "slow_after_seconds": None}
    changed = client.patch(f"/api/tasks/{task['id']}/", json={"notify": {"url": "http://hooks.internal:8080/x"}})
    assert changed.get_json()["notify"]["events"] == ["failure", "recovered", "missed", "paused"]  # replaced whole
    kept = client.patch(f"/api/tasks/{task['id']}/", json={"description": "d"}).get_json()
    assert kept["notify"]["url"] == "http://hooks.internal:8080/***"  # the path is write-only
    with app.app_context():
        assert db.session.get(Task, task["id"]).notify["url"] == "http://hooks.internal:8080/x"
    cleared = client.patch(f"/api/tasks/{task['id']}/", json={"notify": None}).get_json()
    assert cleared["notify"] is None
    assert "notify" in client.get("/api/openapi.json").get_json()["components"]["schemas"]["Task"]["properties"]


def test_the_intake_reads_only_tasks_that_can_have_alerts(app, client, make_task):
    """Without a default webhook, a task with no `notify` (never set, or cleared to null) cannot raise
    an alert, so the intake does not read it for every batch of runs."""
    wants = make_task(notify={"url": "http://hooks.internal/x", "events": ["failure"]})
    never = make_task()
    cleared = make_task(notify={"url": "http://hooks.internal/x"})
    assert client.patch(f"/api/tasks/{cleared['id']}/", json={"notify": None}).status_code == 200
    ids = [wants["id"], never["id"], cleared["id"]]
    intake = AlertIntake(app, lambda trigger, lag: None)
    with app.app_context():
        assert set(intake._tasks(ids, with_default_url=False)) == {wants["id"]}
        assert set(intake._tasks(ids, with_default_url=True)) == set(ids)
        db.session.rollback()


# --- rules, without a database ------------------------------------------------------------------------


def _finished(status: str, *, attempt: int = 1, retry_at=None, previous=None) -> FinishedRun:
    return FinishedRun(1, 2, "t", attempt, "schedule", status, NOW, NOW, NOW, 1.0, "", retry_at, previous)


def test_which_outcomes_raise_which_events():
    every = Target("http://x.test/", frozenset({"failure", "retry", "success", "recovered"}))
    assert finished_events(_finished("failed"), every) == ["failure"]
    assert finished_events(_finished("failed", retry_at=NOW), every) == ["retry"]
    assert finished_events(_finished("success"), every) == ["success"]
    assert finished_events(_finished("success", previous="failed"), every) == ["success", "recovered"]
    assert finished_events(_finished("success", attempt=2, previous="failed"), every) == ["success"]
    only_failure = Target("http://x.test/", frozenset({"failure"}))
    assert finished_events(_finished("failed", retry_at=NOW), only_failure) == []


def test_targets_and_defaults():
    assert target_for(None, None) is None
    assert target_for(None, "http://d.test/") == Target("http://d.test/", frozenset({"failure", "recovered", "missed", "paused"}))
    assert target_for({"events": ["success"]}, None) is None
    assert target_for({"url": "http://t.test/", "events": []}, "http://d.test/").events == frozenset()
    assert target_for({"events": ["slow"], "slow_after_seconds": 5}, "http://d.test/").slow_after_seconds == 5


def test_signature_and_backoff():
    body = b'{"event":"failure"}'
    header = signature("s3cret-s3cret-s3cret", "1700000000", body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify_signature("s3cret-s3cret-s3cret", "1700000000", body, header, now=1700000010)
    assert not verify_signature("s3cret-s3cret-s3cret", "1700000000", body + b" ", header, now=1700000010)
    assert not verify_signature("s3cret-s3cret-s3cret", "1700000001", body, header, now=1700000010)
    assert not verify_signature("s3cret-s3cret-s3cret", "1700000000", body, header, now=1700009999)  # replayed
    assert [delivery_retry_policy(15).backoff_seconds(n) for n in range(1, 9)] == [15, 30, 60, 120, 240, 480, 960, 1920]
    assert delivery_retry_policy(15).backoff_seconds(100) == 3600


@pytest.mark.parametrize("variable, raw", [
    ("ALERT_WEBHOOK_URL", "hooks.internal/x"), ("ALERT_WEBHOOK_URL", "ftp://x.test/"),
    ("ALERT_WEBHOOK_SECRET", "short"), ("METRICS_PUBLIC", "maybe"),
])
def test_bad_alert_settings_stop_start_up_naming_the_variable(variable, raw):
    with pytest.raises(ConfigError, match=variable):
        load_settings({variable: raw})


def test_alert_settings_from_the_environment():
    settings = load_settings({"ALERT_WEBHOOK_URL": " https://hooks.example.test/a ",
                              "ALERT_WEBHOOK_SECRET": "0123456789abcdef"})
    assert settings["ALERT_WEBHOOK_URL"] == "https://hooks.example.test/a"
    assert settings["ALERT_WEBHOOK_SECRET"] == "0123456789abcdef"
    assert load_settings({})["ALERT_WEBHOOK_URL"] is None
