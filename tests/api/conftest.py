"""Factories shared by the API tests.

The fixtures here build on the root conftest (`app`, `client`, ...): tasks are
created through the API like a user would; runs with statuses the disabled
scheduler never produces are inserted directly with the models.
"""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from api_helpers import RUN_BASE_TIME
from scheduler_service.extensions import db
from scheduler_service.models import Run, Task

FINISHED_STATUSES = ("success", "failed", "skipped")


@pytest.fixture
def task_payload():
    """A valid task body; keyword arguments replace fields (None values are kept)."""
    names = itertools.count(1)

    def build(**overrides):
        body = {
            "name": f"task-{next(names)}",
            "cron_expression": "*/5 * * * *",
            "action": {"type": "http", "url": "http://example.com/hook"},
        }
        body.update(overrides)
        return body

    return build


@pytest.fixture
def make_task(client, task_payload):
    """POST a valid task (with overrides) and return the created task's JSON."""

    def create(**overrides):
        response = client.post("/api/tasks/", json=task_payload(**overrides))
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    return create


@pytest.fixture
def add_run(app):
    """Insert one Run row; returns its id. Times default to sensible values for the status."""
    counter = itertools.count()

    def add(task_id: int, status: str = "success", *, trigger: str = "schedule", attempt: int = 1,
            scheduled_for: datetime | None = None, started_at: datetime | None = None,
            finished_at: datetime | None = None, duration_seconds: float | None = None,
            output: str = "", message: str = "", exit_code: int | None = None) -> int:
        n = next(counter)
        scheduled_for = scheduled_for or RUN_BASE_TIME + timedelta(minutes=n)
        if started_at is None and status != "pending":
            started_at = scheduled_for
        if finished_at is None and status in FINISHED_STATUSES and started_at is not None:
            finished_at = started_at + timedelta(seconds=duration_seconds or 0)
        with app.app_context():
            run = Run(
                task_id=task_id, status=status, trigger=trigger, attempt=attempt,
                scheduled_for=scheduled_for, started_at=started_at, finished_at=finished_at,
                duration_seconds=duration_seconds, output=output, message=message, exit_code=exit_code,
                created_at=scheduled_for,
            )
            db.session.add(run)
            db.session.commit()
            return run.id

    return add


@pytest.fixture
def set_task(app):
    """Write columns of a task directly (states the disabled scheduler never reaches)."""

    def update(task_id: int, **values) -> None:
        with app.app_context():
            db.session.execute(sa.update(Task).where(Task.id == task_id).values(**values))
            db.session.commit()

    return update


@pytest.fixture
def count_rows(app):
    """How many rows a model's table holds (optionally filtered by column values)."""

    def count(model, **where) -> int:
        with app.app_context():
            query = sa.select(sa.func.count()).select_from(model)
            for column, value in where.items():
                query = query.where(getattr(model, column) == value)
            return db.session.execute(query).scalar_one()

    return count
