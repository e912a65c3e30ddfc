"""POST /api/tasks/{id}/run/: 202 with a pending manual run; 409 under forbid while one is active."""
from __future__ import annotations

from tests.api.api_helpers import (
    RUN_FIELDS, assert_json_error, count_rows, describe, make_task, now, parse_time, set_task,
)
from scheduler_service.models import Run


def test_run_now_answers_202_with_the_new_run_and_forbid_refuses_a_second(app, client):
    task = make_task(client, name="report")
    before = now()
    response = client.post(f"/api/tasks/{task['id']}/run/")
    after = now()
    assert response.status_code == 202, describe(response)
    run = response.get_json()
    assert set(run) == RUN_FIELDS
    assert {key: run[key] for key in ("task_id", "task_name", "trigger", "status", "attempt")} == {
        "task_id": task["id"], "task_name": "report", "trigger": "manual", "status": "pending", "attempt": 1,
    }
    assert before <= parse_time(run["scheduled_for"]) <= after
    assert run["started_at"] is None and run["finished_at"] is None
    assert client.get(f"/api/logs/{run['id']}/").get_json() == run
    assert client.get("/api/logs/").get_json()["items"] == [run]

    # forbid (the default): a second request while the first is pending is refused.
    body = assert_json_error(client.post(f"/api/tasks/{task['id']}/run/"), 409)
    assert "message" in body
    assert count_rows(app, Run) == 1

    # allow: another run is queued while one is pending.
    task = make_task(client, concurrency_policy="allow")
    first = client.post(f"/api/tasks/{task['id']}/run/")
    second = client.post(f"/api/tasks/{task['id']}/run/")
    assert (first.status_code, second.status_code) == (202, 202), (describe(first), describe(second))
    assert first.get_json()["id"] != second.get_json()["id"]
    assert count_rows(app, Run, task_id=task["id"], trigger="manual") == 2


def test_run_now_ignores_enabled_and_dependencies_but_not_a_retry_under_forbid(app, client):
    disabled = make_task(client, enabled=False)
    response = client.post(f"/api/tasks/{disabled['id']}/run/")
    assert response.status_code == 202, describe(response)
    assert response.get_json()["trigger"] == "manual"
    assert client.get(f"/api/tasks/{disabled['id']}/").get_json()["enabled"] is False

    # A parent that never ran does not hold back a manual run of its child.
    parent = make_task(client)
    child = make_task(client, cron_expression=None, depends_on=[parent["id"]])
    assert client.post(f"/api/tasks/{child['id']}/run/").status_code == 202

    # A task waiting for a retry is active: forbid refuses a manual run.
    retrying = make_task(client)
    set_task(app, retrying["id"], status="retrying", retry_count=1)
    assert_json_error(client.post(f"/api/tasks/{retrying['id']}/run/"), 409)
    assert count_rows(app, Run, task_id=retrying["id"]) == 0
