"""The admin pages through Flask's test client (fast), on SQLite and PostgreSQL.

Login and the session cookie, CSRF on every form, the task form's validation
(the API's own rules, errors beside their fields), toggling, running,
deleting, the run log and the dashboard.
"""
from __future__ import annotations

import os
import re
import stat
from datetime import datetime, timedelta, timezone
from html import unescape as html_unescape

import pytest
import sqlalchemy as sa
from markupsafe import escape
from werkzeug.datastructures import MultiDict

from tests.admin.admin_helpers import ADMIN_NAME, ADMIN_PASSWORD, csrf_of, field_errors, task_form, text_of
from scheduler_service.admin import dashboard
from scheduler_service.admin.accounts import find_admin
from scheduler_service.admin.models import AdminUser
from scheduler_service.admin.secret_key import load_or_create_secret_key
from scheduler_service.extensions import db
from scheduler_service.models import Run, Task

UTC = timezone.utc


# --- helpers -----------------------------------------------------------------------------------


def create_task(web, name: str, **fields) -> int:
    response = web.post("/admin/tasks/new", data=task_form(name, csrf_of(web), **fields))
    assert response.status_code == 302, text_of(response.get_data(as_text=True))[:2000]
    return int(re.search(r"/admin/tasks/(\d+)/", response.location).group(1))


def api_task(client, task_id: int) -> dict:
    response = client.get(f"/api/tasks/{task_id}/")
    assert response.status_code == 200
    return response.get_json()


def tasks_named(app, name: str) -> list[Task]:
    with app.app_context():
        rows = db.session.scalars(sa.select(Task).where(Task.name == name)).all()
        db.session.expunge_all()
        return list(rows)


def add_run(app, task_id: int, status: str = "success", *, started_at: datetime | None = None,
            output: str = "", trigger: str = "schedule", duration: float | None = 1.5) -> int:
    started_at = started_at or datetime.now(UTC) - timedelta(minutes=5)
    with app.app_context():
        run = Run(
            task_id=task_id, status=status, trigger=trigger, attempt=1, scheduled_for=started_at,
            started_at=started_at, output=output,
            finished_at=started_at + timedelta(seconds=duration or 0) if status != "running" else None,
            duration_seconds=duration if status != "running" else None,
        )
        db.session.add(run)
        db.session.commit()
        return run.id


def page(web, url: str, status: int = 200) -> str:
    response = web.get(url)
    assert response.status_code == status, (url, response.status_code, response.location)
    return response.get_data(as_text=True)


# --- login, session, CSRF --------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/admin/", "/admin/tasks/", "/admin/tasks/new", "/admin/runs/", "/admin/tasks/1/"])
def test_pages_send_a_logged_out_visitor_to_the_login(app, url):
    response = app.test_client().get(url)
    assert response.status_code == 302
    assert response.location.startswith("/admin/login?next=")
    assert url in response.location.replace("%2F", "/")


def test_login_refuses_a_wrong_password_and_sets_a_safe_cookie_for_the_right_one(app, admin_account):
    client = app.test_client()
    client.get("/admin/login")
    wrong = client.post("/admin/login", data={"name": ADMIN_NAME, "password": "nope", "csrf_token": csrf_of(client)})
    assert wrong.status_code == 401
    assert "Wrong name or password." in wrong.get_data(as_text=True)
    unknown = client.post("/admin/login", data={"name": "mallory", "password": ADMIN_PASSWORD,
                                                  "csrf_token": csrf_of(client)})
    assert unknown.status_code == 401

    right = client.post("/admin/login", data={"name": ADMIN_NAME, "password": ADMIN_PASSWORD,
                                                "csrf_token": csrf_of(client), "next": "/admin/runs/"})
    assert right.status_code == 302 and right.location == "/admin/runs/"
    cookie = right.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get("/admin/runs/").status_code == 200


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/admin/", "/api/tasks/", "/\\evil"])
def test_login_never_redirects_off_the_admin(app, admin_account, target):
    client = app.test_client()
    client.get("/admin/login")
    response = client.post("/admin/login", data={"name": ADMIN_NAME, "password": ADMIN_PASSWORD,
                                                   "csrf_token": csrf_of(client), "next": target})
    assert response.location == "/admin/"


