"""Fixtures for the operations tests: the real engine in this process, and a real webhook receiver."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from scheduler_service import ops
from scheduler_service.extensions import db, scheduler
from scheduler_service.models import Task
from tests.api import api_helpers
from tests.api.api_helpers import SHELL_TRUE
from tests.ops.ops_helpers import WEBHOOK_SECRET, Webhook


@pytest.fixture
def app_config() -> dict:
    return {
        "SCHEDULER_TICK_SECONDS": 1, "RUN_LEASE_SECONDS": 3,
        "ALERT_WEBHOOK_SECRET": WEBHOOK_SECRET, "ALERT_RETRY_BASE_SECONDS": 0.2,
    }


@pytest.fixture
def engine(app):
    """The scheduler running in this process against the test database (its ops jobs stopped with it)."""
    running = scheduler.start(app)
    yield running
    scheduler.stop(app, 0)
    ops.stop_jobs(app)


@pytest.fixture
def make_task(client):
    """POST a task (by default yearly: it runs when a test says so); returns its JSON."""

    def make(**fields):
        return api_helpers.make_task(client, **{"cron_expression": "0 0 1 1 *", "action": SHELL_TRUE, **fields})

    return make


@pytest.fixture
def set_task(app):
    """Write columns of a task directly (what the API cannot: e.g. a next_run_at in the past)."""

    def update(task_id: int, **values):
        if "next_run_at" in values:  # a slot written this way comes due at once (no jitter)
            values.setdefault("due_at", values["next_run_at"])
        with app.app_context():
            db.session.execute(sa.update(Task).where(Task.id == task_id).values(**values))
            db.session.commit()

    return update


@pytest.fixture
def webhook():
    server = Webhook()
    yield server
    server.close()
