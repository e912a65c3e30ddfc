"""How far ahead of its workers a process claims: far for short runs, 2 x workers for long ones."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from scheduler_service.clock import utcnow
from scheduler_service.engine.recorder import RECORD_BATCH
from scheduler_service.extensions import db, scheduler
from scheduler_service.models import Run, Task

WORKERS = 2


@pytest.fixture
def app_config() -> dict:
    return {"SCHEDULER_TICK_SECONDS": 1, "RUN_LEASE_SECONDS": 3, "SCHEDULER_MAX_WORKERS": WORKERS}


def add_due_tasks(app, count: int, action: dict) -> None:
    """``count`` tasks whose slot came a moment ago (a burst), in one transaction."""
    slot = utcnow() - timedelta(seconds=1)
    with app.app_context():
        db.session.add_all(
            Task(name=f"burst-{index}", cron_expression="0 0 1 1 *", action=action, next_run_at=slot,
                 misfire_grace_seconds=3600)
            for index in range(count)
        )
        db.session.commit()


def run_burst(app, wait_until, count: int, action: dict) -> int:
    """Start the engine on a burst of ``count`` runs; the most runs it held claimed at once."""
    add_due_tasks(app, count, action)
    most, done = 0, threading.Event()
    engine = scheduler.start(app)

    def watch() -> None:
        nonlocal most
        while not done.is_set():
            most = max(most, engine.in_flight_count())
            done.wait(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        def finished() -> bool:
            with app.app_context():
                statuses = db.session.scalars(db.select(Run.status)).all()
                db.session.rollback()
            return len(statuses) == count and all(status == "success" for status in statuses)

        wait_until(finished, timeout=90)
    finally:
        done.set()
        watcher.join()
        scheduler.stop(app, 0)
    return most


def test_long_runs_are_not_hoarded_beyond_twice_the_workers(app, wait_until):
    # Runs that take a while finish few per quarter second: other processes could start
    # the rest, so this one keeps no more than 2 x workers claimed.
    most = run_burst(app, wait_until, 8, {"type": "shell", "command": "sleep 0.6"})
    assert most == 2 * WORKERS


def test_a_burst_of_short_runs_is_claimed_ahead_in_full_batches(app, wait_until):
    most = run_burst(app, wait_until, 400, {"type": "python", "callable": "builtins:len", "args": [[]]})
    assert 2 * WORKERS < most <= WORKERS + RECORD_BATCH
