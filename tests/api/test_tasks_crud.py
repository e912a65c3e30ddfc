"""Tasks: create, read, replace, change, delete, toggle."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from api_helpers import TASK_FIELDS, UTC, assert_json_error, cron_next, field_errors, now, parse_time
from scheduler_service.models import Run, Task

HUGE_ID = 99999999999999999999


def bracketed_next(expression: str, before: datetime, after: datetime) -> set[str]:
    """The next slot as seen from either end of a request (the service reads the clock in between)."""
    return {cron_next(expression, before).isoformat(), cron_next(expression, after).isoformat()}


# --- create ------------------------------------------------------------------------


def test_create_answers_201_with_every_field_and_the_defaults(client, count_rows):
    before = now()
    response = client.post(
        "/api/tasks/",
        json={"name": "nightly-backup", "cron_expression": "*/5 * * * *",
              "action": {"type": "http", "url": "http://example.com/hook"}},
    )
    after = now()

    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    task = response.get_json()
    assert set(task) == TASK_FIELDS
    assert isinstance(task["id"], int)
    assert {key: task[key] for key in TASK_FIELDS - {"id", "next_run_at", "created_at", "updated_at"}} == {
        "name": "nightly-backup",
        "description": "",
        "cron_expression": "*/5 * * * *",
        "timezone": "UTC",
        "enabled": True,
        "depends_on": [],
        "action": {"type": "http", "url": "http://example.com/hook", "method": "GET", "headers": {},
                   "body": None, "expect_status": None},
        "timeout_seconds": 3600,
        "max_retries": 3,
        "retry_delay_seconds": 60,
        "retry_max_delay_seconds": 3600,
        "concurrency_policy": "forbid",
        "misfire_grace_seconds": 60,
        "status": "pending",
        "retry_count": 0,
        "last_run_at": None,
    }
    # next_run_at: the next matching time after creation, in UTC with an explicit +00:00.
    assert task["next_run_at"] in bracketed_next("*/5 * * * *", before, after)
    assert parse_time(task["next_run_at"]) > before
    created_at, updated_at = parse_time(task["created_at"]), parse_time(task["updated_at"])
    assert before <= created_at <= after
    assert before <= updated_at <= after

    # Persisted: reading it back gives the same document.
    stored = client.get(f"/api/tasks/{task['id']}/")
    assert stored.status_code == 200
    assert stored.get_json() == task
    assert count_rows(Task) == 1


def test_create_keeps_every_given_field(client, make_task):
    task = make_task(
        name="report", description="weekly report", cron_expression="0 9 * * 1", timezone="Europe/Berlin",
        enabled=True, timeout_seconds=None, max_retries=0, retry_delay_seconds=5, retry_max_delay_seconds=50,
        concurrency_policy="allow", misfire_grace_seconds=0,
    )
    expected = {
        "name": "report", "description": "weekly report", "cron_expression": "0 9 * * 1",
        "timezone": "Europe/Berlin", "enabled": True, "timeout_seconds": None, "max_retries": 0,
        "retry_delay_seconds": 5, "retry_max_delay_seconds": 50, "concurrency_policy": "allow",
        "misfire_grace_seconds": 0,
    }
    assert {key: task[key] for key in expected} == expected
    stored = client.get(f"/api/tasks/{task['id']}/").get_json()
    assert {key: stored[key] for key in expected} == expected


def test_create_with_timeout_null_means_no_timeout(client, make_task):
    task = make_task(timeout_seconds=None)
    assert task["timeout_seconds"] is None
    assert client.get(f"/api/tasks/{task['id']}/").get_json()["timeout_seconds"] is None


def test_create_disabled_task_has_no_next_run(client, make_task):
    task = make_task(enabled=False)
    assert task["enabled"] is False
    assert task["next_run_at"] is None
    assert client.get(f"/api/tasks/{task['id']}/").get_json()["next_run_at"] is None


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ({"type": "shell", "command": "echo hi"},
         {"type": "shell", "command": "echo hi", "env": {}, "cwd": None}),
        ({"type": "shell", "command": "env | sort", "env": {"A": "1", "PATH_EXTRA": "/opt/bin"}, "cwd": "/tmp"},
         {"type": "shell", "command": "env | sort", "env": {"A": "1", "PATH_EXTRA": "/opt/bin"}, "cwd": "/tmp"}),
        ({"type": "http", "url": "https://api.example.com/v1/ping"},
         {"type": "http", "url": "https://api.example.com/v1/ping", "method": "GET", "headers": {},
          "body": None, "expect_status": None}),
        ({"type": "http", "url": "http://localhost:8080/jobs", "method": "POST",
          "headers": {"X-Token": "abc"}, "body": {"job": "sync", "ids": [1, 2]}, "expect_status": 201},
         {"type": "http", "url": "http://localhost:8080/jobs", "method": "POST",
          "headers": {"X-Token": "abc"}, "body": {"job": "sync", "ids": [1, 2]}, "expect_status": 201}),
        ({"type": "http", "url": "http://example.com/", "method": "PUT", "body": "plain text",
          "expect_status": [200, 204]},
         {"type": "http", "url": "http://example.com/", "method": "PUT", "headers": {}, "body": "plain text",
          "expect_status": [200, 204]}),
        ({"type": "python", "callable": "reports.weekly:build"},
         {"type": "python", "callable": "reports.weekly:build", "args": [], "kwargs": {}}),
        ({"type": "python", "callable": "pkg.mod:func", "args": [1, "two", {"three": 3}],
          "kwargs": {"flag": True, "none": None}},
         {"type": "python", "callable": "pkg.mod:func", "args": [1, "two", {"three": 3}],
          "kwargs": {"flag": True, "none": None}}),
    ],
    ids=["shell", "shell-env-cwd", "http", "http-full", "http-status-list", "python", "python-args"],
)
def test_each_action_type_round_trips_with_its_defaults(client, make_task, action, expected):
    task = make_task(action=action)
    assert task["action"] == expected
    assert client.get(f"/api/tasks/{task['id']}/").get_json()["action"] == expected
    listed = client.get("/api/tasks/").get_json()["items"]
    assert [item["action"] for item in listed] == [expected]


@pytest.mark.parametrize(
    "expression",
    ["*/5 * * * *", "0 0 * * * 30", "15 10 * * * */20", "@hourly", "@daily", "@weekly", "@monthly", "@yearly"],
)
def test_5_field_6_field_and_alias_expressions_are_accepted(client, task_payload, expression):
    before = now()
    response = client.post("/api/tasks/", json=task_payload(cron_expression=expression))
    after = now()
    assert response.status_code == 201, response.get_data(as_text=True)
    task = response.get_json()
    assert task["cron_expression"] == expression
    assert task["next_run_at"] in bracketed_next(expression, before, after)


def test_six_field_expression_reads_seconds_last(make_task):
    task = make_task(cron_expression="0 0 * * * 30")
    next_run = parse_time(task["next_run_at"])
    assert (next_run.hour, next_run.minute, next_run.second) == (0, 0, 30)


def test_next_run_is_read_in_the_task_time_zone(make_task):
    before = now()
    task = make_task(cron_expression="30 2 * * *", timezone="America/New_York")
    after = now()
    zone = ZoneInfo("America/New_York")

    def expected_after(moment: datetime) -> datetime:
        local = moment.astimezone(zone)
        candidate = local.replace(hour=2, minute=30, second=0, microsecond=0)
        if candidate <= local:
            candidate = (local + timedelta(days=1)).replace(hour=2, minute=30, second=0, microsecond=0)
        return candidate.astimezone(UTC)

    next_run = parse_time(task["next_run_at"])
    assert next_run in {expected_after(before), expected_after(after)}
    if next_run.astimezone(zone).utcoffset() == timedelta(hours=-5):  # winter (EST)
        assert task["next_run_at"].endswith("T07:30:00+00:00")


def test_next_run_in_new_york_winter_is_0730_utc(client):
    response = client.get("/api/schedule/preview/", query_string={
        "cron_expression": "30 2 * * *", "timezone": "America/New_York", "start": "2026-01-15T00:00:00Z", "count": 1,
    })
    assert response.status_code == 200
    assert response.get_json()["next_runs"] == ["2026-01-15T07:30:00+00:00"]


# --- read ----------------------------------------------------------------------------


@pytest.mark.parametrize("task_id", [12345, HUGE_ID])
def test_get_unknown_task_is_404(client, make_task, task_id):
    make_task()
    assert_json_error(client.get(f"/api/tasks/{task_id}/"), 404)


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_write_to_unknown_task_is_404(client, task_payload, method):
    for task_id in (777, HUGE_ID):
        kwargs = {"json": task_payload()} if method == "put" else {"json": {}} if method == "patch" else {}
        assert_json_error(getattr(client, method)(f"/api/tasks/{task_id}/", **kwargs), 404)


@pytest.mark.parametrize("action", ["toggle", "run"])
def test_toggle_and_run_unknown_task_are_404(client, count_rows, action):
    for task_id in (777, HUGE_ID):
        assert_json_error(client.post(f"/api/tasks/{task_id}/{action}/"), 404)
    assert count_rows(Run) == 0


# --- PUT ----------------------------------------------------------------------------


def test_put_replaces_and_omitted_fields_return_to_defaults(client, make_task):
    parent = make_task(name="parent")
    task = make_task(
        name="original", description="old text", timezone="Asia/Tokyo", enabled=False, depends_on=[parent["id"]],
        action={"type": "shell", "command": "echo old", "env": {"A": "1"}},
        timeout_seconds=10, max_retries=7, retry_delay_seconds=9, retry_max_delay_seconds=99,
        concurrency_policy="allow", misfire_grace_seconds=5,
    )
    before = now()
    response = client.put(f"/api/tasks/{task['id']}/", json={
        "name": "replaced", "cron_expression": "*/5 * * * *",
        "action": {"type": "http", "url": "http://example.com/new"},
    })
    after = now()
    assert response.status_code == 200, response.get_data(as_text=True)
    updated = response.get_json()
    assert updated["id"] == task["id"]
    expected = {
        "name": "replaced", "description": "", "cron_expression": "*/5 * * * *", "timezone": "UTC",
        "enabled": True, "depends_on": [],
        "action": {"type": "http", "url": "http://example.com/new", "method": "GET", "headers": {},
                   "body": None, "expect_status": None},
        "timeout_seconds": 3600, "max_retries": 3, "retry_delay_seconds": 60, "retry_max_delay_seconds": 3600,
        "concurrency_policy": "forbid", "misfire_grace_seconds": 60,
        "created_at": task["created_at"],
    }
    assert {key: updated[key] for key in expected} == expected
    # Re-enabled by the replacement: the next slot is computed from now.
    assert updated["next_run_at"] in bracketed_next("*/5 * * * *", before, after)
    assert parse_time(updated["updated_at"]) >= parse_time(task["updated_at"])
    assert client.get(f"/api/tasks/{task['id']}/").get_json() == updated
    # The old parent is free again: deleting it now works.
    assert client.delete(f"/api/tasks/{parent['id']}/").status_code == 204


def test_put_requires_the_required_fields(client, make_task):
    task = make_task(description="keep me")
    errors = field_errors(client.put(f"/api/tasks/{task['id']}/", json={"description": "only this"}))
    assert {"name", "action"} <= set(errors)
    assert client.get(f"/api/tasks/{task['id']}/").get_json() == task


def test_put_with_own_name_is_not_a_conflict(client, make_task, task_payload):
    task = make_task(name="same-name")
    response = client.put(f"/api/tasks/{task['id']}/", json=task_payload(name="same-name", description="new"))
    assert response.status_code == 200
    assert response.get_json()["description"] == "new"


def test_put_to_another_tasks_name_is_409_and_changes_nothing(client, make_task, task_payload):
    make_task(name="taken")
    task = make_task(name="mine")
    response = client.put(f"/api/tasks/{task['id']}/", json=task_payload(name="taken", description="x"))
    assert_json_error(response, 409)
    assert client.get(f"/api/tasks/{task['id']}/").get_json() == task


# --- PATCH --------------------------------------------------------------------------


def test_patch_changes_only_the_given_fields(client, make_task):
    task = make_task(name="patch-me", description="before", max_retries=5, timezone="Europe/Paris")
    response = client.patch(f"/api/tasks/{task['id']}/", json={"description": "after", "max_retries": 0})
    assert response.status_code == 200, response.get_data(as_text=True)
    patched = response.get_json()
    assert patched["description"] == "after"
    assert patched["max_retries"] == 0
    unchanged = TASK_FIELDS - {"description", "max_retries", "updated_at"}
    assert {key: patched[key] for key in unchanged} == {key: task[key] for key in unchanged}
    assert client.get(f"/api/tasks/{task['id']}/").get_json() == patched


def test_empty_patch_changes_nothing(client, make_task):
    task = make_task()
    response = client.patch(f"/api/tasks/{task['id']}/", json={})
    assert response.status_code == 200
    patched = response.get_json()
    assert {k: patched[k] for k in TASK_FIELDS - {"updated_at"}} == {k: task[k] for k in TASK_FIELDS - {"updated_at"}}


def test_patch_timeout_to_null(client, make_task):
    task = make_task(timeout_seconds=30)
    response = client.patch(f"/api/tasks/{task['id']}/", json={"timeout_seconds": None})
    assert response.status_code == 200
    assert response.get_json()["timeout_seconds"] is None
    assert client.get(f"/api/tasks/{task['id']}/").get_json()["timeout_seconds"] is None


def test_patch_cron_expression_recomputes_next_run(client, make_task):
    task = make_task(cron_expression="0 0 1 1 *")
    assert parse_time(task["next_run_at"]).strftime("%m-%d %H:%M") == "01-01 00:00"
    before = now()
    response = client.patch(f"/api/tasks/{task['id']}/", json={"cron_expression": "*/5 * * * *"})
    after = now()
    assert response.status_code == 200
    patched = response.get_json()
    assert patched["cron_expression"] == "*/5 * * * *"
    assert patched["next_run_at"] in bracketed_next("*/5 * * * *", before, after)
    assert client.get(f"/api/tasks/{task['id']}/").get_json()["next_run_at"] == patched["next_run_at"]


def test_patch_timezone_recomputes_next_run(client, make_task):
    task = make_task(cron_expression="30 2 * * *")
    next_run = parse_time(task["next_run_at"])
    assert (next_run.hour, next_run.minute) == (2, 30)
    response = client.patch(f"/api/tasks/{task['id']}/", json={"timezone": "Asia/Tokyo"})
    assert response.status_code == 200
    patched = response.get_json()
    assert patched["timezone"] == "Asia/Tokyo"
    next_run = parse_time(patched["next_run_at"])
    assert (next_run.hour, next_run.minute) == (17, 30)  # 02:30 JST (UTC+9, no DST)
    assert next_run > now()
    assert next_run - now() <= timedelta(days=1)


def test_patch_name_to_an_existing_name_is_409(client, make_task):
    make_task(name="first")
    task = make_task(name="second")
    body = assert_json_error(client.patch(f"/api/tasks/{task['id']}/", json={"name": "first"}), 409)
    assert "first" in str(body)
    assert client.get(f"/api/tasks/{task['id']}/").get_json()["name"] == "second"


def test_patch_cron_to_null_without_parents_is_422(client, make_task):
    task = make_task()
    errors = field_errors(client.patch(f"/api/tasks/{task['id']}/", json={"cron_expression": None}))
    assert "cron_expression" in errors
    assert client.get(f"/api/tasks/{task['id']}/").get_json() == task


# --- DELETE -------------------------------------------------------------------------


def test_delete_answers_204_then_the_task_is_gone(client, make_task, count_rows):
    task = make_task()
    other = make_task()
    response = client.delete(f"/api/tasks/{task['id']}/")
    assert response.status_code == 204
    assert response.get_data() == b""
    assert_json_error(client.get(f"/api/tasks/{task['id']}/"), 404)
    assert_json_error(client.delete(f"/api/tasks/{task['id']}/"), 404)
    assert [item["id"] for item in client.get("/api/tasks/").get_json()["items"]] == [other["id"]]
    assert count_rows(Task) == 1


def test_deleting_a_task_deletes_its_runs(client, make_task, add_run, count_rows):
    task = make_task()
    other = make_task()
    run_ids = [add_run(task["id"], "success"), add_run(task["id"], "failed")]
    manual = client.post(f"/api/tasks/{task['id']}/run/").get_json()["id"]
    kept = add_run(other["id"], "success")
    assert count_rows(Run) == 4

    assert client.delete(f"/api/tasks/{task['id']}/").status_code == 204
    for run_id in [*run_ids, manual]:
        assert_json_error(client.get(f"/api/logs/{run_id}/"), 404)
    assert [item["id"] for item in client.get("/api/logs/").get_json()["items"]] == [kept]
    assert count_rows(Run, task_id=task["id"]) == 0
    assert count_rows(Run) == 1


def test_deleting_a_parent_is_409_and_deletes_nothing(client, make_task, add_run, count_rows):
    parent = make_task(name="extract")
    child = make_task(name="load", cron_expression=None, depends_on=[parent["id"]])
    add_run(parent["id"], "success")

    body = assert_json_error(client.delete(f"/api/tasks/{parent['id']}/"), 409)
    assert "load" in body.get("message", "")
    assert client.get(f"/api/tasks/{parent['id']}/").get_json() == parent
    assert client.get(f"/api/tasks/{child['id']}/").get_json()["depends_on"] == [parent["id"]]
    assert count_rows(Task) == 2
    assert count_rows(Run) == 1

    # Once the child is gone, the parent can go.
    assert client.delete(f"/api/tasks/{child['id']}/").status_code == 204
    assert client.delete(f"/api/tasks/{parent['id']}/").status_code == 204
    assert count_rows(Task) == 0
    assert count_rows(Run) == 0


def test_deleting_a_child_keeps_its_parent(client, make_task):
    parent = make_task()
    child = make_task(depends_on=[parent["id"]])
    assert client.delete(f"/api/tasks/{child['id']}/").status_code == 204
    assert client.get(f"/api/tasks/{parent['id']}/").get_json() == parent


# --- toggle -------------------------------------------------------------------------


def test_toggle_flips_enabled_and_clears_then_recomputes_next_run(client, make_task):
    task = make_task(cron_expression="*/5 * * * *")
    assert task["enabled"] is True and task["next_run_at"] is not None

    response = client.post(f"/api/tasks/{task['id']}/toggle/")
    assert response.status_code == 200
    disabled = response.get_json()
    assert disabled["enabled"] is False
    assert disabled["next_run_at"] is None
    assert client.get(f"/api/tasks/{task['id']}/").get_json() == disabled

    before = now()
    response = client.post(f"/api/tasks/{task['id']}/toggle/")
    after = now()
    assert response.status_code == 200
    enabled = response.get_json()
    assert enabled["enabled"] is True
    assert enabled["next_run_at"] in bracketed_next("*/5 * * * *", before, after)
    assert client.get(f"/api/tasks/{task['id']}/").get_json() == enabled


def test_reenabling_computes_the_next_slot_from_now_not_from_missed_slots(client, make_task, set_task):
    task = make_task(cron_expression="* * * * *", enabled=False)
    # The task was last scheduled long ago: those slots were missed while disabled.
    set_task(task["id"], next_run_at=datetime(2020, 1, 1, tzinfo=UTC))
    before = now()
    enabled = client.post(f"/api/tasks/{task['id']}/toggle/").get_json()
    after = now()
    assert enabled["enabled"] is True
    next_run = parse_time(enabled["next_run_at"])
    assert next_run > before
    assert enabled["next_run_at"] in bracketed_next("* * * * *", before, after)


def test_patch_enabled_false_then_true(client, make_task, set_task):
    task = make_task(cron_expression="* * * * *")
    disabled = client.patch(f"/api/tasks/{task['id']}/", json={"enabled": False}).get_json()
    assert disabled["enabled"] is False and disabled["next_run_at"] is None
    set_task(task["id"], next_run_at=datetime(2020, 1, 1, tzinfo=UTC))
    before = now()
    enabled = client.patch(f"/api/tasks/{task['id']}/", json={"enabled": True}).get_json()
    after = now()
    assert enabled["enabled"] is True
    assert enabled["next_run_at"] in bracketed_next("* * * * *", before, after)
