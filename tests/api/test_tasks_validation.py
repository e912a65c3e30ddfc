"""Task validation: 422 naming each bad field, 400 for a body that is not JSON,
409 for a duplicate name, and nothing written by a rejected request."""
from __future__ import annotations

import json
import time

from tests.api.api_helpers import (
    TASK_FIELDS, Failures, add_run, assert_json_error, count_rows, describe, error_at, field_errors, make_task,
    task_payload,
)
from scheduler_service.models import Run, Task

HUGE = 10**20


def check_rejections(client, cases, failures: Failures, method: str = "post", path: str = "/api/tasks/") -> None:
    """Each case is (label, body, field path that must be named in errors.json)."""
    for label, body, field in cases:
        response = getattr(client, method)(path, json=body)
        if response.status_code != 422 or response.mimetype != "application/json":
            failures.check(False, label, describe(response))
            continue
        errors = response.get_json().get("errors", {}).get("json", {})
        failures.check(error_at(errors, field) is not None, label, f"errors do not name {field!r}: {errors}")


def test_missing_and_bad_names_are_422_and_a_duplicate_is_409(app, client):
    make_task(client, name="existing")
    action = {"type": "http", "url": "http://example.com/"}
    failures = Failures()
    check_rejections(client, [
        ("missing name", {"cron_expression": "* * * * *", "action": action}, "name"),
        ("missing action", {"name": "n", "cron_expression": "* * * * *"}, "action"),
        ("empty name", task_payload(name=""), "name"),
        ("201-char name", task_payload(name="x" * 201), "name"),
        ("null name", task_payload(name=None), "name"),
        ("number name", task_payload(name=5), "name"),
        ("null action", task_payload(action=None), "action"),
    ], failures)
    failures.assert_none()

    both = field_errors(client.post("/api/tasks/", json={"cron_expression": "* * * * *"}))
    assert {"name", "action"} <= set(both)  # every bad field is named, not just the first

    body = assert_json_error(client.post("/api/tasks/", json=task_payload(name="existing")), 409)
    assert "existing" in json.dumps(body)
    assert count_rows(app, Task) == 1

    # The limits themselves are fine.
    assert make_task(client, name="x" * 200)["name"] == "x" * 200
    assert make_task(client, name="y")["name"] == "y"


def test_bad_cron_expressions_and_time_zones_are_422_naming_the_field(app, client):
    failures = Failures()
    started = time.perf_counter()
    check_rejections(client, [
        (f"cron {expression!r}", task_payload(cron_expression=expression), "cron_expression")
        for expression in ("* * * *", "* * * * * * *", "61 * * * *", "* 24 * * *", "* * 32 * *",
                           "* * * 13 *", "garbage", "a b c d e", "", "   ", "@sometimes",
                           "0 0 31 2 *", "0 0 30 2 *")
    ] + [
        ("cron null without depends_on", task_payload(cron_expression=None), "cron_expression"),
        ("cron omitted without depends_on", {"name": "n", "action": {"type": "http", "url": "http://e.com/"}},
         "cron_expression"),
        ("cron as a number", task_payload(cron_expression=5), "cron_expression"),
    ] + [
        (f"timezone {zone!r}", task_payload(timezone=zone), "timezone")
        for zone in ("Mars/Olympus_Mons", "America", "../../etc/passwd", "", "utc+5", None, 3)
    ], failures)
    failures.assert_none()
    # A never-matching expression is rejected quickly, not searched for forever.
    assert time.perf_counter() - started < 10
    assert count_rows(app, Task) == 0
    assert make_task(client, timezone="Europe/Berlin")["timezone"] == "Europe/Berlin"


