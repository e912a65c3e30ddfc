"""Many processes, one database: exactly-once slots, killed workers, graceful shutdown.

These start real `flask run-scheduler` processes (and gunicorn workers) and take
seconds each; the suite's longest tests live here.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.processes import running
from scheduler_service.engine.containment import RunCgroups
from scheduler_service.extensions import db
from scheduler_service.models import Run, Task

pytestmark = pytest.mark.slow

WINDOW_SECONDS = 30


def add_task(app, **values) -> int:
    row = dict(name=f"t-{time.monotonic_ns()}", cron_expression="0 0 1 1 *", timezone="UTC", enabled=True,
               action={"type": "shell", "command": "true"})
    row.update(values)
    with app.app_context():
        task = Task(**row)
        if task.cron_expression and "next_run_at" not in values:
            from scheduler_service.task_schedules import next_slot
            from scheduler_service.clock import utcnow
            task.next_run_at = next_slot(task, utcnow())
        db.session.add(task)
        db.session.commit()
        return task.id


def runs(app, task_id=None) -> list[Run]:
    with app.app_context():
        query = sa.select(Run).order_by(Run.id)
        if task_id is not None:
            query = query.where(Run.task_id == task_id)
        rows = db.session.scalars(query).all()
        db.session.expunge_all()
        return list(rows)


def task(app, task_id) -> Task:
    with app.app_context():
        row = db.session.get(Task, task_id)
        db.session.expunge_all()
        return row


def request_manual_run(app, task_id) -> None:
    from scheduler_service.services import request_run

    with app.test_request_context():
        request_run(db.session.get(Task, task_id))


def test_four_processes_run_every_slot_exactly_once(app, processes, wait):
    task_ids = [add_task(app, cron_expression="* * * * * *", concurrency_policy="allow",
                         action={"type": "shell", "command": "sleep 0.2"}) for _ in range(3)]
    for _ in range(4):
        processes.start(SCHEDULER_MAX_WORKERS="2")
    # Every process must be up before the window opens, or the first slots measure start-up.
    wait(lambda: len({run.owner for run in runs(app)}) >= 1, timeout=60)
    time.sleep(WINDOW_SECONDS)
    for process in processes.started:
        process.send_signal(signal.SIGTERM)
    for index, process in enumerate(processes.started):
        assert process.wait(timeout=30) == 0, processes.log(index)

    all_runs = runs(app)
    for task_id in task_ids:
        mine = [run for run in all_runs if run.task_id == task_id and run.trigger == "schedule"]
        slots = Counter(run.scheduled_for for run in mine)
        assert [slot for slot, count in slots.items() if count > 1] == [], "a slot ran twice"
        ordered = sorted(slots)
        gaps = [b - a for a, b in zip(ordered, ordered[1:])]
        assert all(gap == timedelta(seconds=1) for gap in gaps), f"missed slots: {gaps}"
        assert len(ordered) >= WINDOW_SECONDS - 5
        assert all(run.status in ("success", "failed") for run in mine), "a run was left unfinished"
    assert len({run.owner for run in all_runs}) > 1, "one process did all the work"


def _cgroups_available() -> bool:
    found, _ = RunCgroups.detect(f"probe:{os.getpid()}:test", max_processes=8)
    if found is not None:
        found.close()
    return found is not None


def test_a_killed_worker_s_run_is_recovered_and_retried(app, processes, wait, tmp_path):
    marker = tmp_path / "attempted"
    pid_file = tmp_path / "pid"
    # The first attempt hangs until its process is killed; the retry finds the marker and succeeds.
    command = f"if [ -e {marker} ]; then echo retried; else touch {marker}; echo $$ > {pid_file}; sleep 60; fi"
    task_id = add_task(app, max_retries=2, retry_delay_seconds=1, action={"type": "shell", "command": command})
    contained = _cgroups_available()
    settings = {"SHELL_CONTAINMENT": "cgroup" if contained else "process-group"}
    victim = processes.start(**settings)
    request_manual_run(app, task_id)
    wait(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=60)
    orphan = int(pid_file.read_text())
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    assert running(orphan), "the command dies with its scheduler only through the sweep"
    if not contained:
        os.kill(orphan, signal.SIGKILL)  # its own session: nothing else reaches it here

    processes.start(**settings)
    # The new scheduler's heartbeat kills what the dead one left running on this machine.
    wait(lambda: not running(orphan), timeout=30)
    wait(lambda: task(app, task_id).status == "success", timeout=60)
    first, retry = runs(app, task_id)
    assert (first.status, first.message) == ("failed", "worker lost")
    assert (retry.attempt, retry.trigger, retry.status, retry.output) == (2, "retry", "success", "retried\n")


def test_sigterm_lets_a_short_run_finish_and_exits_zero(app, processes, wait):
    task_id = add_task(app, action={"type": "shell", "command": "sleep 2; echo done"})
    scheduler = processes.start(SCHEDULER_SHUTDOWN_GRACE_SECONDS="20")
    request_manual_run(app, task_id)
    wait(lambda: any(run.status == "running" for run in runs(app, task_id)), timeout=60)
    scheduler.send_signal(signal.SIGTERM)
    assert scheduler.wait(timeout=30) == 0, processes.log(0)
    [run] = runs(app, task_id)
    assert (run.status, run.output) == ("success", "done\n")


def test_sigterm_stops_a_long_run_after_the_grace_and_it_is_retried(app, processes, wait):
    task_id = add_task(app, max_retries=1, retry_delay_seconds=1, action={"type": "shell", "command": "sleep 60"})
    scheduler = processes.start(SCHEDULER_SHUTDOWN_GRACE_SECONDS="1")
    request_manual_run(app, task_id)
    wait(lambda: any(run.status == "running" for run in runs(app, task_id)), timeout=60)
    started = time.monotonic()
    scheduler.send_signal(signal.SIGTERM)
    assert scheduler.wait(timeout=30) == 0, processes.log(0)
    assert time.monotonic() - started < 15
    [run] = runs(app, task_id)
    assert (run.status, run.message) == ("failed", "stopped by shutdown"), processes.log(0)
    assert task(app, task_id).status == "retrying"


def test_gunicorn_workers_and_a_scheduler_share_slots_exactly_once(app, processes, wait):
    task_id = add_task(app, cron_expression="* * * * * *", concurrency_policy="allow")
    gunicorn = processes.start([sys.executable, "-m", "gunicorn", "-w", "2", "-b", "127.0.0.1:0", "wsgi:app"])
    processes.start()
    wait(lambda: len(runs(app, task_id)) >= 12, timeout=90)
    gunicorn.send_signal(signal.SIGTERM)
    assert gunicorn.wait(timeout=60) == 0, processes.log(0)
    slots = Counter(run.scheduled_for for run in runs(app, task_id))
    assert [slot for slot, count in slots.items() if count > 1] == []