def test_the_session_is_renewed_at_login(app, admin_account):
    client = app.test_client()
    client.get("/admin/login")
    before = csrf_of(client)
    client.post("/admin/login", data={"name": ADMIN_NAME, "password": ADMIN_PASSWORD, "csrf_token": before})
    assert csrf_of(client) != before


def test_logout_ends_the_session(web):
    response = web.post("/admin/logout", data={"csrf_token": csrf_of(web)})
    assert response.status_code == 302
    assert web.get("/admin/").status_code == 302


def test_a_password_reset_ends_open_sessions(app, web, runner):
    result = runner.invoke(args=["create-admin", ADMIN_NAME, "--reset-password", "--password-stdin"],
                           input="a brand new password\n")
    assert result.exit_code == 0, result.output
    assert web.get("/admin/").status_code == 302


POST_URLS = [
    "/admin/logout", "/admin/tasks/new", "/admin/tasks/{id}/edit", "/admin/tasks/{id}/toggle",
    "/admin/tasks/{id}/run", "/admin/tasks/{id}/delete",
]


def test_every_form_is_refused_without_this_sessions_csrf_token(app, web):
    task_id = create_task(web, "guarded")
    for url in POST_URLS:
        for token in (None, "forged-token", ""):
            data = task_form("changed", token)
            response = web.post(url.format(id=task_id), data=data)
            assert response.status_code == 400, (url, token)
            assert "Form expired" in response.get_data(as_text=True)
    (task,) = tasks_named(app, "guarded")
    assert task.enabled and task.name == "guarded"
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(Run)).scalar_one() == 0
    assert web.get("/admin/").status_code == 200  # still logged in


def test_login_form_needs_the_csrf_token_too(app, admin_account):
    client = app.test_client()
    response = client.post("/admin/login", data={"name": ADMIN_NAME, "password": ADMIN_PASSWORD})
    assert response.status_code == 400


def test_pages_carry_security_headers(web):
    response = web.get("/admin/tasks/")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"


# --- tasks: create and edit with the API's validation ---------------------------------------------


def test_create_a_shell_task_from_the_form(app, web, client):
    task_id = create_task(
        web, "backup", description="nightly\r\ndump", cron_expression="30 2 * * *", timezone="Europe/Berlin",
        shell_command="pg_dump db\r\necho done", shell_env="PGHOST=db.internal\r\n\r\nMODE = full",
        shell_cwd="/srv", timeout_seconds="120", max_retries="5",
    )
    body = api_task(client, task_id)
    assert body["action"] == {
        "type": "shell", "command": "pg_dump db\necho done", "env": {"PGHOST": "***", "MODE": "***"}, "cwd": "/srv",
    }
    assert stored_action(app, task_id)["env"] == {"PGHOST": "db.internal", "MODE": "full"}
    assert body["description"] == "nightly\ndump"
    assert (body["cron_expression"], body["timezone"], body["timeout_seconds"], body["max_retries"]) == (
        "30 2 * * *", "Europe/Berlin", 120, 5
    )
    assert body["enabled"] is True and body["next_run_at"] is not None
    assert "backup" in text_of(page(web, f"/admin/tasks/{task_id}/"))


def test_an_empty_timeout_means_no_timeout(web, client):
    task_id = create_task(web, "patient", timeout_seconds="")
    assert api_task(client, task_id)["timeout_seconds"] is None
    assert 'id="timeout_seconds" name="timeout_seconds" value=""' in page(web, f"/admin/tasks/{task_id}/edit")


