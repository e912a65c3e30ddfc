"""Plain helpers for the API tests (fixtures live in conftest.py)."""
from __future__ import annotations

from datetime import datetime, timezone

UTC = timezone.utc
# Runs inserted by the tests are spread from here, one minute apart.
RUN_BASE_TIME = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def parse_time(value: str) -> datetime:
    """An API time: ISO 8601 with an explicit UTC offset."""
    assert isinstance(value, str), value
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, f"time without offset: {value!r}"
    assert value.endswith("+00:00"), f"time not in UTC: {value!r}"
    return parsed


def assert_json_error(response, status: int) -> dict:
    """The service's one error shape, never HTML."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:500])
    assert response.mimetype == "application/json", response.headers.get("Content-Type")
    body = response.get_json()
    assert isinstance(body, dict)
    assert body["code"] == status
    return body


def field_errors(response, location: str = "json") -> dict:
    """The ``errors.<location>`` mapping of a 422 answer."""
    body = assert_json_error(response, 422)
    errors = body["errors"][location]
    assert isinstance(errors, dict)
    return errors


def now() -> datetime:
    return datetime.now(UTC)


def cron_next(expression: str, after: datetime) -> datetime:
    """Independent oracle for UTC schedules: croniter's first match strictly after ``after``."""
    from croniter import croniter

    return croniter(expression, after.astimezone(UTC)).get_next(datetime).astimezone(UTC)


TASK_FIELDS = {
    "id", "name", "description", "cron_expression", "timezone", "enabled", "depends_on", "action",
    "timeout_seconds", "max_retries", "retry_delay_seconds", "retry_max_delay_seconds",
    "concurrency_policy", "misfire_grace_seconds", "status", "retry_count",
    "last_run_at", "next_run_at", "created_at", "updated_at",
}
RUN_FIELDS = {
    "id", "task_id", "task_name", "attempt", "trigger", "status", "scheduled_for", "started_at",
    "finished_at", "duration_seconds", "exit_code", "http_status", "output", "message",
}
