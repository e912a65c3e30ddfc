"""Alerts of run control, with the real engine and a real webhook receiver: a cancelled run (by a
person, or replaced by a newer run) raises neither `failure` nor `retry`; a task that pauses itself
after failing too often raises one `paused` alert, beside the `failure` of the run that paused it."""
from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from scheduler_service.extensions import db
from scheduler_service.ops.models import Alert

FAIL = {"type": "shell", "command": "echo broken >&2; exit 3"}
SLEEP = {"type": "shell", "command": "echo started; sleep 60"}
EVERY_EVENT = ["failure", "retry", "success", "recovered", "paused"]
REPLACED = "cancelled: replaced by a newer run"


def alerts_of(app, task_id: int) -> list[str]:
    """The events of the alert rows of a task (whatever their delivery)."""
    with app.app_context():
        return list(db.session.scalars(sa.select(Alert.event).where(Alert.task_id == task_id).order_by(Alert.id)))


def hooked_events(webhook, task_id: int) -> list[str]:
    return [item["json"]["event"] for item in list(webhook.received) if item["json"]["task"]["id"] == task_id]


def barrier(client, make_task, webhook, wait_until) -> None:
    """Another task fails after what came before was recorded: once its `failure` is delivered, the
    alert intake has been through every earlier outcome (it takes them in order)."""
    task = make_task(action=FAIL, max_retries=0, notify={"url": webhook.url, "events": ["failure"]})
    assert client.post(f"/api/tasks/{task['id']}/run/").status_code == 202
    wait_until(lambda: hooked_events(webhook, task["id"]) == ["failure"], timeout=20)
    time.sleep(0.3)  # and anything wrongly raised alongside it has arrived too


def test_a_cancelled_run_raises_no_failure_or_retry_alert(app, client, engine, make_task, webhook, wait_until,
                                                          runs_of):
    task = make_task(action=SLEEP, max_retries=2, retry_delay_seconds=1,
                     notify={"url": webhook.url, "events": EVERY_EVENT})
    run = client.post(f"/api/tasks/{task['id']}/run/").get_json()
    wait_until(lambda: runs_of(task["id"])[0].status == "running")
    assert client.post(f"/api/logs/{run['id']}/cancel/").status_code == 202
    [done] = wait_until(lambda: [r for r in runs_of(task["id"]) if r.status == "failed"], timeout=10)
    assert done.message.startswith("cancelled"), done.message

    barrier(client, make_task, webhook, wait_until)
    time.sleep(1)  # a retry would have come by now (retry_delay_seconds 1)
    assert len(runs_of(task["id"])) == 1
    assert hooked_events(webhook, task["id"]) == []
    assert alerts_of(app, task["id"]) == []


def test_a_cancelled_pending_run_raises_no_alert(app, client, engine, make_task, webhook, wait_until, runs_of):
    # A pool of one slot, held by another task: the manual run waits pending, and is cancelled so.
    assert client.post("/api/pools/", json={"name": "one", "slots": 1}).status_code == 201
    holder = make_task(action=SLEEP, pool="one", max_retries=0)
    task = make_task(action=FAIL, pool="one", max_retries=1, retry_delay_seconds=1,
                     notify={"url": webhook.url, "events": EVERY_EVENT})
    held = client.post(f"/api/tasks/{holder['id']}/run/").get_json()
    wait_until(lambda: runs_of(holder["id"])[0].status == "running")
    waiting = client.post(f"/api/tasks/{task['id']}/run/").get_json()
    time.sleep(1.5)  # a few ticks: it waits for the pool
    assert runs_of(task["id"])[0].status == "pending"
    cancelled = client.post(f"/api/logs/{waiting['id']}/cancel/")
    assert cancelled.status_code == 202, cancelled.get_json()
    assert (cancelled.get_json()["status"], cancelled.get_json()["message"][:9]) == ("failed", "cancelled")
    assert client.post(f"/api/logs/{held['id']}/cancel/").status_code == 202
    wait_until(lambda: runs_of(holder["id"])[0].status == "failed", timeout=10)

    barrier(client, make_task, webhook, wait_until)
    assert [(run.status, run.attempt) for run in runs_of(task["id"])] == [("failed", 1)]
    assert hooked_events(webhook, task["id"]) == []
    assert alerts_of(app, task["id"]) == []