def test_http_and_python_tasks_survive_a_trip_through_the_edit_form(app, web, client):
    parent = create_task(web, "parent")
    http_id = create_task(
        web, "hook", action_type="http", http_url="https://example.internal/hook", http_method="POST",
        http_headers="X-Token: abc\nAccept: application/json", http_body='{"ok": true}', http_body_format="json",
        http_expect_status="200, 204", depends_on=str(parent), cron_expression="",
    )
    python_id = create_task(
        web, "report", action_type="python", python_callable="reports.daily:build",
        python_args='[1, "two"]', python_kwargs='{"dry": false}', enabled=None, concurrency_policy="allow",
    )
    for task_id in (http_id, python_id):
        before = api_task(client, task_id)
        form_page = page(web, f"/admin/tasks/{task_id}/edit")
        # Send the edit form back exactly as the page shows it.
        response = web.post(f"/admin/tasks/{task_id}/edit", data=_form_as_shown(form_page))
        assert response.status_code == 302, text_of(response.get_data(as_text=True))[:1500]
        after = api_task(client, task_id)
        assert {k: v for k, v in after.items() if k != "updated_at"} == {
            k: v for k, v in before.items() if k != "updated_at"
        }
    hook = api_task(client, http_id)
    assert hook["action"] == {
        "type": "http", "url": "https://example.internal/hook", "method": "POST",
        "headers": {"X-Token": "***", "Accept": "***"}, "body": {"ok": True},
        "expect_status": [200, 204],
    }
    # The form showed the mask and sent it back: the stored values are kept.
    assert stored_action(app, http_id)["headers"] == {"X-Token": "abc", "Accept": "application/json"}
    assert hook["depends_on"] == [parent] and hook["cron_expression"] is None
    report = api_task(client, python_id)
    assert report["action"] == {"type": "python", "callable": "reports.daily:build", "args": [1, "two"],
                                "kwargs": {"dry": False}}
    assert report["enabled"] is False and report["concurrency_policy"] == "allow"


def stored_action(app, task_id: int) -> dict:
    with app.app_context():
        return db.session.get(Task, task_id).action


def _form_as_shown(html: str) -> MultiDict:
    """The (name, value) pairs a browser would submit for the page's task form, unchanged."""
    form = re.search(r'<form method="post" class="task-form".*?</form>', html, re.S).group(0)
    pairs = []
    for tag in re.findall(r"<input\b[^>]*>", form):
        name = re.search(r'name="([^"]+)"', tag)
        if not name:
            continue
        kind = (re.search(r'type="([^"]+)"', tag) or [None, "text"])[1]
        if kind in ("checkbox", "radio") and " checked" not in tag:
            continue
        value = re.search(r'value="([^"]*)"', tag)
        pairs.append((name.group(1), html_unescape(value.group(1)) if value else "on"))
    for name, body in re.findall(r'<textarea[^>]*name="([^"]+)"[^>]*>(.*?)</textarea>', form, re.S):
        pairs.append((name, html_unescape(body)))
    for name, options in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', form, re.S):
        chosen = re.findall(r'<option(?: value="([^"]*)")?[^>]*selected[^>]*>([^<]*)', options)
        pairs.extend((name, html_unescape(value or label)) for value, label in chosen)
    return MultiDict(pairs)


