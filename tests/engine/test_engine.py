"""The real engine in this process: second-level cron, real shell commands, one-second delays."""
from __future__ import annotations

import time
from datetime import timedelta

import sqlalchemy as sa

from scheduler_service.clock import utcnow
from scheduler_service.extensions import db
from scheduler_service.models import Task

EVERY_SECOND = "* * * * * *"


def finished(runs):
    return [run for run in runs if run.status in ("success", "failed")]


def test_a_task_runs_on_time_every_slot_once(engine, make_task, runs_of, wait_until):
    task = make_task(cron_expression=EVERY_SECOND, action={"type": "shell", "command": "echo ran"})
    runs = wait_until(lambda: len(finished(runs_of(task["id"]))) >= 3 and runs_of(task["id"]))
    slots = [run.scheduled_for for run in runs]
    assert len(slots) == len(set(slots)), "a slot ran twice"
    for run in finished(runs):
        assert run.trigger == "schedule" and run.attempt == 1
        assert run.status == "success" and run.exit_code == 0 and run.output == "ran\n"
        assert run.scheduled_for.microsecond == 0
        # Loose bound: a busy two-core machine may be slow, but never a tick late.
        assert timedelta(0) <= run.started_at - run.scheduled_for < timedelta(seconds=0.9)
        assert run.finished_at >= run.started_at and run.duration_seconds >= 0
    consecutive = [b - a for a, b in zip(slots, slots[1:])]
    assert all(gap == timedelta(seconds=1) for gap in consecutive), consecutive


def test_failed_attempts_are_retried_with_doubling_delays(engine, client, make_task, runs_of, task_row, wait_until):
    task = make_task(
        cron_expression="0 0 1 1 *", max_retries=2, retry_delay_seconds=1,
        action={"type": "shell", "command": "echo nope >&2; exit 3"},
    )
    assert client.post(f"/api/tasks/{task['id']}/run/").status_code == 202
    wait_until(lambda: task_row(task["id"]).status == "failed")
    runs = runs_of(task["id"])
    assert [(run.attempt, run.trigger, run.status) for run in runs] == [
        (1, "manual", "failed"), (2, "retry", "failed"), (3, "retry", "failed"),
    ]
    assert all(run.exit_code == 3 and run.output == "nope\n" and "3" in run.message for run in runs)
    first_gap = (runs[1].started_at - runs[0].finished_at).total_seconds()
    second_gap = (runs[2].started_at - runs[1].finished_at).total_seconds()
    assert 1.0 <= first_gap < 2.0
    assert 2.0 <= second_gap < 3.0
    assert task_row(task["id"]).retry_count == 2


def test_a_retry_that_succeeds_resets_the_chain(engine, client, make_task, runs_of, task_row, wait_until, tmp_path):
    marker = tmp_path / "second-time"
    command = f"if [ -e {marker} ]; then echo ok; else touch {marker}; exit 1; fi"
    task = make_task(cron_expression="0 0 1 1 *", retry_delay_seconds=1, action={"type": "shell", "command": command})
    client.post(f"/api/tasks/{task['id']}/run/")
    # While it waits for the retry it is `retrying`, and a manual run is refused under forbid.
    wait_until(lambda: task_row(task["id"]).status == "retrying")
    assert task_row(task["id"]).retry_count == 1
    assert client.post(f"/api/tasks/{task['id']}/run/").status_code == 409
    wait_until(lambda: task_row(task["id"]).status == "success")
    assert task_row(task["id"]).retry_count == 0
    assert [(run.attempt, run.status) for run in runs_of(task["id"])] == [(1, "failed"), (2, "success")]


def test_timeout_kills_the_command_and_fails_the_run(engine, client, make_task, runs_of, wait_until, gone, tmp_path):
    pid_file = tmp_path / "pid"
    task = make_task(
        cron_expression="0 0 1 1 *", max_retries=0, timeout_seconds=1,
        action={"type": "shell", "command": f"sleep 60 & echo $! > {pid_file}; wait"},
    )
    client.post(f"/api/tasks/{task['id']}/run/")
    [run] = wait_until(lambda: finished(runs_of(task["id"])))
    assert run.status == "failed" and run.message == "timed out after 1s"
    assert run.duration_seconds < 10
    wait_until(lambda: gone(int(pid_file.read_text())), timeout=5)