@pytest.mark.slow
def test_runs_replaced_by_newer_ones_raise_no_failure_alert(app, client, engine, make_task, webhook, wait_until,
                                                            runs_of):
    task = make_task(cron_expression="* * * * * */2", action=SLEEP, concurrency_policy="replace", max_retries=2,
                     retry_delay_seconds=1, notify={"url": webhook.url, "events": EVERY_EVENT})
    wait_until(lambda: len([r for r in runs_of(task["id"]) if r.message.startswith(REPLACED)]) >= 2, timeout=20)
    assert client.patch(f"/api/tasks/{task['id']}/", json={"enabled": False}).status_code == 200
    for run in runs_of(task["id"]):
        if run.status in ("pending", "running"):
            client.post(f"/api/logs/{run.id}/cancel/")
    wait_until(lambda: all(r.status not in ("pending", "running") for r in runs_of(task["id"])), timeout=10)

    barrier(client, make_task, webhook, wait_until)
    # A slot that waited when the task was disabled is skipped; every other run was cancelled.
    runs = [run for run in runs_of(task["id"]) if run.status != "skipped"]
    assert all(run.status == "failed" and run.message.startswith("cancelled") for run in runs), [
        (run.status, run.message) for run in runs]
    assert len([run for run in runs if run.message == REPLACED]) >= 2
    assert all(run.attempt == 1 and run.trigger == "schedule" for run in runs)  # none retried
    assert hooked_events(webhook, task["id"]) == []
    assert alerts_of(app, task["id"]) == []


@pytest.mark.parametrize("notify", ["its own", "the default webhook"])
def test_a_task_that_pauses_itself_raises_one_paused_alert(app, client, engine, make_task, webhook, wait_until,
                                                           runs_of, task_row, notify):
    if notify == "its own":
        fields = {"notify": {"url": webhook.url, "events": ["failure", "paused"]}}
    else:  # a task without notify hears the default events, `paused` among them
        app.config["ALERT_WEBHOOK_URL"] = webhook.url
        fields = {}
    task = make_task(action=FAIL, max_retries=0, pause_after_failures=2, **fields)

    first = client.post(f"/api/tasks/{task['id']}/run/").get_json()
    wait_until(lambda: hooked_events(webhook, task["id"]) == ["failure"])
    assert task_row(task["id"]).enabled is True
    second = client.post(f"/api/tasks/{task['id']}/run/").get_json()
    wait_until(lambda: "paused" in hooked_events(webhook, task["id"]))

    row = task_row(task["id"])
    assert (row.enabled, row.pause_note, row.paused_by) == (False, "paused after 2 consecutive failures", "scheduler")
    # Run now still works on a paused task; failing again does not pause it again.
    third = client.post(f"/api/tasks/{task['id']}/run/").get_json()
    wait_until(lambda: hooked_events(webhook, task["id"]).count("failure") == 3)
    time.sleep(0.5)

    assert hooked_events(webhook, task["id"]) == ["failure", "failure", "paused", "failure"]
    assert alerts_of(app, task["id"]) == ["failure", "failure", "paused", "failure"]
    failures = [item["json"] for item in webhook.of("failure")]
    assert [body["run"]["id"] for body in failures] == [first["id"], second["id"], third["id"]]
    [paused] = [item["json"] for item in webhook.of("paused")]
    assert paused["task"] == {"id": task["id"], "name": task["name"]}
    assert paused["run"]["id"] == second["id"] and paused["run"]["status"] == "failed"
    assert "paused itself" in paused["text"] and task["name"] in paused["text"]
    assert [run.status for run in runs_of(task["id"])] == ["failed"] * 3


def test_a_task_that_does_not_want_paused_alerts_hears_only_its_failures(app, client, engine, make_task, webhook,
                                                                        wait_until, task_row):
    task = make_task(action=FAIL, max_retries=0, pause_after_failures=1,
                     notify={"url": webhook.url, "events": ["failure"]})
    client.post(f"/api/tasks/{task['id']}/run/")
    wait_until(lambda: hooked_events(webhook, task["id"]) == ["failure"])
    wait_until(lambda: task_row(task["id"]).enabled is False)
    barrier(client, make_task, webhook, wait_until)
    assert hooked_events(webhook, task["id"]) == ["failure"]
    assert task_row(task["id"]).pause_note == "paused after 1 consecutive failures"