# (form fields changed from a valid form, the field whose error names the problem, words of the error)
BAD_VALUES = [
    ({"cron_expression": "61 * * * *"}, "cron_expression", "61"),
    ({"cron_expression": "0 0 31 2 *"}, "cron_expression", "never"),
    ({"cron_expression": ""}, "cron_expression", "Required unless the task has interval_seconds, run_at or depends_on."),
    ({"timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
    ({"max_retries": "three"}, "max_retries", "Not a valid integer."),
    ({"retry_delay_seconds": "0"}, "retry_delay_seconds", "greater than or equal to 1"),
    ({"shell_command": ""}, "shell_command", "Length must be between 1 and 65536."),
    ({"shell_env": "JUSTAWORD"}, "shell_env", "Line 1: expected NAME=value."),
    ({"action_type": "http", "http_url": "not a url"}, "http_url", "Not a valid URL."),
    ({"action_type": "http", "http_url": "http://x.internal/", "http_expect_status": "ok"},
     "http_expect_status", "Give a status code"),
    ({"action_type": "http", "http_url": "http://x.internal/", "http_expect_status": "999"},
     "http_expect_status", "Must be an HTTP status"),
    ({"action_type": "http", "http_url": "http://x.internal/", "http_body": "{oops",
      "http_body_format": "json"}, "http_body", "Not valid JSON"),
    ({"action_type": "python", "python_callable": "no colon"}, "python_callable", "package.module:function"),
    ({"action_type": "python", "python_callable": "a:b", "python_args": '{"a": 1}'}, "python_args",
     "Not a valid list."),
    ({"action_type": "teleport"}, "action_type", "Must be one of: shell, http, python."),
    ({"depends_on": "999"}, "depends_on", "Unknown task ids: [999]."),
    ({"name": ""}, "name", "Length must be between 1 and 200."),
]


def test_a_bad_value_is_shown_beside_its_field_and_nothing_is_saved(app, web):
    # One app for all cases (each case is one request): the cases are many, an app per case is slow.
    problems = []
    for fields, field, message in BAD_VALUES:
        fields = dict(fields)
        name = fields.pop("name", "rejected")
        response = web.post("/admin/tasks/new", data=task_form(name, csrf_of(web), **fields))
        html = response.get_data(as_text=True)
        errors = field_errors(html, field) if response.status_code == 422 else []
        if not any(message in error for error in errors) or 'id="form-errors"' not in html:
            problems.append((fields, response.status_code, field, errors))
        # The person's input is kept, to correct rather than retype.
        lost = [key for key, value in fields.items()
                if key not in ("depends_on", "action_type") and value and str(escape(value)) not in html]
        if lost:
            problems.append((fields, "input not shown again", lost))
    assert problems == []
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(Task)).scalar_one() == 0


def test_the_form_refuses_what_the_api_refuses_with_the_same_words(app, web, client):
    api = client.post("/api/tasks/", json={"name": "x", "cron_expression": "61 * * * *",
                                           "action": {"type": "shell", "command": "true"}})
    api_message = api.get_json()["errors"]["json"]["cron_expression"]
    form = web.post("/admin/tasks/new", data=task_form("x", csrf_of(web), cron_expression="61 * * * *"))
    assert field_errors(form.get_data(as_text=True), "cron_expression") == api_message


def test_a_taken_name_is_shown_beside_the_name(app, web):
    create_task(web, "unique")
    response = web.post("/admin/tasks/new", data=task_form("unique", csrf_of(web)))
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert field_errors(html, "name") == ["Already taken."]
    assert "a task named &#39;unique&#39; already exists" in html
    assert len(tasks_named(app, "unique")) == 1


def test_a_dependency_cycle_is_refused_with_the_path(app, web, client):
    first = create_task(web, "first")
    second = create_task(web, "second", depends_on=str(first))
    response = web.post(f"/admin/tasks/{first}/edit", data=task_form("first", csrf_of(web), depends_on=str(second)))
    assert response.status_code == 422
    errors = field_errors(response.get_data(as_text=True), "depends_on")
    assert errors == ["Would create a cycle: 'first' -> 'second' -> 'first'."]
    assert api_task(client, first)["depends_on"] == []


def test_shell_actions_disabled_are_refused_by_the_form_too(app, web):
    app.config["SHELL_ACTIONS_ENABLED"] = False
    response = web.post("/admin/tasks/new", data=task_form("sh", csrf_of(web)))
    assert response.status_code == 422
    assert "Shell actions are disabled" in " ".join(field_errors(response.get_data(as_text=True), "action_type"))


def test_edit_changes_the_task_like_a_put(app, web, client):
    task_id = create_task(web, "editable", max_retries="3")
    response = web.post(f"/admin/tasks/{task_id}/edit",
                        data=task_form("renamed", csrf_of(web), max_retries="7", cron_expression="@hourly"))
    assert response.status_code == 302
    body = api_task(client, task_id)
    assert (body["name"], body["max_retries"], body["cron_expression"]) == ("renamed", 7, "@hourly")


# --- toggle, run now, delete ----------------------------------------------------------------------


def test_toggle_disables_and_enables_with_next_run_updated(app, web, client):
    task_id = create_task(web, "flip")
    response = web.post(f"/admin/tasks/{task_id}/toggle", data={"csrf_token": csrf_of(web), "next": "/admin/tasks/"})
    assert response.status_code == 302 and response.location == "/admin/tasks/"
    body = api_task(client, task_id)
    assert body["enabled"] is False and body["next_run_at"] is None
    assert "Task “flip” disabled." in page(web, "/admin/tasks/")
    web.post(f"/admin/tasks/{task_id}/toggle", data={"csrf_token": csrf_of(web)})
    body = api_task(client, task_id)
    assert body["enabled"] is True and body["next_run_at"] is not None


def test_run_now_queues_a_manual_run_and_forbid_refuses_a_second(app, web, client):
    task_id = create_task(web, "now", enabled=None)
    response = web.post(f"/admin/tasks/{task_id}/run", data={"csrf_token": csrf_of(web)})
    assert response.location == f"/admin/tasks/{task_id}/"
    runs = client.get(f"/api/logs/?task_id={task_id}").get_json()["items"]
    assert [(run["trigger"], run["status"]) for run in runs] == [("manual", "pending")]
    assert f'Run <a href="/admin/runs/{runs[0]["id"]}/">#{runs[0]["id"]}</a>' in page(web, f"/admin/tasks/{task_id}/")

    web.post(f"/admin/tasks/{task_id}/run", data={"csrf_token": csrf_of(web)})
    html = page(web, f"/admin/tasks/{task_id}/")
    assert "Not started: task &#39;now&#39; has an active run or retry" in html
    assert len(client.get(f"/api/logs/?task_id={task_id}").get_json()["items"]) == 1


def test_delete_asks_first_and_is_refused_with_the_reason_for_a_parent(app, web, client):
    parent = create_task(web, "parent")
    child = create_task(web, "child", depends_on=str(parent), cron_expression="")
    add_run(app, parent)

    confirm = text_of(page(web, f"/admin/tasks/{parent}/delete"))
    assert "This task cannot be deleted: other tasks depend on it." in confirm
    assert "child" in confirm and "Delete task and runs" not in confirm

    refused = web.post(f"/admin/tasks/{parent}/delete", data={"csrf_token": csrf_of(web)})
    assert refused.status_code == 409
    assert "Not deleted. task 'parent' is a parent of: child" in text_of(refused.get_data(as_text=True))
    assert client.get(f"/api/tasks/{parent}/").status_code == 200

    assert "will be deleted" in text_of(page(web, f"/admin/tasks/{child}/delete"))
    assert web.post(f"/admin/tasks/{child}/delete", data={"csrf_token": csrf_of(web)}).status_code == 302
    assert "1 run in the log will be deleted" in text_of(page(web, f"/admin/tasks/{parent}/delete"))
    deleted = web.post(f"/admin/tasks/{parent}/delete", data={"csrf_token": csrf_of(web)})
    assert deleted.location == "/admin/tasks/"
    assert client.get(f"/api/tasks/{parent}/").status_code == 404
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(Run)).scalar_one() == 0


