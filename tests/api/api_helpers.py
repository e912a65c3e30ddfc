"""Plain helpers for the API tests: factories, oracles and assertions.

Tasks are created through the API, like a user would; runs with statuses the
disabled scheduler never produces are inserted directly with the models.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from scheduler_service.auth import issue_token
from scheduler_service.extensions import db
from scheduler_service.models import FINISHED_RUN_STATUSES as FINISHED_STATUSES, Run, Task

UTC = timezone.utc
# Runs inserted by the tests are spread from here, one minute apart, unless told otherwise.
RUN_BASE_TIME = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
HUGE_ID = 99999999999999999999

TASK_FIELDS = {
    "id", "name", "description", "cron_expression", "interval_seconds", "run_at", "schedule_anchor", "timezone",
    "calendar", "jitter_seconds", "catchup", "enabled", "depends_on", "action",
    "timeout_seconds", "max_retries", "retry_delay_seconds", "retry_max_delay_seconds",
    "concurrency_policy", "misfire_grace_seconds", "notify", "status", "retry_count",
    "last_run_at", "next_run_at", "created_at", "updated_at",
    "pool", "pause_after_failures", "pause_note", "paused_until", "paused_by", "consecutive_failures",
}
RUN_FIELDS = {
    "id", "task_id", "task_name", "attempt", "trigger", "status", "scheduled_for", "started_at",
    "finished_at", "duration_seconds", "exit_code", "http_status", "output", "message",
}

_names = itertools.count(1)
_slots = itertools.count(1)


# --- time --------------------------------------------------------------------------


def now() -> datetime:
    return datetime.now(UTC)


def parse_time(value: str) -> datetime:
    """An API time: ISO 8601, in UTC, with an explicit +00:00 offset."""
    assert isinstance(value, str), value
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"time without offset: {value!r}"
    assert value.endswith("+00:00"), f"time not in UTC: {value!r}"
    return parsed


def cron_next(expression: str, after: datetime) -> datetime:
    """Independent oracle for UTC schedules: croniter's first match strictly after ``after``."""
    from croniter import croniter

    return croniter(expression, after.astimezone(UTC)).get_next(datetime).astimezone(UTC)


def bracketed_next(expression: str, before: datetime, after: datetime) -> set[str]:
    """The next UTC slot as seen from either end of a request (the service reads the clock in between)."""
    return {cron_next(expression, before).isoformat(), cron_next(expression, after).isoformat()}


# --- responses ---------------------------------------------------------------------


def assert_json_error(response, status: int) -> dict:
    """The service's one error shape ({"code", "status", ...}), never HTML."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:500])
    assert response.mimetype == "application/json", response.headers.get("Content-Type")
    body = response.get_json()
    assert isinstance(body, dict), body
    assert body["code"] == status, body
    return body


def field_errors(response, location: str = "json") -> dict:
    """The ``errors.<location>`` mapping of a 422 answer."""
    body = assert_json_error(response, 422)
    errors = body["errors"][location]
    assert isinstance(errors, dict), body
    return errors


def error_at(errors: dict, path: str):
    """``errors`` entry at a dotted path ("action.type"), or None if it is not named."""
    node = errors
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def call(method, *args, **kwargs):
    """A request whose unexpected exception (a 500 outside of tests) becomes a string to report."""
    try:
        return method(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - reported as a failing case, not swallowed
        return f"server error (500): {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def describe(response) -> str:
    if isinstance(response, str):
        return response
    return f"{response.status_code} {response.get_data(as_text=True)[:300]}"


# --- factories ---------------------------------------------------------------------


def task_payload(**overrides) -> dict:
    """A valid task body with a unique name; keyword arguments replace fields (None is kept)."""
    body = {
        "name": f"task-{next(_names)}",
        "cron_expression": "*/5 * * * *",
        "action": {"type": "http", "url": "http://example.com/hook"},
    }
    body.update(overrides)
    return body


SHELL_TRUE = {"type": "shell", "command": "true"}


def make_task(client, **overrides) -> dict:
    """POST a valid task (with overrides); return the created task's JSON."""
    response = client.post("/api/tasks/", json=task_payload(**overrides))
    assert response.status_code == 201, describe(response)
    return response.get_json()


def add_run(app, task_id: int, status: str = "success", *, trigger: str = "schedule", attempt: int = 1,
            scheduled_for: datetime | None = None, started_at: datetime | None = None,
            finished_at: datetime | None = None, duration_seconds: float | None = None,
            output: str = "", message: str = "", exit_code: int | None = None) -> int:
    """Insert one Run row and return its id; times default sensibly for the status."""
    scheduled_for = scheduled_for or RUN_BASE_TIME + timedelta(minutes=next(_slots))
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


def set_task(app, task_id: int, **values) -> None:
    """Write columns of a task directly (states the disabled scheduler never reaches).
    A slot written this way comes due at once (no jitter) unless ``due_at`` is given."""
    if "next_run_at" in values:
        values.setdefault("due_at", values["next_run_at"])
    with app.app_context():
        db.session.execute(sa.update(Task).where(Task.id == task_id).values(**values))
        db.session.commit()


def count_rows(app, model, **where) -> int:
    """How many rows a model's table holds, optionally only those with the given column values."""
    with app.app_context():
        query = sa.select(sa.func.count()).select_from(model)
        for column, value in where.items():
            query = query.where(getattr(model, column) == value)
        return db.session.execute(query).scalar_one()


def shared_client(tmp_path_factory, **config) -> Iterator:
    """A module-wide SQLite app and authenticated client, for endpoints that store nothing
    (preview, OpenAPI, docs, routing errors): building an app per test is what costs time."""
    from tests.appfactory import make_app, reset_database

    app = make_app(f"sqlite:///{tmp_path_factory.mktemp('shared') / 'test.db'}", **config)
    reset_database(app)
    with app.app_context():
        token = issue_token("shared")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    yield client
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


class Failures:
    """Collects the cases of a table-driven test that went wrong, to report them all at once."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def check(self, ok: bool, label: str, detail: str = "") -> None:
        if not ok:
            self.items.append(f"{label}: {detail}")

    def assert_none(self) -> None:
        assert not self.items, "failing cases:\n  " + "\n  ".join(self.items)
