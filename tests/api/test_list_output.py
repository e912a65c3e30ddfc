"""List pages are read as plain rows, not ORM objects: the bytes must not change.

The reference is the same schema dumping ORM objects loaded the ordinary way.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import marshmallow as ma
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from tests.api.api_helpers import UTC, add_run, describe, make_task, set_task
from scheduler_service.extensions import db
from scheduler_service.models import Run, Task
from scheduler_service.schemas import LIST_OUTPUT_CHARS, RunSummarySchema, TaskSchema

T0 = datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)
AWKWARD_TEXT = 'naïve ☃ 🚀 "quoted" </script> \\ \u2028 \t tab'


@pytest.fixture
def app_config() -> dict:
    return {"ALERT_WEBHOOK_URL": "http://hooks.example.internal/default"}


def _tricky_tasks(app, client) -> None:
    first = make_task(client, name="first " + AWKWARD_TEXT, description="line 1\nline 2\r\n\x7f")
    second = make_task(
        client, name="second", cron_expression="0 3 * * 1-5", timezone="America/New_York", enabled=False,
        timeout_seconds=None, max_retries=0, misfire_grace_seconds=0, concurrency_policy="allow",
        action={"type": "http", "url": "https://example.com/a?b=c", "method": "POST",
                "headers": {"X-Key": "v é"}, "body": {"list": [1, 0.1, None, True, "s"], "float": 1e-7},
                "expect_status": [200, 204]},
        notify={"url": "http://hooks.example.internal/x", "events": ["failure", "late"], "late_after_seconds": 30},
    )
    make_task(client, name="child", cron_expression=None, depends_on=[second["id"], first["id"]],
              action={"type": "python", "callable": "pkg.mod:fn", "args": [1, 2.5, True, "x"],
                      "kwargs": {"k": {"nested": [1, {"deep": "é"}]}}})
    make_task(client, name="notify default", notify={"events": []})
    set_task(app, second["id"], status="retrying", retry_count=2, last_run_at=T0,
             next_run_at=T0 + timedelta(days=3, microseconds=1))


def _tricky_runs(app, task_id: int) -> None:
    cut = "é🚀" * LIST_OUTPUT_CHARS + "THE END"  # multi-byte characters on both sides of the cut
    add_run(app, task_id, "failed", trigger="retry", attempt=2, started_at=T0, finished_at=T0 + timedelta(seconds=1),
            duration_seconds=0.1 + 0.2, output=cut, message=AWKWARD_TEXT, exit_code=-9)
    add_run(app, task_id, "running", started_at=T0, output="partial")
    add_run(app, task_id, "pending", trigger="manual")
    add_run(app, task_id, "success", duration_seconds=12345678.9, output="x" * LIST_OUTPUT_CHARS)
    run_id = add_run(app, task_id, "skipped", trigger="dependency", message="parent 'x' failed")
    with app.app_context():
        db.session.execute(sa.update(Run).where(Run.id == run_id).values(http_status=503, duration_seconds=1e-7))
        db.session.commit()


def _marshmallow_bytes(app, schema: ma.Schema, objects: list) -> bytes:
    items = ma.Schema.dump(schema, objects, many=True)
    return app.json.response({"items": items, "next_cursor": None}).get_data()


def test_list_pages_are_byte_for_byte_what_marshmallow_gives(app, client):
    _tricky_tasks(app, client)
    task_ids = [task["id"] for task in client.get("/api/tasks/").get_json()["items"]]
    _tricky_runs(app, task_ids[1])
    _tricky_runs(app, task_ids[0])

    tasks_page = client.get("/api/tasks/?limit=500")
    logs_page = client.get("/api/logs/?limit=500")
    assert tasks_page.status_code == 200, describe(tasks_page)
    assert logs_page.status_code == 200, describe(logs_page)

    with app.app_context():
        tasks = db.session.scalars(sa.select(Task).options(selectinload(Task.parents)).order_by(Task.id)).all()
        runs = db.session.scalars(sa.select(Run).order_by(Run.id.desc())).all()
        assert tasks_page.get_data() == _marshmallow_bytes(app, TaskSchema(), tasks)
        assert logs_page.get_data() == _marshmallow_bytes(app, RunSummarySchema(), runs)

    child = next(task for task in tasks_page.get_json()["items"] if task["name"] == "child")
    assert child["depends_on"] == sorted(task_ids[:2])
    assert len(logs_page.get_json()["items"]) == 10