# --- lists ------------------------------------------------------------------------------------------


def test_task_list_searches_and_filters(app, web):
    create_task(web, "db-backup")
    create_task(web, "db_vacuum", enabled=None)
    other = create_task(web, "send-report")
    with app.app_context():
        db.session.execute(sa.update(Task).where(Task.id == other).values(status="failed"))
        db.session.commit()

    def names(query: str) -> list[str]:
        return re.findall(r'<tr data-task="([^"]+)"', page(web, f"/admin/tasks/?{query}"))

    assert names("") == ["db-backup", "db_vacuum", "send-report"]
    assert names("q=db") == ["db-backup", "db_vacuum"]
    assert names("q=db_") == ["db_vacuum"]  # a literal underscore, not a wildcard
    assert names("enabled=false") == ["db_vacuum"]
    assert names("status=failed&enabled=true") == ["send-report"]
    assert names("status=&enabled=&q=") == ["db-backup", "db_vacuum", "send-report"]
    html = page(web, "/admin/tasks/?status=bogus")
    assert "status: Must be one of" in text_of(html)
    assert len(re.findall(r"<tr data-task=", html)) == 3


def test_task_list_shows_status_next_run_and_last_outcome(app, web):
    task_id = create_task(web, "shown")
    add_run(app, task_id, "failed")
    run_id = add_run(app, task_id, "success")
    add_run(app, task_id, "running")
    html = page(web, "/admin/tasks/")
    row = re.search(r'<tr data-task="shown".*?</tr>', html, re.S).group(0)
    assert 'badge-pending">pending' in row and 'badge-enabled">enabled' in row
    assert f'href="/admin/runs/{run_id}/"><span class="badge badge-success">success' in row
    assert "<time" in row and "in " in text_of(row)  # the next run, relative