def test_huge_output_keeps_the_tail_only(engine, client, make_task, runs_of, wait_until):
    command = "head -c 50000000 /dev/zero | tr '\\0' a; echo; echo END"
    task = make_task(cron_expression="0 0 1 1 *", action={"type": "shell", "command": command})
    client.post(f"/api/tasks/{task['id']}/run/")
    [run] = wait_until(lambda: finished(runs_of(task["id"])), timeout=60)
    assert run.status == "success"
    assert len(run.output.encode()) <= 65536
    assert run.output.endswith("a\nEND\n")


def test_output_with_nul_bytes_is_recorded(engine, client, make_task, runs_of, wait_until):
    # PostgreSQL text refuses NUL: such a run could not be recorded and came back as "worker lost".
    task = make_task(cron_expression="0 0 1 1 *", action={"type": "shell", "command": "printf 'a\\0b\\n'"})
    client.post(f"/api/tasks/{task['id']}/run/")
    [run] = wait_until(lambda: finished(runs_of(task["id"])), timeout=30)
    assert (run.status, run.output) == ("success", "a\ufffdb\n")


def test_child_with_cron_is_skipped_when_its_parent_failed(engine, client, make_task, runs_of, wait_until):
    parent = make_task(name="extract", cron_expression="0 0 1 1 *", max_retries=0,
                       action={"type": "shell", "command": "exit 1"})
    client.post(f"/api/tasks/{parent['id']}/run/")
    wait_until(lambda: finished(runs_of(parent["id"])))
    child = make_task(name="load", cron_expression=EVERY_SECOND, depends_on=[parent["id"]])
    skipped = wait_until(lambda: runs_of(child["id"]))
    assert skipped[0].status == "skipped" and skipped[0].message == "parent 'extract' failed"
    assert skipped[0].trigger == "schedule"


def test_child_with_cron_waits_for_a_running_parent_then_runs(engine, client, make_task, runs_of, task_row, wait_until):
    parent = make_task(name="slow-parent", cron_expression="0 0 1 1 *", action={"type": "shell", "command": "sleep 1.5"})
    client.post(f"/api/tasks/{parent['id']}/run/")
    wait_until(lambda: task_row(parent["id"]).status == "running")
    child = make_task(cron_expression=EVERY_SECOND, depends_on=[parent["id"]], misfire_grace_seconds=30)
    runs = wait_until(lambda: finished(runs_of(child["id"])))
    parent_run = runs_of(parent["id"])[0]
    assert runs[0].status == "success"
    assert runs[0].started_at >= parent_run.finished_at
    # It waited for the parent instead of skipping for it (a busy machine may still skip a
    # slot of the every-second child while its own previous run is active: that is forbid).
    assert not [run for run in runs_of(child["id"]) if run.status == "skipped" and "parent" in run.message]


def test_dependency_only_child_runs_once_after_all_parents_succeed(engine, client, make_task, runs_of, wait_until):
    a = make_task(cron_expression="0 0 1 1 *")
    b = make_task(cron_expression="0 0 1 1 *")
    child = make_task(cron_expression=None, depends_on=[a["id"], b["id"]],
                      action={"type": "shell", "command": "echo joined"})
    client.post(f"/api/tasks/{a['id']}/run/")
    wait_until(lambda: finished(runs_of(a["id"])))
    time.sleep(0.5)
    assert runs_of(child["id"]) == [], "ran before every parent succeeded"
    client.post(f"/api/tasks/{b['id']}/run/")
    [run] = wait_until(lambda: finished(runs_of(child["id"])))
    assert run.trigger == "dependency" and run.status == "success" and run.output == "joined\n"
    time.sleep(0.5)
    assert len(runs_of(child["id"])) == 1, "ran more than once for one round of parents"
    # A new round: both parents succeed again -> one more run.
    client.post(f"/api/tasks/{a['id']}/run/")
    wait_until(lambda: len(finished(runs_of(a["id"]))) == 2)
    client.post(f"/api/tasks/{b['id']}/run/")
    wait_until(lambda: len(finished(runs_of(child["id"]))) == 2)