def test_body_that_is_not_json_is_400_and_not_an_object_or_with_unknown_fields_422(app, client):
    failures = Failures()
    for label, data in (("garbage", "name=backup"), ("truncated", '{"name": "x", '), ("single quotes", "{'a': 1}")):
        response = client.post("/api/tasks/", data=data, content_type="application/json")
        failures.check(response.status_code == 400 and response.mimetype == "application/json",
                       f"{label} body sent as JSON", describe(response))
    for label, body in (("list", [task_payload()]), ("number", 5), ("string", "task"), ("null", None),
                        ("true", True)):
        response = client.post("/api/tasks/", data=json.dumps(body), content_type="application/json")
        ok = response.status_code == 422 and response.mimetype == "application/json" \
            and "json" in (response.get_json() or {}).get("errors", {})
        failures.check(ok, f"JSON {label} body", describe(response))
    check_rejections(client, [
        ("unknown top-level field", task_payload(colour="blue"), "colour"),
        ("unknown action field", task_payload(action={"type": "http", "url": "http://e.com/", "verb": "GET"}),
         "action.verb"),
    ], failures)
    failures.assert_none()
    assert count_rows(app, Task) == 0


def test_body_that_is_not_json_is_400_even_if_empty_or_not_labelled_json(app, client):
    failures = Failures()
    for label, data, content_type in (
        ("empty body labelled JSON", "", "application/json"),
        ("text/plain body", "name=backup&cron=daily", "text/plain"),
        ("form body", "name=backup", "application/x-www-form-urlencoded"),
    ):
        response = client.post("/api/tasks/", data=data, content_type=content_type)
        failures.check(response.status_code == 400 and response.mimetype == "application/json",
                       label, describe(response))
    failures.assert_none()
    assert count_rows(app, Task) == 0


def test_wrong_types_and_out_of_range_numbers_are_422(app, client):
    cases = [
        ("enabled 'maybe'", {"enabled": "maybe"}, "enabled"),
        ("enabled null", {"enabled": None}, "enabled"),
        ("max_retries -1", {"max_retries": -1}, "max_retries"),
        ("retry_delay_seconds 0", {"retry_delay_seconds": 0}, "retry_delay_seconds"),
        ("retry_max_delay_seconds 0", {"retry_max_delay_seconds": 0}, "retry_max_delay_seconds"),
        ("timeout_seconds 0", {"timeout_seconds": 0}, "timeout_seconds"),
        ("timeout_seconds -5", {"timeout_seconds": -5}, "timeout_seconds"),
        ("misfire_grace_seconds -1", {"misfire_grace_seconds": -1}, "misfire_grace_seconds"),
        ("concurrency_policy 'sometimes'", {"concurrency_policy": "sometimes"}, "concurrency_policy"),
        ("description null", {"description": None}, "description"),
        ("description number", {"description": 5}, "description"),
        ("depends_on not a list", {"depends_on": 1}, "depends_on"),
        ("depends_on null", {"depends_on": None}, "depends_on"),
        ("depends_on of strings", {"depends_on": ["a"]}, "depends_on"),
    ]
    for field in ("timeout_seconds", "max_retries", "retry_delay_seconds", "retry_max_delay_seconds",
                  "misfire_grace_seconds"):
        cases += [
            (f"{field} 10**20", {field: HUGE}, field),
            (f"{field} -10**20", {field: -HUGE}, field),
            (f"{field} 2**31", {field: 2**31}, field),
            (f"{field} 1.5", {field: 1.5}, field),
            (f"{field} '5'", {field: "5"}, field),
            (f"{field} true", {field: True}, field),
        ]
    cases.append(("depends_on [10**20]", {"depends_on": [HUGE]}, "depends_on"))
    failures = Failures()
    check_rejections(client, [(label, task_payload(**body), field) for label, body, field in cases], failures)
    failures.assert_none()
    assert count_rows(app, Task) == 0