def test_run_log_filters_and_pages(app, web):
    first = create_task(web, "one")
    second = create_task(web, "two")
    start = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    for n in range(55):
        add_run(app, first, "success", started_at=start + timedelta(minutes=n))
    failed = add_run(app, second, "failed", started_at=start + timedelta(hours=2), trigger="manual")

    def run_ids(query: str) -> list[int]:
        return [int(n) for n in re.findall(r'<tr data-run="(\d+)"', page(web, f"/admin/runs/?{query}"))]

    newest = run_ids("")
    assert len(newest) == 50 and newest[0] == failed and newest == sorted(newest, reverse=True)
    html = page(web, "/admin/runs/")
    cursor = re.search(r'href="/admin/runs/\?cursor=([^"]+)" rel="next"|rel="next" href="/admin/runs/\?cursor=([^"]+)"',
                       html)
    next_cursor = cursor.group(1) or cursor.group(2)
    rest = run_ids(f"cursor={next_cursor}")
    assert len(rest) == 6 and set(rest).isdisjoint(newest)
    assert run_ids(f"task_id={second}") == [failed]
    assert run_ids("status=failed") == [failed]
    assert run_ids("trigger=manual") == [failed]
    assert len(run_ids("since=2026-03-01T10:50&until=2026-03-01T10:54:00")) == 5
    assert run_ids("task_id=one") != []  # a bad filter is reported and ignored
    assert "task_id: Not a valid integer." in text_of(page(web, "/admin/runs/?task_id=one"))


def test_run_page_shows_the_whole_kept_output(app, web):
    task_id = create_task(web, "chatty")
    output = "".join(f"line {n}\n" for n in range(2000))
    run_id = add_run(app, task_id, "failed", output=output)
    html = page(web, f"/admin/runs/{run_id}/")
    shown = re.search(r'<pre class="output" id="run-output">(.*?)</pre>', html, re.S).group(1)
    assert shown == output
    assert 'http-equiv="refresh"' not in html
    running = add_run(app, task_id, "running")
    assert 'http-equiv="refresh"' in page(web, f"/admin/runs/{running}/")


def test_unknown_task_and_run_get_an_html_404(web):
    for url in ("/admin/tasks/999/", "/admin/tasks/999/edit", "/admin/runs/999/", "/admin/runs/99999999999/"):
        response = web.get(url)
        assert response.status_code == 404 and response.mimetype == "text/html", url


# --- dashboard ----------------------------------------------------------------------------------------


def test_runs_per_hour_are_counted_by_outcome_in_clock_hours(app, web):
    task_id = create_task(web, "counted")
    now = datetime(2026, 3, 2, 12, 30, tzinfo=UTC)
    add_run(app, task_id, "success", started_at=now - timedelta(minutes=10))   # 12:20 -> last hour
    add_run(app, task_id, "failed", started_at=now - timedelta(minutes=31))    # 11:59 -> the hour before
    add_run(app, task_id, "success", started_at=now - timedelta(hours=23, minutes=30))  # 13:00 yesterday: first
    add_run(app, task_id, "skipped", started_at=now - timedelta(hours=23, minutes=31))  # 12:59 yesterday: out
    with app.test_request_context():
        hours = dashboard.hourly_outcomes(now)
    assert len(hours) == 24
    assert hours[0][0] == datetime(2026, 3, 1, 13, 0, tzinfo=UTC) and hours[-1][0] == datetime(2026, 3, 2, 12, tzinfo=UTC)
    assert hours[-1][1]["success"] == 1 and hours[-2][1]["failed"] == 1 and hours[0][1]["success"] == 1
    assert sum(sum(counts.values()) for _, counts in hours) == 3


def test_dashboard_draws_the_charts_and_the_graph(app, web):
    extract = create_task(web, "extract")
    transform = create_task(web, "transform", depends_on=str(extract), cron_expression="")
    create_task(web, "load", depends_on=str(transform), cron_expression="")
    create_task(web, "alone")
    add_run(app, extract, "success", duration=4)
    add_run(app, extract, "failed", duration=2)
    html = page(web, "/admin/")
    assert 'id="hourly-chart"' in html and html.count('class="fill-success"') >= 1
    assert 'id="duration-chart"' in html and "3.00 s" in html
    assert 'id="timeline-chart"' in html
    assert html.count('class="node node-') == 3 and html.count('class="edge"') == 2
    assert "1 task with no dependencies is not drawn." in text_of(html)
    assert "50%" in text_of(html)  # success rate


def test_dashboard_of_an_empty_service(web):
    text = text_of(page(web, "/admin/"))
    assert "No runs in the last 24 hours" in text and "No task depends on another yet." in text


