"""Run control in the real engine of this process: cancel, overlap policies, pools, pause."""
from __future__ import annotations

import time

import sqlalchemy as sa

from scheduler_service.extensions import db
from scheduler_service.models import Pool, Run

EVERY_SECOND = "* * * * * *"
NEVER = "0 0 1 1 *"


def test_a_running_shell_run_is_cancelled_within_seconds_and_not_retried(engine, client, make_task, runs_of,
                                                                         task_row, wait_until):
    task = make_task(cron_expression=NEVER, max_retries=3, retry_delay_seconds=1,
                     action={"type": "shell", "command": "echo started; sleep 60"})
    run = client.post(f"/api/tasks/{task['id']}/run/").get_json()
    wait_until(lambda: runs_of(task["id"])[0].status == "running")
    asked = time.monotonic()
    response = client.post(f"/api/logs/{run['id']}/cancel/")
    assert response.status_code == 202, response.get_json()
    [done] = wait_until(lambda: [r for r in runs_of(task["id"]) if r.status == "failed"])
    assert time.monotonic() - asked < 5
    assert done.message.startswith("cancelled"), done.message
    assert task_row(task["id"]).status == "failed"
    time.sleep(1.5)
    assert len(runs_of(task["id"])) == 1  # not retried
    assert client.post(f"/api/logs/{run['id']}/cancel/").status_code == 409


def test_a_pool_of_one_runs_its_tasks_one_at_a_time(app, engine, client, make_task, runs_of, wait_until):
    assert client.post("/api/pools/", json={"name": "db", "slots": 1}).status_code == 201
    tasks = [make_task(cron_expression=EVERY_SECOND, pool="db", concurrency_policy="allow",
                       action={"type": "shell", "command": "sleep 0.3"}) for _ in range(3)]
    wait_until(lambda: sum(len([r for r in runs_of(t["id"]) if r.status == "success"]) for t in tasks) >= 6,
               timeout=30)
    with app.app_context():
        finished = db.session.scalars(sa.select(Run).where(Run.status == "success").order_by(Run.started_at)).all()
        spans = [(run.started_at, run.finished_at) for run in finished]
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end, "two runs of one pool overlapped"
    with app.app_context():
        assert db.session.get(Pool, "db").running <= 1


def test_buffer_one_waits_for_the_active_run_and_skips_beyond_one(engine, make_task, runs_of, wait_until):
    task = make_task(cron_expression=EVERY_SECOND, concurrency_policy="buffer_one",
                     action={"type": "shell", "command": "sleep 1.5"})
    runs = wait_until(lambda: (rs := runs_of(task["id"])) and len([r for r in rs if r.status == "success"]) >= 2
                      and rs, timeout=30)
    statuses = {run.status for run in runs}
    assert "skipped" in statuses
    done = [run for run in runs if run.status == "success"]
    for first, second in zip(done, done[1:]):
        assert second.started_at >= first.finished_at
    assert any("buffer_one" in run.message for run in runs if run.status == "skipped")


def test_pause_until_resumes_by_itself(client, engine, make_task, task_row, wait_until):
    from datetime import datetime, timedelta, timezone
    task = make_task(cron_expression=EVERY_SECOND)
    until = datetime.now(timezone.utc) + timedelta(seconds=2)
    paused = client.post(f"/api/tasks/{task['id']}/pause/", json={"note": "db migration", "until": until.isoformat()})
    assert paused.status_code == 200, paused.get_json()
    body = paused.get_json()
    assert (body["enabled"], body["pause_note"], body["next_run_at"]) == (False, "db migration", None)
    wait_until(lambda: task_row(task["id"]).enabled, timeout=10)
    row = task_row(task["id"])
    assert row.pause_note is None and row.paused_until is None and row.next_run_at >= until.replace(microsecond=0)