def test_forbid_skips_slots_while_a_run_is_active_and_allow_overlaps(engine, make_task, runs_of, wait_until):
    forbid = make_task(cron_expression=EVERY_SECOND, action={"type": "shell", "command": "sleep 2.2"})
    allow = make_task(cron_expression=EVERY_SECOND, concurrency_policy="allow",
                      action={"type": "shell", "command": "sleep 2.2"})
    skipped = wait_until(lambda: [r for r in runs_of(forbid["id"]) if r.status == "skipped"])
    assert "previous run still active" in skipped[0].message
    wait_until(lambda: sum(r.status == "running" for r in runs_of(allow["id"])) >= 2)


def test_manual_run_ignores_enabled_and_executes(engine, client, make_task, runs_of, wait_until):
    task = make_task(cron_expression="0 0 1 1 *", enabled=False, action={"type": "shell", "command": "echo manual"})
    response = client.post(f"/api/tasks/{task['id']}/run/")
    assert response.status_code == 202
    run_id = response.get_json()["id"]
    wait_until(lambda: client.get(f"/api/logs/{run_id}/").get_json()["status"] == "success")
    body = client.get(f"/api/logs/{run_id}/").get_json()
    assert body["output"] == "manual\n" and body["trigger"] == "manual" and body["exit_code"] == 0


def test_missed_slots_beyond_grace_are_logged_once_and_not_run(app, make_task, runs_of, task_row, wait_until):
    task = make_task(cron_expression=EVERY_SECOND, misfire_grace_seconds=5)
    with app.app_context():
        an_hour_ago = utcnow().replace(microsecond=0) - timedelta(hours=1)
        db.session.execute(sa.update(Task).where(Task.id == task["id"]).values(
            next_run_at=an_hour_ago, due_at=an_hour_ago))
        db.session.commit()
    from scheduler_service.extensions import scheduler
    scheduler.start(app)
    try:
        wait_until(lambda: any(run.status == "success" for run in runs_of(task["id"])))
    finally:
        scheduler.stop(app)
    runs = runs_of(task["id"])
    skipped = [run for run in runs if "missed" in run.message]
    assert len(skipped) == 1, [run.message for run in runs]
    assert skipped[0].status == "skipped" and skipped[0].scheduled_for < skipped[0].started_at - timedelta(minutes=59)
    assert task_row(task["id"]).next_run_at > skipped[0].started_at


def test_missed_slots_within_grace_run_once_as_the_latest(app, make_task, runs_of, task_row, wait_until):
    task = make_task(cron_expression=EVERY_SECOND, misfire_grace_seconds=3600)
    slot_an_hour_ago = utcnow().replace(microsecond=0) - timedelta(minutes=30)
    with app.app_context():
        db.session.execute(sa.update(Task).where(Task.id == task["id"]).values(
            next_run_at=slot_an_hour_ago, due_at=slot_an_hour_ago))
        db.session.commit()
    from scheduler_service.extensions import scheduler
    scheduler.start(app)
    try:
        first = wait_until(lambda: runs_of(task["id"]))[0]
    finally:
        scheduler.stop(app)
    assert first.status != "skipped"
    assert first.scheduled_for > slot_an_hour_ago + timedelta(minutes=29), "ran an old slot, not the latest"
    catch_up = [run for run in runs_of(task["id"]) if run.scheduled_for < first.scheduled_for]
    assert catch_up == [], "missed slots ran once each"


def test_tick_is_recorded_in_stats(engine, client, wait_until):
    stats = wait_until(lambda: client.get("/api/stats/").get_json()["scheduler"]["last_tick_at"])
    assert stats.endswith("+00:00")
