"""Fixtures for tests that run the real engine: a scheduler in this process, fast ticks."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scheduler_service.extensions import scheduler
from tests.api import api_helpers
from tests.api.api_helpers import SHELL_TRUE


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
        return api_helpers.make_task(client, **{"cron_expression": None, "action": SHELL_TRUE, **fields})

    return make


@pytest.fixture
def samples(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The sample_callables module, importable by name like deployment code would be."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))
    import sample_callables

    sample_callables.busy_started.clear()
    sample_callables.busy_exited.clear()
    return sample_callables