def test_schedule_preview_answers_the_form(web):
    ok = web.get("/admin/schedule-preview?cron_expression=30+1+*+*+*&timezone=America/New_York")
    assert ok.status_code == 200
    assert ok.get_json()["description"] == "At 01:30 AM (America/New_York)" and len(ok.get_json()["next_runs"]) == 5
    bad = web.get("/admin/schedule-preview?cron_expression=nope")
    assert bad.status_code == 422 and "field" in bad.get_json()["error"]


def test_schedule_preview_lists_interval_and_one_off_slots(web):
    every = web.get("/admin/schedule-preview?cron_expression=&interval_seconds=90").get_json()
    slots = [datetime.fromisoformat(moment) for moment in every["next_runs"]]
    assert every["description"] == "Every 90 seconds" and len(slots) == 5
    assert {later - earlier for earlier, later in zip(slots, slots[1:])} == {timedelta(seconds=90)}
    once = web.get("/admin/schedule-preview?run_at=2031-07-01T09:30:00%2B02:00").get_json()
    assert once["next_runs"] == ["2031-07-01T07:30:00+00:00"]
    both = web.get("/admin/schedule-preview?cron_expression=*+*+*+*+*&interval_seconds=60")
    assert both.status_code == 422 and both.get_json()["error"].startswith("interval_seconds:")
    none = web.get("/admin/schedule-preview?cron_expression=").get_json()
    assert none["next_runs"] == [] and none["description"] == "After its parents succeed"


def test_pages_use_only_the_services_own_assets(web):
    for url in ("/admin/", "/admin/tasks/", "/admin/tasks/new", "/admin/runs/"):
        html = page(web, url)
        for reference in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert reference.startswith(("/", "#")), (url, reference)
    for asset in ("admin/admin.css", "admin/admin.js", "admin/favicon.svg"):
        assert web.get(f"/admin/static/{asset}").status_code == 200


# --- secret key and accounts -------------------------------------------------------------------------


def test_the_secret_key_is_made_once_and_kept_private(tmp_path):
    key = load_or_create_secret_key(tmp_path / "instance")
    assert len(key) == 64
    assert load_or_create_secret_key(tmp_path / "instance") == key
    mode = stat.S_IMODE(os.stat(tmp_path / "instance" / "secret_key").st_mode)
    assert mode == 0o600
    assert [path.name for path in (tmp_path / "instance").iterdir()] == ["secret_key"]


def test_without_secret_key_the_admin_makes_one_and_the_api_never_does(app, tmp_path):
    app.config["SECRET_KEY"] = None
    app.instance_path = str(tmp_path / "instance")
    app.test_client().get("/api/health")
    assert not (tmp_path / "instance" / "secret_key").exists()
    response = app.test_client().get("/admin/login")
    assert response.status_code == 200 and "session=" in response.headers["Set-Cookie"]
    assert (tmp_path / "instance" / "secret_key").read_text() == app.secret_key


def test_create_admin_prompts_twice_and_stores_only_a_hash(app, runner):
    result = runner.invoke(args=["create-admin", "bob"], input="s3cret-enough\ns3cret-enough\n")
    assert result.exit_code == 0, result.output
    assert "Created admin 'bob'" in result.output and "s3cret-enough" not in result.output
    with app.app_context():
        user = find_admin("bob")
        assert user.password_hash.startswith(("scrypt:", "pbkdf2:")) and "s3cret-enough" not in user.password_hash


def test_create_admin_reads_the_password_from_stdin_for_scripts(app, runner):
    result = runner.invoke(args=["create-admin", "ci", "--password-stdin"], input="from a pipe 123\n")
    assert result.exit_code == 0, result.output
    client = app.test_client()
    client.get("/admin/login")
    response = client.post("/admin/login", data={"name": "ci", "password": "from a pipe 123",
                                                   "csrf_token": csrf_of(client)})
    assert response.status_code == 302


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["create-admin", ADMIN_NAME, "--password-stdin"], "another password\n", "exists already"),
        (["create-admin", "bob", "--password-stdin"], "short\n", "at least 8 characters"),
        (["create-admin", "nobody", "--reset-password", "--password-stdin"], "long enough!\n", "no admin named"),
    ],
)
def test_create_admin_refusals(app, admin_account, runner, args, stdin, message):
    result = runner.invoke(args=args, input=stdin)
    assert result.exit_code == 1 and message in result.output
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(AdminUser)).scalar_one() == 1
