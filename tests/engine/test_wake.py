"""With a one-minute tick, runs still start on time: the scheduler wakes at the earliest due
time and at once when the API changes something in its process."""
from __future__ import annotations

from datetime import timedelta

import pytest


@pytest.fixture
def app_config() -> dict:
    return {"SCHEDULER_TICK_SECONDS": 60, "RUN_LEASE_SECONDS": 30}


def test_slots_start_on_time_between_minute_ticks(engine, make_task, runs_of, wait_until):
    task = make_task(cron_expression="* * * * * */2")
    runs = wait_until(lambda: [r for r in runs_of(task["id"]) if r.status == "success"][:3] or None, timeout=20)
    assert all(run.started_at - run.scheduled_for < timedelta(seconds=0.9) for run in runs)


def test_a_manual_run_starts_at_once(engine, client, make_task, runs_of, wait_until):
    task = make_task(cron_expression="0 0 1 1 *")
    run = client.post(f"/api/tasks/{task['id']}/run/").get_json()
    started = wait_until(lambda: [r for r in runs_of(task["id"]) if r.started_at], timeout=10)[0]
    assert started.id == run["id"]
    assert started.started_at - started.scheduled_for < timedelta(seconds=2)
