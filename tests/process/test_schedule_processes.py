"""Schedules beyond cron with real `flask run-scheduler` processes: catch-up across a stop and a
start, and a backfill shared by two processes on one database (PostgreSQL when TEST_DATABASE_URL
is set, else a SQLite file).

Tasks and backfills are written through the API (the app's test client, on the same database);
the processes only schedule. Slots are seconds apart, so each test takes 15-25 s.
"""
from __future__ import annotations

import re
import signal
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from scheduler_service.clock import utcnow
from scheduler_service.extensions import db
from scheduler_service.models import Run

pytestmark = pytest.mark.slow

FAST = {"type": "shell", "command": "true"}
STEP = timedelta(seconds=2)  # the slot period of the catch-up tasks
DOWNTIME = 7  # seconds without a scheduler: three or four slots missed


def make_task(client, **fields) -> int:
    body = {"name": f"p-{time.monotonic_ns()}", "action": FAST, "max_retries": 0, **fields}
    response = client.post("/api/tasks/", json=body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def runs(app, task_id: int) -> list[Run]:
    """The task's runs in slot order, detached."""
    with app.app_context():
        rows = db.session.scalars(
            sa.select(Run).where(Run.task_id == task_id).order_by(Run.scheduled_for, Run.id)
        ).all()
        db.session.expunge_all()
        return list(rows)


def finished(rows: list[Run]) -> list[Run]:
    return [run for run in rows if run.status in ("success", "failed")]


def stop(processes, process, index: int) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, processes.log(index)


def wait_started(processes, wait, index: int) -> None:
    wait(lambda: "scheduler started as" in processes.log(index), timeout=30)


def fmt(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def contiguous(slots: list[datetime], step: timedelta) -> bool:
    return all(later - earlier == step for earlier, later in zip(slots, slots[1:]))


def test_catch_up_after_a_scheduler_stop_and_start(app, client, processes, wait):
    tasks = {
        "all": make_task(client, interval_seconds=2, catchup="all", misfire_grace_seconds=60),
        "all-short-grace": make_task(client, interval_seconds=2, catchup="all", misfire_grace_seconds=3),
        "latest": make_task(client, cron_expression="* * * * * */2", catchup="latest", misfire_grace_seconds=60),
        "none": make_task(client, interval_seconds=2, catchup="none", misfire_grace_seconds=60),
    }
    first = processes.start()
    wait(lambda: all(len(finished(runs(app, task_id))) >= 2 for task_id in tasks.values()), timeout=40)
    stop(processes, first, 0)
    before = {name: runs(app, task_id) for name, task_id in tasks.items()}
    for name, rows in before.items():
        assert rows and all(run.status == "success" for run in rows), (name, processes.log(0))
    last = {name: max(run.scheduled_for for run in rows) for name, rows in before.items()}

    time.sleep(DOWNTIME)
    restarted = utcnow()
    second = processes.start()
    # Caught up, and on time again: a slot later than the restart ran in every task.
    wait(lambda: all(any(run.scheduled_for > restarted + STEP and run.status == "success" for run in runs(app, task_id))
                     for task_id in tasks.values()), timeout=40)
    stop(processes, second, 1)
    after = {name: [run for run in runs(app, task_id) if run.scheduled_for > last[name]]
             for name, task_id in tasks.items()}
    logs = processes.log(1)

    # all: each missed slot ran once, oldest first, one at a time; no slot skipped for downtime.
    rows = after["all"]
    slots = [run.scheduled_for for run in rows]
    assert [slot for slot, count in Counter(slots).items() if count > 1] == [], "a slot ran twice"
    assert slots[0] == last["all"] + STEP and contiguous(slots, STEP), (slots, logs)
    missed = [run for run in rows if run.scheduled_for < restarted]
    assert len(missed) >= 3, slots
    assert all((run.status, run.trigger, run.attempt) == ("success", "schedule", 1) for run in missed), \
        [(run.scheduled_for, run.status, run.message) for run in missed]
    assert all(run.created_at > run.scheduled_for + timedelta(seconds=DOWNTIME - 2 * STEP.seconds)
               for run in missed[:2]), "the oldest missed slots were queued after the restart"
    by_start = sorted(missed, key=lambda run: run.started_at)
    assert by_start == missed, "catch-up runs did not start oldest first"
    assert all(later.started_at >= earlier.finished_at for earlier, later in zip(missed, missed[1:])), \
        "two catch-up runs overlapped"
    # A regular slot that came due while a catch-up run ran is skipped under forbid, and said so.
    assert all(run.scheduled_for >= restarted and "still active" in run.message
               for run in rows if run.status == "skipped"), [(run.scheduled_for, run.message) for run in rows]

    # all, with a 3 s grace: the slots older than the grace are one skipped row; the rest run, each once.
    rows = after["all-short-grace"]
    [skip] = [run for run in rows if run.status == "skipped" and "late" in run.message]
    ran = [run for run in rows if run.status != "skipped"]
    assert skip.scheduled_for == last["all-short-grace"] + STEP
    assert skip.message == f"missed slots from {fmt(skip.scheduled_for)} to before {fmt(ran[0].scheduled_for)}: " \
                           "more than 3s late", skip.message
    assert ran[0].scheduled_for - skip.scheduled_for >= STEP
    assert ran[0].created_at - ran[0].scheduled_for <= timedelta(seconds=3)  # within the grace when queued
    ran_slots = [run.scheduled_for for run in ran]
    assert len(set(ran_slots)) == len(ran_slots) and contiguous(ran_slots, STEP), ran_slots

    # latest: one run, for the latest missed slot; the older missed slots leave no row at all.
    rows = after["latest"]
    assert all(run.status == "success" for run in rows), [(run.scheduled_for, run.status, run.message) for run in rows]
    slots = [run.scheduled_for for run in rows]
    assert slots[0] - last["latest"] >= 4 * STEP, (last["latest"], slots)  # three or more slots not run
    assert slots[0] <= restarted + 3 * STEP  # the latest missed slot (start-up takes a second or two)
    assert len(set(slots)) == len(slots) and contiguous(slots, STEP), slots

    # none: one skipped row for the episode and no catch-up run; the slot reached on time runs.
    rows = after["none"]
    [skip] = [run for run in rows if run.status == "skipped"]
    assert skip.scheduled_for == last["none"] + STEP
    match = re.fullmatch(r"missed slot (\S+) to (\S+): not run \(catchup none\)", skip.message)
    assert match, skip.message
    first_missed, last_missed = (datetime.fromisoformat(value) for value in match.groups())
    assert first_missed == skip.scheduled_for and last_missed - first_missed >= 2 * STEP
    ran = [run for run in rows if run.status != "skipped"]
    assert all(run.scheduled_for > last_missed for run in ran), "a missed slot ran"
    assert ran[0].scheduled_for == last_missed + STEP  # the next slot, reached on time
    assert ran[0].started_at - ran[0].scheduled_for < timedelta(seconds=15)
    assert contiguous([run.scheduled_for for run in ran], STEP)


def test_a_backfill_under_two_processes_runs_each_slot_once_one_at_a_time(app, client, processes, wait):
    slots_per_task = 20
    policies = ("forbid", "allow", "forbid", "allow")
    tasks = [make_task(client, cron_expression="* * * * *", concurrency_policy=policy,
                       action={"type": "shell", "command": "sleep 0.2"}) for policy in policies]
    end = utcnow().replace(second=0, microsecond=0)
    start = end - (slots_per_task - 1) * timedelta(minutes=1)
    expected = [start + n * timedelta(minutes=1) for n in range(slots_per_task)]
    # One worker each (so at most two claimed runs each): neither process can hold every task's
    # queue, and a task's next backfill run is taken by whichever process looks first.
    for index in range(2):  # both up before the backfill is written: they race for its runs
        processes.start(SCHEDULER_MAX_WORKERS="1")
        wait_started(processes, wait, index)
    for task_id in tasks:
        response = client.post(f"/api/tasks/{task_id}/backfill/",
                               json={"start": start.isoformat(), "end": end.isoformat()})
        assert response.status_code == 202, response.get_json()
        assert [datetime.fromisoformat(slot) for slot in response.get_json()["slots"]] == expected

    def backfill_runs(task_id: int) -> list[Run]:
        return [run for run in runs(app, task_id) if run.trigger == "backfill"]

    wait(lambda: all(len(finished(backfill_runs(task_id))) == slots_per_task for task_id in tasks), timeout=90)
    for index, process in enumerate(processes.started):
        stop(processes, process, index)

    owners, switches = Counter(), 0
    for policy, task_id in zip(policies, tasks):
        rows = backfill_runs(task_id)
        assert [run.scheduled_for for run in rows] == expected, f"{policy}: each slot once, no more, no less"
        assert all((run.status, run.attempt) == ("success", 1) for run in rows), \
            [(run.scheduled_for, run.status, run.message) for run in rows]
        overlaps = [(earlier.scheduled_for, later.scheduled_for) for earlier, later in zip(rows, rows[1:])
                    if later.started_at < earlier.finished_at]
        assert overlaps == [], f"{policy}: backfill runs overlapped or ran out of slot order"
        owners.update(run.owner for run in rows)
        switches += sum(earlier.owner != later.owner for earlier, later in zip(rows, rows[1:]))
        if policy == "forbid":  # under forbid no run of the task overlaps another, whatever its trigger
            every = sorted(finished(runs(app, task_id)), key=lambda run: run.started_at)
            assert all(later.started_at >= earlier.finished_at for earlier, later in zip(every, every[1:]))
    assert sum(owners.values()) == len(tasks) * slots_per_task
    # Both processes took part: the one-at-a-time rule held across them, not just inside one.
    assert len(owners) == 2, owners
    print(f"backfill runs per process: {sorted(owners.values())}; a task's queue changed process {switches} times")
