"""Fixtures for tests that run the real engine: a scheduler in this process, fast ticks."""
from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from scheduler_service.extensions import db, scheduler
from scheduler_service.models import Run, Task
from waiting import process_gone
from waiting import wait_until as wait_until_


@pytest.fixture
def app_config() -> dict:
    return {"SCHEDULER_TICK_SECONDS": 1, "RUN_LEASE_SECONDS": 3}


@pytest.fixture
def engine(app):
    """The scheduler running in this process against the test database."""
    running = scheduler.start(app)
    yield running
    scheduler.stop(app, 0)


@pytest.fixture
def make_task(client):
    """POST a task with quick-test defaults; returns its JSON."""

    def make(**fields):
        body = {"name": f"task-{time.monotonic_ns()}", "action": {"type": "shell", "command": "true"}}
        body.update(fields)
        response = client.post("/api/tasks/", json=body)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return make


@pytest.fixture
def runs_of(app):
    """The runs of a task, oldest first, as detached rows."""

    def runs(task_id: int) -> list[Run]:
        with app.app_context():
            rows = db.session.scalars(sa.select(Run).where(Run.task_id == task_id).order_by(Run.id)).all()
            db.session.expunge_all()
            return list(rows)

    return runs


@pytest.fixture
def task_row(app):
    def row(task_id: int) -> Task:
        with app.app_context():
            task = db.session.get(Task, task_id)
            db.session.expunge_all()
            return task

    return row


@pytest.fixture
def wait_until():
    return wait_until_


@pytest.fixture
def gone():
    return process_gone