def test_bad_actions_are_422_naming_the_action_field(app, client):
    http = {"type": "http", "url": "http://example.com/"}
    cases = [
        ("action not an object", ["shell"], "action"),
        ("action a string", "echo hi", "action"),
        ("action without type", {"command": "echo"}, "action.type"),
        ("unknown action type", {"type": "ssh", "command": "echo"}, "action.type"),
        ("action type null", {"type": None, "command": "echo"}, "action.type"),
        ("shell without command", {"type": "shell"}, "action.command"),
        ("shell with empty command", {"type": "shell", "command": ""}, "action.command"),
        ("shell env not a map", {"type": "shell", "command": "x", "env": ["A=1"]}, "action.env"),
        ("shell env value not a string", {"type": "shell", "command": "x", "env": {"A": 1}}, "action.env"),
        ("http without url", {"type": "http"}, "action.url"),
        ("http bad url", {"type": "http", "url": "not a url"}, "action.url"),
        ("http ftp url", {"type": "http", "url": "ftp://example.com/file"}, "action.url"),
        ("http unknown method", {**http, "method": "FETCH"}, "action.method"),
        ("http headers not a map", {**http, "headers": ["X: 1"]}, "action.headers"),
        ("http expect_status 99", {**http, "expect_status": 99}, "action.expect_status"),
        ("http expect_status 600", {**http, "expect_status": 600}, "action.expect_status"),
        ("http expect_status '200'", {**http, "expect_status": "200"}, "action.expect_status"),
        ("http expect_status []", {**http, "expect_status": []}, "action.expect_status"),
        ("http expect_status [200, 99]", {**http, "expect_status": [200, 99]}, "action.expect_status"),
        ("http expect_status true", {**http, "expect_status": True}, "action.expect_status"),
        ("python without callable", {"type": "python"}, "action.callable"),
        ("python callable 'nocolon'", {"type": "python", "callable": "nocolon"}, "action.callable"),
        ("python callable 'a:'", {"type": "python", "callable": "a:"}, "action.callable"),
        ("python callable 'a b:c'", {"type": "python", "callable": "a b:c"}, "action.callable"),
        ("python args not a list", {"type": "python", "callable": "a:b", "args": {"x": 1}}, "action.args"),
        ("python kwargs not a map", {"type": "python", "callable": "a:b", "kwargs": [1]}, "action.kwargs"),
        ("python field on shell", {"type": "shell", "command": "x", "callable": "a:b"}, "action.callable"),
    ]
    failures = Failures()
    check_rejections(client, [(label, task_payload(action=action), field) for label, action, field in cases],
                     failures)
    failures.assert_none()
    assert count_rows(app, Task) == 0


def test_strings_with_nul_are_422_not_a_server_error(app, client):
    nul = "a\u0000b"
    cases = [
        ("name", task_payload(name=nul), "name"),
        ("description", task_payload(description=nul), "description"),
        ("cron_expression", task_payload(cron_expression="* * * * *\u0000"), "cron_expression"),
        ("timezone", task_payload(timezone="UTC\u0000"), "timezone"),
        ("shell command", task_payload(action={"type": "shell", "command": nul}), "action.command"),
        ("shell cwd", task_payload(action={"type": "shell", "command": "x", "cwd": nul}), "action.cwd"),
        ("shell env value", task_payload(action={"type": "shell", "command": "x", "env": {"A": nul}}),
         "action.env"),
        ("shell env key", task_payload(action={"type": "shell", "command": "x", "env": {nul: "1"}}),
         "action.env"),
        ("http url", task_payload(action={"type": "http", "url": "http://example.com/a\u0000b"}), "action.url"),
        ("http header", task_payload(action={"type": "http", "url": "http://e.com/", "headers": {"X": nul}}),
         "action.headers"),
        ("python callable", task_payload(action={"type": "python", "callable": "a:b\u0000"}),
         "action.callable"),
    ]
    failures = Failures()
    # A NUL inside the action may be reported on the action or on its sub-field.
    check_rejections(client, [(f"NUL in {label}", body, field.split(".")[0]) for label, body, field in cases],
                     failures)
    # The same checks guard PATCH.
    task = make_task(client, name="target")
    check_rejections(client, [("PATCH NUL in name", {"name": nul}, "name"),
                              ("PATCH NUL in description", {"description": nul}, "description")],
                     failures, method="patch", path=f"/api/tasks/{task['id']}/")
    failures.assert_none()
    assert count_rows(app, Task) == 1
    assert client.get(f"/api/tasks/{task['id']}/").get_json() == task


