"""Tasks: create, read, replace (PUT), change (PATCH), delete, toggle."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from tests.api.api_helpers import (
    HUGE_ID, TASK_FIELDS, UTC, Failures, add_run, assert_json_error, bracketed_next, count_rows, describe,
    field_errors, make_task, now, parse_time, set_task, task_payload,
)
from scheduler_service.models import Run, Task

DEFAULT_HTTP_ACTION = {"type": "http", "url": "http://example.com/hook", "method": "GET", "headers": {},
                       "body": None, "expect_status": None}


# --- create ------------------------------------------------------------------------


def test_create_answers_201_with_every_field_and_the_defaults(app, client):
    before = now()
    response = client.post(
        "/api/tasks/",
        json={"name": "nightly-backup", "cron_expression": "*/5 * * * *",
              "action": {"type": "http", "url": "http://example.com/hook"}},
    )
    after = now()

    assert response.status_code == 201, describe(response)
    assert response.mimetype == "application/json"
    task = response.get_json()
    assert set(task) == TASK_FIELDS
    assert isinstance(task["id"], int)
    assert {key: task[key] for key in TASK_FIELDS - {"id", "next_run_at", "created_at", "updated_at",
                                                     "schedule_anchor"}} == {
        "name": "nightly-backup",
        "description": "",
        "cron_expression": "*/5 * * * *",
        "interval_seconds": None,
        "run_at": None,
        "timezone": "UTC",
        "calendar": None,
        "jitter_seconds": 0,
        "catchup": "latest",
        "enabled": True,
        "depends_on": [],
        "action": DEFAULT_HTTP_ACTION,
        "timeout_seconds": 3600,
        "max_retries": 3,
        "retry_delay_seconds": 60,
        "retry_max_delay_seconds": 3600,
        "concurrency_policy": "forbid",
        "misfire_grace_seconds": 60,
        "notify": None,
        "status": "pending",
        "retry_count": 0,
        "last_run_at": None,
        "pool": None,
        "pause_after_failures": 0,
        "pause_note": None,
        "paused_until": None,
        "paused_by": None,
        "consecutive_failures": 0,
    }
    # next_run_at: the next matching time after creation, in UTC with an explicit +00:00.
    assert task["next_run_at"] in bracketed_next("*/5 * * * *", before, after)
    assert parse_time(task["next_run_at"]) > before
    assert before <= parse_time(task["created_at"]) <= after
    assert before <= parse_time(task["updated_at"]) <= after
    assert before.replace(microsecond=0) <= parse_time(task["schedule_anchor"]) <= after

    # Persisted: reading it back, alone or in the list, gives the same document.
    stored = client.get(f"/api/tasks/{task['id']}/")
    assert stored.status_code == 200
    assert stored.get_json() == task
    assert client.get("/api/tasks/").get_json() == {"items": [task], "next_cursor": None}
    assert count_rows(app, Task) == 1


def test_create_keeps_every_given_field(client):
    given = {
        "name": "report", "description": "weekly report", "cron_expression": "0 9 * * 1",
        "timezone": "Europe/Berlin", "enabled": False, "timeout_seconds": 10, "max_retries": 0,
        "retry_delay_seconds": 5, "retry_max_delay_seconds": 50, "concurrency_policy": "allow",
        "misfire_grace_seconds": 0,
    }
    task = make_task(client, **given)
    assert {key: task[key] for key in given} == given
    assert task["next_run_at"] is None  # disabled
    stored = client.get(f"/api/tasks/{task['id']}/").get_json()
    assert stored == task


def test_create_with_timeout_null_means_no_timeout(client):
    task = make_task(client, timeout_seconds=None)
    assert task["timeout_seconds"] is None
    assert client.get(f"/api/tasks/{task['id']}/").get_json()["timeout_seconds"] is None


ACTION_ROUND_TRIPS = [
    ({"type": "shell", "command": "echo hi"},
     {"type": "shell", "command": "echo hi", "env": {}, "cwd": None}),
    ({"type": "shell", "command": "env | sort", "env": {"A": "1", "EXTRA": "/opt/bin"}, "cwd": "/tmp"},
     # env and header values are write-only: reads show the mask (tests/api/test_secrets.py)
     {"type": "shell", "command": "env | sort", "env": {"A": "***", "EXTRA": "***"}, "cwd": "/tmp"}),
    ({"type": "http", "url": "https://api.example.com/v1/ping"},
     {"type": "http", "url": "https://api.example.com/v1/ping", "method": "GET", "headers": {},
      "body": None, "expect_status": None}),
    ({"type": "http", "url": "http://localhost:8080/jobs", "method": "POST",
      "headers": {"X-Token": "abc"}, "body": {"job": "sync", "ids": [1, 2]}, "expect_status": 201},
     {"type": "http", "url": "http://localhost:8080/jobs", "method": "POST",
      "headers": {"X-Token": "***"}, "body": {"job": "sync", "ids": [1, 2]}, "expect_status": 201}),
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
]


def test_each_action_type_round_trips_with_its_defaults(client):
    failures = Failures()
    created = []
    for action, expected in ACTION_ROUND_TRIPS:
        response = client.post("/api/tasks/", json=task_payload(action=action))
        failures.check(response.status_code == 201, f"create {action}", describe(response))
        if response.status_code != 201:
            continue
        task = response.get_json()
        created.append((task["id"], expected))
        failures.check(task["action"] == expected, f"response {action}", repr(task["action"]))
        stored = client.get(f"/api/tasks/{task['id']}/").get_json()["action"]
        failures.check(stored == expected, f"stored {action}", repr(stored))
    listed = {item["id"]: item["action"] for item in client.get("/api/tasks/").get_json()["items"]}
    for task_id, expected in created:
        failures.check(listed.get(task_id) == expected, f"listed {expected}", repr(listed.get(task_id)))
    failures.assert_none()


def test_5_field_6_field_and_alias_expressions_are_accepted(client):
    failures = Failures()
    for expression in ("*/5 * * * *", "0 0 * * * 30", "15 10 * * * */20", "0 12 * * 1-5",
                       "@hourly", "@daily", "@weekly", "@monthly", "@yearly"):
        before = now()
        response = client.post("/api/tasks/", json=task_payload(cron_expression=expression))
        after = now()
        if response.status_code != 201:
            failures.check(False, expression, describe(response))
            continue
        task = response.get_json()
        failures.check(task["cron_expression"] == expression, expression, task["cron_expression"])
        failures.check(task["next_run_at"] in bracketed_next(expression, before, after), expression,
                       f"next_run_at {task['next_run_at']} not in {bracketed_next(expression, before, after)}")
        if expression == "0 0 * * * 30":  # six fields: the seconds come last
            next_run = parse_time(task["next_run_at"])
            failures.check((next_run.hour, next_run.minute, next_run.second) == (0, 0, 30), expression,
                           task["next_run_at"])
    failures.assert_none()


def test_next_run_is_read_in_the_task_time_zone(client):
    zone = ZoneInfo("America/New_York")

    def expected_after(moment: datetime) -> datetime:
        local = moment.astimezone(zone)
        candidate = local.replace(hour=2, minute=30, second=0, microsecond=0)
        if candidate <= local:
            candidate = (local + timedelta(days=1)).replace(hour=2, minute=30, second=0, microsecond=0)
        return candidate.astimezone(UTC)

    before = now()
    task = make_task(client, cron_expression="30 2 * * *", timezone="America/New_York")
    after = now()
    next_run = parse_time(task["next_run_at"])
    # 02:30 New York time (03:00 only right after a spring-forward gap skips 02:30).
    assert next_run.astimezone(zone).strftime("%H:%M") in ("02:30", "03:00")
    candidates = {expected_after(before), expected_after(after)}
    if all(moment.astimezone(zone).strftime("%H:%M") == "02:30" for moment in candidates):  # not a DST-gap day
        assert next_run in candidates
    if next_run.astimezone(zone).utcoffset() == timedelta(hours=-5):  # winter (EST)
        assert task["next_run_at"].endswith("T07:30:00+00:00")

    # The same schedule on a fixed winter date: 02:30 EST is 07:30Z.
    preview = client.get("/api/schedule/preview/", query_string={
        "cron_expression": "30 2 * * *", "timezone": "America/New_York",
        "start": "2026-01-15T00:00:00Z", "count": 1,
    })
    assert preview.status_code == 200
    assert preview.get_json()["next_runs"] == ["2026-01-15T07:30:00+00:00"]


# --- unknown ids ---------------------------------------------------------------------


def test_unknown_task_id_is_404_for_every_method(app, client):
    make_task(client)
    failures = Failures()
    for task_id in (777, HUGE_ID):
        for method, path, kwargs in (
            ("get", f"/api/tasks/{task_id}/", {}),
            ("put", f"/api/tasks/{task_id}/", {"json": task_payload()}),
            ("patch", f"/api/tasks/{task_id}/", {"json": {"description": "x"}}),
            ("delete", f"/api/tasks/{task_id}/", {}),
            ("post", f"/api/tasks/{task_id}/toggle/", {}),
            ("post", f"/api/tasks/{task_id}/run/", {}),
        ):
            response = getattr(client, method)(path, **kwargs)
            ok = response.status_code == 404 and response.mimetype == "application/json"
            failures.check(ok, f"{method.upper()} {path}", describe(response))
    failures.assert_none()
    assert count_rows(app, Task) == 1
    assert count_rows(app, Run) == 0


# --- PUT ----------------------------------------------------------------------------


def test_put_replaces_and_omitted_fields_return_to_defaults(client):
    parent = make_task(client, name="parent")
    task = make_task(
        client, name="original", description="old text", timezone="Asia/Tokyo", enabled=False,
        depends_on=[parent["id"]], action={"type": "shell", "command": "echo old", "env": {"A": "1"}},
        timeout_seconds=10, max_retries=7, retry_delay_seconds=9, retry_max_delay_seconds=99,
        concurrency_policy="allow", misfire_grace_seconds=5,
    )
    before = now()
    response = client.put(f"/api/tasks/{task['id']}/", json={
        "name": "replaced", "cron_expression": "*/5 * * * *",
        "action": {"type": "http", "url": "http://example.com/hook"},
    })
    after = now()
    assert response.status_code == 200, describe(response)
    updated = response.get_json()
    expected = {
        "id": task["id"], "name": "replaced", "description": "", "cron_expression": "*/5 * * * *",
        "timezone": "UTC", "enabled": True, "depends_on": [], "action": DEFAULT_HTTP_ACTION,
        "timeout_seconds": 3600, "max_retries": 3, "retry_delay_seconds": 60, "retry_max_delay_seconds": 3600,
        "concurrency_policy": "forbid", "misfire_grace_seconds": 60, "created_at": task["created_at"],
    }
    assert {key: updated[key] for key in expected} == expected
    # Enabled again by the replacement: the next slot is computed from now.
    assert updated["next_run_at"] in bracketed_next("*/5 * * * *", before, after)
    assert parse_time(updated["updated_at"]) >= parse_time(task["updated_at"])
    assert client.get(f"/api/tasks/{task['id']}/").get_json() == updated
    # The old parent has no children any more: deleting it works.
    assert client.delete(f"/api/tasks/{parent['id']}/").status_code == 204


def test_put_and_patch_need_a_free_name_and_put_the_required_fields(client):
    make_task(client, name="taken")
    task = make_task(client, name="mine", description="keep me")

    errors = field_errors(client.put(f"/api/tasks/{task['id']}/", json={"description": "only this"}))
    assert {"name", "action"} <= set(errors)
    assert_json_error(client.put(f"/api/tasks/{task['id']}/", json=task_payload(name="taken")), 409)
    assert client.get(f"/api/tasks/{task['id']}/").get_json() == task

    body = assert_json_error(client.patch(f"/api/tasks/{task['id']}/", json={"name": "taken"}), 409)
    assert "taken" in str(body)
    assert client.get(f"/api/tasks/{task['id']}/").get_json() == task

    # Its own name is no conflict.
    response = client.put(f"/api/tasks/{task['id']}/", json=task_payload(name="mine", description="new"))
    assert response.status_code == 200, describe(response)
    assert response.get_json()["description"] == "new"
    response = client.patch(f"/api/tasks/{task['id']}/", json={"name": "mine", "description": "newer"})
    assert response.status_code == 200, describe(response)


# --- PATCH --------------------------------------------------------------------------


def test_patch_changes_only_the_given_fields(client):
    task = make_task(client, name="patch-me", description="before", max_retries=5, timezone="Europe/Paris")
    response = client.patch(f"/api/tasks/{task['id']}/", json={"description": "after", "max_retries": 0})
    assert response.status_code == 200, describe(response)
    patched = response.get_json()
    assert (patched["description"], patched["max_retries"]) == ("after", 0)
    unchanged = TASK_FIELDS - {"description", "max_retries", "updated_at"}
    assert {key: patched[key] for key in unchanged} == {key: task[key] for key in unchanged}
    assert client.get(f"/api/tasks/{task['id']}/").get_json() == patched

    # An empty PATCH changes nothing.
    response = client.patch(f"/api/tasks/{task['id']}/", json={})
    assert response.status_code == 200
    same = {key: value for key, value in response.get_json().items() if key != "updated_at"}
    assert same == {key: value for key, value in patched.items() if key != "updated_at"}

    # A nullable field can be set to null.
    response = client.patch(f"/api/tasks/{task['id']}/", json={"timeout_seconds": None})
    assert response.status_code == 200
    assert client.get(f"/api/tasks/{task['id']}/").get_json()["timeout_seconds"] is None


def test_patch_cron_expression_or_timezone_recomputes_next_run(client):
    task = make_task(client, cron_expression="0 0 1 1 *")
    assert parse_time(task["next_run_at"]).strftime("%m-%d %H:%M") == "01-01 00:00"

    before = now()
    patched = client.patch(f"/api/tasks/{task['id']}/", json={"cron_expression": "*/5 * * * *"}).get_json()
    after = now()
    assert patched["cron_expression"] == "*/5 * * * *"
    assert patched["next_run_at"] in bracketed_next("*/5 * * * *", before, after)

    patched = client.patch(f"/api/tasks/{task['id']}/", json={"cron_expression": "30 2 * * *"}).get_json()
    next_run = parse_time(patched["next_run_at"])
    assert (next_run.hour, next_run.minute) == (2, 30)

    patched = client.patch(f"/api/tasks/{task['id']}/", json={"timezone": "Asia/Tokyo"}).get_json()
    assert patched["timezone"] == "Asia/Tokyo"
    next_run = parse_time(patched["next_run_at"])
    assert (next_run.hour, next_run.minute) == (17, 30)  # 02:30 in Tokyo (UTC+9, no DST)
    assert timedelta(0) < next_run - now() <= timedelta(days=1)
    assert client.get(f"/api/tasks/{task['id']}/").get_json()["next_run_at"] == patched["next_run_at"]


# --- DELETE -------------------------------------------------------------------------


def test_delete_answers_204_and_deletes_the_task_and_its_runs(app, client):
    task = make_task(client)
    other = make_task(client)
    run_ids = [add_run(app, task["id"], "success"), add_run(app, task["id"], "failed")]
    run_ids.append(client.post(f"/api/tasks/{task['id']}/run/").get_json()["id"])
    kept = add_run(app, other["id"], "success")
    assert count_rows(app, Run) == 4

    response = client.delete(f"/api/tasks/{task['id']}/")
    assert response.status_code == 204
    assert response.get_data() == b""
    assert_json_error(client.get(f"/api/tasks/{task['id']}/"), 404)
    assert_json_error(client.delete(f"/api/tasks/{task['id']}/"), 404)
    assert [item["id"] for item in client.get("/api/tasks/").get_json()["items"]] == [other["id"]]
    assert count_rows(app, Task) == 1
    for run_id in run_ids:
        assert_json_error(client.get(f"/api/logs/{run_id}/"), 404)
    assert [item["id"] for item in client.get("/api/logs/").get_json()["items"]] == [kept]
    assert count_rows(app, Run, task_id=task["id"]) == 0
    assert count_rows(app, Run) == 1


def test_deleting_a_parent_is_409_and_deletes_nothing(app, client):
    parent = make_task(client, name="extract")
    child = make_task(client, name="load", cron_expression=None, depends_on=[parent["id"]])
    add_run(app, parent["id"], "success")

    body = assert_json_error(client.delete(f"/api/tasks/{parent['id']}/"), 409)
    assert "load" in body.get("message", "")
    assert client.get(f"/api/tasks/{parent['id']}/").get_json() == parent
    assert client.get(f"/api/tasks/{child['id']}/").get_json() == child
    assert count_rows(app, Task) == 2
    assert count_rows(app, Run) == 1

    # Deleting the child keeps the parent; then the parent can go too.
    assert client.delete(f"/api/tasks/{child['id']}/").status_code == 204
    assert client.get(f"/api/tasks/{parent['id']}/").get_json() == parent
    assert client.delete(f"/api/tasks/{parent['id']}/").status_code == 204
    assert count_rows(app, Task) == 0
    assert count_rows(app, Run) == 0


# --- toggle -------------------------------------------------------------------------


def test_toggle_flips_enabled_and_clears_then_recomputes_next_run(client):
    task = make_task(client, cron_expression="*/5 * * * *")
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


def test_enabling_computes_the_next_slot_from_now_not_from_missed_slots(app, client):
    # By toggle ...
    task = make_task(client, cron_expression="* * * * *", enabled=False)
    set_task(app, task["id"], next_run_at=datetime(2020, 1, 1, tzinfo=UTC))  # slots missed long ago
    before = now()
    enabled = client.post(f"/api/tasks/{task['id']}/toggle/").get_json()
    after = now()
    assert enabled["enabled"] is True
    assert parse_time(enabled["next_run_at"]) > before
    assert enabled["next_run_at"] in bracketed_next("* * * * *", before, after)

    # ... and by PATCH.
    disabled = client.patch(f"/api/tasks/{task['id']}/", json={"enabled": False}).get_json()
    assert disabled["enabled"] is False and disabled["next_run_at"] is None
    set_task(app, task["id"], next_run_at=datetime(2020, 1, 1, tzinfo=UTC))
    before = now()
    enabled = client.patch(f"/api/tasks/{task['id']}/", json={"enabled": True}).get_json()
    after = now()
    assert enabled["enabled"] is True
    assert enabled["next_run_at"] in bracketed_next("* * * * *", before, after)
    assert client.get(f"/api/tasks/{task['id']}/").get_json()["next_run_at"] == enabled["next_run_at"]
