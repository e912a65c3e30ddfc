"""Fixtures shared by the tests that run the real engine (tests/engine, tests/ops):
read a task's rows, and wait for what the engine does."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from scheduler_service.extensions import db
from scheduler_service.models import Run, Task
from tests.waiting import process_gone, wait_until as _wait_until


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
    return _wait_until


@pytest.fixture
def gone():
    return process_gone