def test_nul_inside_free_form_payload_data_never_breaks_storage(client):
    """A NUL in an HTTP body or python arguments is either refused (422) or kept exactly."""
    failures = Failures()
    for label, action in (
        ("http body string", {"type": "http", "url": "http://e.com/", "body": "a\u0000b"}),
        ("http body object", {"type": "http", "url": "http://e.com/", "body": {"k": "a\u0000b"}}),
        ("python args", {"type": "python", "callable": "a:b", "args": ["a\u0000b"]}),
        ("python kwargs", {"type": "python", "callable": "a:b", "kwargs": {"k": "a\u0000b"}}),
    ):
        response = client.post("/api/tasks/", json=task_payload(action=action))
        if response.status_code == 201:
            task_id = response.get_json()["id"]
            stored = client.get(f"/api/tasks/{task_id}/").get_json()["action"]
            failures.check(all(stored[key] == value for key, value in action.items()), label, repr(stored))
        else:
            failures.check(response.status_code == 422, label, describe(response))
    failures.assert_none()


def test_read_only_fields_are_ignored(app, client):
    read_only = {"id": 999, "status": "failed", "retry_count": 7, "last_run_at": "2020-01-01T00:00:00+00:00",
                 "next_run_at": "2020-01-01T00:00:00+00:00", "created_at": "not even a time",
                 "updated_at": None}

    created = client.post("/api/tasks/", json=task_payload(name="ro", **read_only))
    assert created.status_code == 201, describe(created)
    task = created.get_json()
    assert task["id"] != 999 and task["status"] == "pending" and task["retry_count"] == 0
    assert task["last_run_at"] is None and task["next_run_at"] != read_only["next_run_at"]

    response = client.put(f"/api/tasks/{task['id']}/", json=task_payload(name="ro", description="put", **read_only))
    assert response.status_code == 200, describe(response)
    put = response.get_json()
    assert put["id"] == task["id"] and put["description"] == "put"
    for field in ("status", "retry_count", "last_run_at", "created_at"):
        assert put[field] == task[field], field
    assert put["next_run_at"] != read_only["next_run_at"]

    response = client.patch(f"/api/tasks/{task['id']}/", json={"description": "patch", **read_only})
    assert response.status_code == 200, describe(response)
    patched = response.get_json()
    assert patched["description"] == "patch"
    for field in ("id", "status", "retry_count", "last_run_at", "created_at"):
        assert patched[field] == task[field], field
    assert patched["next_run_at"] != read_only["next_run_at"]

    assert_json_error(client.get("/api/tasks/999/"), 404)
    assert count_rows(app, Task) == 1


def test_rejected_put_and_patch_leave_the_task_unchanged(app, client):
    parent = make_task(client, name="parent")
    task = make_task(client, name="target", description="original", depends_on=[parent["id"]],
                     action={"type": "shell", "command": "echo 1"})
    add_run(app, task["id"], "success")
    path = f"/api/tasks/{task['id']}/"
    failures = Failures()
    for label, method, body, status in (
        ("PUT bad cron", "put", task_payload(name="renamed", cron_expression="61 * * * *"), 422),
        ("PUT bad action", "put", task_payload(name="renamed", action={"type": "ssh"}), 422),
        ("PUT unknown parent", "put", task_payload(name="renamed", depends_on=[4242]), 422),
        ("PUT itself as parent", "put", task_payload(name="renamed", depends_on=[task["id"]]), 422),
        ("PUT duplicate name", "put", task_payload(name="parent"), 409),
        ("PUT not an object", "put", [1], 422),
        ("PATCH bad timezone and a good field", "patch", {"description": "new", "timezone": "Nowhere/Land"}, 422),
        ("PATCH huge number", "patch", {"description": "new", "max_retries": HUGE}, 422),
        ("PATCH unknown field", "patch", {"description": "new", "colour": "blue"}, 422),
        ("PATCH cron null", "patch", {"description": "new", "cron_expression": None, "depends_on": []}, 422),
        ("PATCH duplicate name", "patch", {"description": "new", "name": "parent"}, 409),
    ):
        response = getattr(client, method)(path, json=body)
        failures.check(response.status_code == status and response.mimetype == "application/json",
                       label, describe(response))
        after = client.get(path).get_json()
        failures.check(after == task, f"{label} changed the task", repr({k: after[k] for k in TASK_FIELDS
                                                                          if after[k] != task[k]}))
    failures.assert_none()
    assert count_rows(app, Task) == 2
    assert count_rows(app, Run) == 1
