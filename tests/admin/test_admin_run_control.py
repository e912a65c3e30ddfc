"""Run control in the admin, through Flask's test client, on SQLite and PostgreSQL: the Cancel
buttons of the run page and the run lists, the task page's pause state, Pause form and Resume
button, the task form's pool, pause_after_failures and five overlap policies, and the pool pages
(list, create, edit, delete refused while used). Every button is a CSRF-protected POST that calls
the API's own functions, so it is refused for the API's reasons, shown as a message.

No engine runs here: runs in states it would produce (running, queued) are inserted directly.
A real cancel of a running shell run, through a browser, is at the end (marked slow)."""
from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from tests.admin.admin_helpers import ADMIN_NAME, csrf_of, field_errors, task_form, text_of
from tests.admin.test_admin_browser import (  # noqa: F401  (fixtures: a live service with its engine; Chromium)
    DAILY_FAR_FROM_NOW, assert_only_own_assets, browser, create_task_directly, live, log_in, page as browser_tab, shoot,
)
from tests.api.api_helpers import add_run, set_task
from scheduler_service.extensions import db
from scheduler_service.models import AuditEntry, Pool, Run, RunCancel, Task

UTC = timezone.utc
ACTOR = f"admin:{ADMIN_NAME}"
OWNER = "host-a:1234:engine-1"
POLICIES = ("forbid", "allow", "buffer_one", "buffer_all", "replace")


# --- helpers -----------------------------------------------------------------------------------


def create_task(web, name: str, **fields) -> int:
    response = web.post("/admin/tasks/new", data=task_form(name, csrf_of(web), **fields))
    assert response.status_code == 302, text_of(response.get_data(as_text=True))[:2000]
    web.get(response.location)  # shows (and so clears) its message, as a browser would
    return int(re.search(r"/admin/tasks/(\d+)/", response.location).group(1))


def create_pool(web, name: str = "gpu", slots: str = "2", description: str = "") -> None:
    response = web.post("/admin/pools/new", data={"csrf_token": csrf_of(web), "name": name, "slots": slots,
                                                 "description": description})
    assert response.status_code == 302, text_of(response.get_data(as_text=True))[:2000]
    web.get(response.location)


def html_at(web, url: str, status: int = 200) -> str:
    response = web.get(url)
    assert response.status_code == status, (url, response.status_code, response.location)
    return response.get_data(as_text=True)


def flashes(html: str, category: str) -> list[str]:
    return [text_of(text) for text in re.findall(rf'<div class="flash flash-{category}"[^>]*>(.*?)</div>', html, re.S)]


def api_task(client, task_id: int) -> dict:
    response = client.get(f"/api/tasks/{task_id}/")
    assert response.status_code == 200
    return response.get_json()


def api_run(client, run_id: int) -> dict:
    response = client.get(f"/api/logs/{run_id}/")
    assert response.status_code == 200
    return response.get_json()


def add_running_run(app, task_id: int, owner: str = OWNER) -> int:
    """A run that an engine named ``owner`` runs now (the task's active_runs counts it)."""
    run_id = add_run(app, task_id, "running", trigger="manual")
    with app.app_context():
        db.session.execute(sa.update(Run).where(Run.id == run_id).values(owner=owner))
        db.session.execute(sa.update(Task).where(Task.id == task_id).values(active_runs=Task.active_runs + 1))
        db.session.commit()
    return run_id


def pause(web, task_id: int, **fields) -> None:
    """Pause through the task page's form, and look at the page it leads to (clearing its message)."""
    response = web.post(f"/admin/tasks/{task_id}/pause", data={"csrf_token": csrf_of(web), **fields})
    assert response.status_code == 302, text_of(response.get_data(as_text=True))[:2000]
    web.get(response.location)


def cancel_rows(app) -> list[dict]:
    with app.app_context():
        return [dict(row) for row in db.session.execute(sa.select(RunCancel.__table__)).mappings()]


def audit_actions(app, action: str) -> list[tuple[str, int | None]]:
    with app.app_context():
        rows = db.session.execute(sa.select(AuditEntry.actor, AuditEntry.task_id).where(AuditEntry.action == action)
                                  .order_by(AuditEntry.id))
        return [tuple(row) for row in rows]


def post_form(html: str, action: str) -> str:
    """The form that posts to ``action`` in a page (its whole text), to check what it sends."""
    match = re.search(rf'<form method="post" action="{re.escape(action)}"[^>]*>(.*?)</form>', html, re.S)
    assert match, f"no form posting to {action}"
    return match.group(1)


def run_row(html: str, run_id: int) -> str:
    return re.search(rf'<tr data-run="{run_id}">.*?</tr>', html, re.S).group(0)


def in_an_hour() -> datetime:
    return (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)


# --- cancel ------------------------------------------------------------------------------------


def test_a_pending_run_is_cancelled_from_its_page_and_frees_the_task(app, web, client):
    task_id = create_task(web, "report", enabled=None)
    web.post(f"/admin/tasks/{task_id}/run", data={"csrf_token": csrf_of(web)})
    [run] = client.get(f"/api/logs/?task_id={task_id}").get_json()["items"]
    assert (run["trigger"], run["status"]) == ("manual", "pending")

    html = html_at(web, f"/admin/runs/{run['id']}/")
    form = post_form(html, f"/admin/runs/{run['id']}/cancel")
    assert f'name="csrf_token" value="{csrf_of(web)}"' in form and "Cancel run" in form

    response = web.post(f"/admin/runs/{run['id']}/cancel", data={"csrf_token": csrf_of(web)})
    assert response.status_code == 302 and response.location == f"/admin/runs/{run['id']}/"
    html = html_at(web, response.location)
    assert flashes(html, "success") == [f"Run #{run['id']} of “report” cancelled."]
    assert f'/admin/runs/{run["id"]}/cancel' not in html  # finished: no button any more
    assert f"cancelled by {ACTOR}" in text_of(html)

    stored = api_run(client, run["id"])
    assert stored["status"] == "failed" and stored["message"] == f"cancelled by {ACTOR}"
    assert cancel_rows(app) == []  # a pending run is finished at once, no engine asked
    assert audit_actions(app, "cancel") == [(ACTOR, task_id)]
    # forbid: the cancelled run no longer blocks a new one.
    again = web.post(f"/admin/tasks/{task_id}/run", data={"csrf_token": csrf_of(web)})
    assert flashes(html_at(web, again.location), "success")[0].endswith("queued.")


def test_a_running_run_is_asked_to_stop_from_the_run_list(app, web, client):
    task_id = create_task(web, "long", enabled=None)
    done = add_run(app, task_id, "success")
    running = add_running_run(app, task_id)
    here = f"/admin/runs/?task_id={task_id}"

    listing = html_at(web, here)
    form = post_form(run_row(listing, running), f"/admin/runs/{running}/cancel")
    assert f'name="next" value="{here}"' in form and f'value="{csrf_of(web)}"' in form
    assert "/cancel" not in run_row(listing, done)  # a finished run has no button

    response = web.post(f"/admin/runs/{running}/cancel", data={"csrf_token": csrf_of(web), "next": here})
    assert response.status_code == 302 and response.location == here
    assert flashes(html_at(web, here), "success") == [
        f"Run #{running} of “long” asked to stop: it ends within a few seconds, failed as cancelled."]
    [row] = cancel_rows(app)
    assert (row["run_id"], row["owner"], row["message"]) == (running, OWNER, f"cancelled by {ACTOR}")
    assert api_run(client, running)["status"] == "running"  # until its engine stops it

    html = html_at(web, f"/admin/runs/{running}/")
    assert re.search(r'id="stop-asked">Stop asked .*?\(cancelled by admin:alice\)', html, re.S)
    assert f"/admin/runs/{running}/cancel" not in html  # asked once is enough
    assert 'http-equiv="refresh"' in html  # and the page keeps reloading until it ends


def test_the_task_pages_runs_have_cancel_buttons_that_come_back_to_it(app, web, client):
    task_id = create_task(web, "queued", enabled=None)
    waiting = add_run(app, task_id, "pending", trigger="schedule")
    failed = add_run(app, task_id, "failed")
    html = html_at(web, f"/admin/tasks/{task_id}/")
    post_form(run_row(html, waiting), f"/admin/runs/{waiting}/cancel")
    assert "/cancel" not in run_row(html, failed)

    response = web.post(f"/admin/runs/{waiting}/cancel",
                        data={"csrf_token": csrf_of(web), "next": f"/admin/tasks/{task_id}/"})
    assert response.location == f"/admin/tasks/{task_id}/"
    assert api_run(client, waiting)["status"] == "failed"
    # A next that leaves the admin is not followed: back to the run's own page.
    other = add_run(app, task_id, "pending", trigger="schedule")
    response = web.post(f"/admin/runs/{other}/cancel",
                        data={"csrf_token": csrf_of(web), "next": "https://evil.example/"})
    assert response.location == f"/admin/runs/{other}/"


@pytest.mark.parametrize("status", ["success", "failed", "skipped"])
def test_cancelling_a_finished_run_is_refused_with_an_error_message(app, web, client, status):
    task_id = create_task(web, "done", enabled=None)
    run_id = add_run(app, task_id, status, message="as it was")
    assert f"/admin/runs/{run_id}/cancel" not in html_at(web, f"/admin/runs/{run_id}/")
    before = api_run(client, run_id)

    # A page from before it finished still has the button: the click is refused (the API's 409).
    response = web.post(f"/admin/runs/{run_id}/cancel", data={"csrf_token": csrf_of(web)})
    assert response.status_code == 302
    assert flashes(html_at(web, response.location), "error") == [
        f"Not cancelled: run {run_id} already finished ({status})"]
    assert api_run(client, run_id) == before
    assert audit_actions(app, "cancel") == []


def test_cancelling_an_unknown_run_is_an_html_404(web):
    response = web.post("/admin/runs/424242/cancel", data={"csrf_token": csrf_of(web)})
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "Run 424242 does not exist" in text_of(response.get_data(as_text=True))


# --- pause and resume ------------------------------------------------------------------------------


def test_pause_with_a_note_until_a_time_shows_the_pause_on_the_task_page(app, web, client):
    task_id = create_task(web, "nightly")
    html = html_at(web, f"/admin/tasks/{task_id}/")
    form = post_form(html, f"/admin/tasks/{task_id}/pause")
    assert 'name="note"' in form and 'name="until"' in form and f'value="{csrf_of(web)}"' in form
    assert 'id="pause-state"' not in html and f"/admin/tasks/{task_id}/resume" not in html

    until = in_an_hour()
    response = web.post(f"/admin/tasks/{task_id}/pause",
                        data={"csrf_token": csrf_of(web), "note": "  db migration <b>now</b> ",
                              "until": until.isoformat()})
    assert response.status_code == 302 and response.location == f"/admin/tasks/{task_id}/"
    stored = api_task(client, task_id)
    assert stored["enabled"] is False and stored["next_run_at"] is None
    assert (stored["pause_note"], stored["paused_by"]) == ("db migration <b>now</b>", ACTOR)
    assert datetime.fromisoformat(stored["paused_until"]) == until

    html = html_at(web, response.location)
    stamp = until.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert flashes(html, "success") == [f"Task “nightly” paused until {stamp}; it resumes by itself then."]
    state = text_of(re.search(r'id="pause-state">(.*?)</div>', html, re.S).group(1))
    assert f"Paused by {ACTOR}, until {stamp}" in state and "when it resumes by itself" in state
    assert "db migration <b>now</b>" in state and "<b>now</b>" not in html  # shown, escaped
    assert re.search(r'badge-paused"[^>]*>paused', html) and "badge-disabled" not in html
    post_form(html, f"/admin/tasks/{task_id}/resume")
    assert f"/admin/tasks/{task_id}/toggle" not in html  # Resume, not Enable
    # The form shows the pause, to change it.
    assert 'value="db migration &lt;b&gt;now&lt;/b&gt;"' in html and f'value="{until.isoformat()}"' in html
    assert "Change the pause" in html
    assert audit_actions(app, "pause") == [(ACTOR, task_id)]


def test_pause_without_a_note_or_end_waits_for_someone_and_a_pause_can_be_changed(app, web, client):
    task_id = create_task(web, "plain")
    response = web.post(f"/admin/tasks/{task_id}/pause", data={"csrf_token": csrf_of(web), "note": "", "until": ""})
    html = html_at(web, response.location)
    assert flashes(html, "success") == ["Task “plain” paused until someone resumes it."]
    assert f"Paused by {ACTOR}, until someone resumes it." in text_of(html)
    stored = api_task(client, task_id)
    assert (stored["enabled"], stored["pause_note"], stored["paused_until"]) == (False, None, None)

    # Pausing again changes the note and the end.
    until = in_an_hour() + timedelta(days=1)
    pause(web, task_id, note="later", until=until.isoformat())
    stored = api_task(client, task_id)
    assert stored["pause_note"] == "later" and datetime.fromisoformat(stored["paused_until"]) == until


@pytest.mark.parametrize(("until", "message"), [
    ("tomorrow", "Not a valid datetime."),
    ("2020-01-01T00:00:00+00:00", "Must be in the future."),
    ("1900-01-01T00:00:00", "Must be between 1970-01-01 and 9000-01-01."),
])
def test_a_bad_until_is_shown_beside_it_and_nothing_is_paused(app, web, client, until, message):
    task_id = create_task(web, "guarded")
    response = web.post(f"/admin/tasks/{task_id}/pause",
                        data={"csrf_token": csrf_of(web), "note": "kept", "until": until})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert field_errors(html, "until") == [message]
    assert 'id="pause-errors"' in html
    assert f'value="{until}"' in html and 'value="kept"' in html  # typed values kept, to correct
    # The API refuses the same input with the same words.
    api = client.post(f"/api/tasks/{task_id}/pause/", json={"note": "kept", "until": until})
    assert api.status_code == 422 and api.get_json()["errors"]["json"]["until"] == [message]
    stored = api_task(client, task_id)
    assert stored["enabled"] is True and stored["pause_note"] is None
    assert audit_actions(app, "pause") == []


def test_a_too_long_note_is_refused_beside_the_note(web, client):
    task_id = create_task(web, "wordy")
    response = web.post(f"/admin/tasks/{task_id}/pause", data={"csrf_token": csrf_of(web), "note": "x" * 2001})
    assert response.status_code == 422
    assert field_errors(response.get_data(as_text=True), "note") == ["Longer than maximum length 2000."]
    assert api_task(client, task_id)["enabled"] is True


def test_resume_enables_the_task_clears_the_pause_and_counts_failures_again(app, web, client):
    task_id = create_task(web, "flaky", pause_after_failures="2")
    pause(web, task_id, note="broken", until=in_an_hour().isoformat())
    set_task(app, task_id, consecutive_failures=2)
    response = web.post(f"/admin/tasks/{task_id}/resume", data={"csrf_token": csrf_of(web)})
    assert response.status_code == 302 and response.location == f"/admin/tasks/{task_id}/"
    html = html_at(web, response.location)
    assert flashes(html, "success") == ["Task “flaky” resumed; its next slot is the first from now."]
    stored = api_task(client, task_id)
    assert stored["enabled"] is True and stored["next_run_at"] is not None
    assert (stored["pause_note"], stored["paused_until"], stored["paused_by"], stored["consecutive_failures"]) == (
        None, None, None, 0)
    assert 'id="pause-state"' not in html and 'badge-enabled">enabled' in html
    assert audit_actions(app, "resume") == [(ACTOR, task_id)]

    # A second click (or a stale page) resumes nothing: the task is not paused.
    again = web.post(f"/admin/tasks/{task_id}/resume", data={"csrf_token": csrf_of(web), "next": "/admin/tasks/"})
    assert again.location == "/admin/tasks/"
    assert flashes(html_at(web, again.location), "error") == ["Task “flaky” is not paused: nothing to resume."]
    assert audit_actions(app, "resume") == [(ACTOR, task_id)]


def test_the_task_list_shows_paused_tasks_with_a_resume_button(app, web, client):
    paused = create_task(web, "paused-one")
    create_task(web, "switched-off", enabled=None)
    pause(web, paused, note="wait for the vendor")
    listing = html_at(web, "/admin/tasks/")
    row = re.search(r'<tr data-task="paused-one".*?</tr>', listing, re.S).group(0)
    assert 'badge-paused" title="wait for the vendor">paused' in row
    form = post_form(row, f"/admin/tasks/{paused}/resume")
    assert 'name="next" value="/admin/tasks/"' in form
    # Disabled by the toggle is not paused: Enable, as before.
    other = re.search(r'<tr data-task="switched-off".*?</tr>', listing, re.S).group(0)
    assert 'badge-disabled">disabled' in other and "/toggle" in other and "/resume" not in other

    response = web.post(f"/admin/tasks/{paused}/resume", data={"csrf_token": csrf_of(web), "next": "/admin/tasks/"})
    assert response.location == "/admin/tasks/"
    assert api_task(client, paused)["enabled"] is True


def test_a_task_paused_by_its_failures_says_so(app, web):
    task_id = create_task(web, "fragile", pause_after_failures="3")
    # What the recorder writes after the third final failure in a row.
    set_task(app, task_id, enabled=False, next_run_at=None, due_at=None, consecutive_failures=3,
             pause_note="paused after 3 consecutive failures", paused_by="scheduler")
    html = html_at(web, f"/admin/tasks/{task_id}/")
    state = text_of(re.search(r'id="pause-state">(.*?)</div>', html, re.S).group(1))
    assert state.startswith("Paused by scheduler, until someone resumes it.")
    assert "paused after 3 consecutive failures" in state
    assert text_of(re.search(r'id="pause-after-failures">(.*?)</dd>', html, re.S).group(1)) == (
        "after 3 final failures in a row")
    assert text_of(re.search(r'id="consecutive-failures">(.*?)</dd>', html, re.S).group(1)).startswith("3 ")


def test_editing_a_paused_task_keeps_the_pause_unless_enabled_is_ticked(app, web, client):
    task_id = create_task(web, "editable")
    pause(web, task_id, note="keep me")
    form = html_at(web, f"/admin/tasks/{task_id}/edit")
    assert not re.search(r'id="enabled" name="enabled"\s+checked', form)
    web.post(f"/admin/tasks/{task_id}/edit", data=task_form("editable", csrf_of(web), enabled=None, max_retries="5"))
    stored = api_task(client, task_id)
    assert (stored["enabled"], stored["pause_note"], stored["paused_by"], stored["max_retries"]) == (
        False, "keep me", ACTOR, 5)
    web.post(f"/admin/tasks/{task_id}/edit", data=task_form("editable", csrf_of(web), max_retries="5"))
    stored = api_task(client, task_id)
    assert (stored["enabled"], stored["pause_note"], stored["paused_by"]) == (True, None, None)


def test_pause_and_resume_of_an_unknown_task_are_html_404s(web):
    for url in ("/admin/tasks/4242/pause", "/admin/tasks/4242/resume"):
        response = web.post(url, data={"csrf_token": csrf_of(web)})
        assert response.status_code == 404 and "Task 4242 does not exist." in response.get_data(as_text=True), url


# --- the task form and page: pool, pause_after_failures, overlap policies ---------------------------------


def test_the_task_form_offers_the_pools_and_the_five_policies_with_their_meaning(web):
    create_pool(web, "gpu")
    create_pool(web, "db-host")
    form = html_at(web, "/admin/tasks/new")
    pool_select = re.search(r'<select id="pool" name="pool"[^>]*>(.*?)</select>', form, re.S).group(1)
    assert re.findall(r'<option value="([^"]*)"', pool_select) == ["", "db-host", "gpu"]
    assert '<option value="">none</option>' in pool_select
    assert re.search(r'id="pause_after_failures" name="pause_after_failures" value="0"', form)
    policies = re.search(r'<select id="concurrency_policy"[^>]*>(.*?)</select>', form, re.S).group(1)
    options = re.findall(r'<option value="([^"]+)"[^>]*>([^<]+)</option>', policies)
    assert [value for value, _ in options] == list(POLICIES)
    labels = dict(options)
    assert labels["forbid"] == "skip the new slot (forbid)"
    assert labels["allow"] == "run it alongside (allow)"
    assert "at most one waits" in labels["buffer_one"] and "every waiting slot runs" in labels["buffer_all"]
    assert "cancel the active run" in labels["replace"]
    assert re.search(r'<option value="forbid" selected>', policies)  # the API's default


@pytest.mark.parametrize("policy", POLICIES)
def test_pool_pause_after_failures_and_policy_survive_a_trip_through_the_form(app, web, client, policy):
    create_pool(web, "gpu", slots="3")
    task_id = create_task(web, "trained", pool="gpu", pause_after_failures="4", concurrency_policy=policy)
    stored = api_task(client, task_id)
    assert (stored["pool"], stored["pause_after_failures"], stored["concurrency_policy"]) == ("gpu", 4, policy)

    form = html_at(web, f"/admin/tasks/{task_id}/edit")
    assert '<option value="gpu" selected>gpu</option>' in form
    assert re.search(rf'<option value="{policy}" selected>', form)
    assert 'name="pause_after_failures" value="4"' in form

    # Saved back unchanged, nothing changes (no update in the history).
    values = {"pool": "gpu", "pause_after_failures": "4", "concurrency_policy": policy}
    saved = web.post(f"/admin/tasks/{task_id}/edit", data=task_form("trained", csrf_of(web), **values))
    assert saved.status_code == 302
    assert api_task(client, task_id) == stored
    assert audit_actions(app, "update") == []

    # The task page shows them: the pool linked to its page, the policy in words.
    html = html_at(web, f"/admin/tasks/{task_id}/")
    pool_fact = re.search(r'id="limits-pool">(.*?)</dd>', html, re.S).group(1)
    assert '<a href="/admin/pools/gpu/edit">gpu</a>' in pool_fact and "0 of 3 slots taken" in text_of(pool_fact)
    assert f"({policy})" in text_of(re.search(r'id="limits-policy">(.*?)</dd>', html, re.S).group(1))
    assert "after 4 final failures in a row" in text_of(html)

    # No pool and 0 again: the pool cleared, never pausing by itself.
    web.post(f"/admin/tasks/{task_id}/edit",
             data=task_form("trained", csrf_of(web), pool="", pause_after_failures="0", concurrency_policy=policy))
    stored = api_task(client, task_id)
    assert (stored["pool"], stored["pause_after_failures"]) == (None, 0)
    html = html_at(web, f"/admin/tasks/{task_id}/")
    assert "none" in text_of(re.search(r'id="limits-pool">(.*?)</dd>', html, re.S).group(1))
    assert text_of(re.search(r'id="pause-after-failures">(.*?)</dd>', html, re.S).group(1)).startswith("never")


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"pool": "nope"}, "pool", "Unknown pool 'nope'."),
    ({"pause_after_failures": "-1"}, "pause_after_failures", "Must be greater than or equal to 0"),
    ({"pause_after_failures": "often"}, "pause_after_failures", "Not a valid integer."),
    ({"concurrency_policy": "queue"}, "concurrency_policy",
     "Must be one of: forbid, allow, buffer_one, buffer_all, replace."),
])
def test_the_task_form_refuses_what_the_api_refuses_beside_the_field(app, web, client, fields, field, message):
    response = web.post("/admin/tasks/new", data=task_form("refused", csrf_of(web), **fields))
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert any(error.startswith(message) for error in field_errors(html, field)), field_errors(html, field)
    if field == "pool":  # the typed pool is kept, marked as missing
        assert '<option value="nope" selected>nope (no such pool)</option>' in html
    assert client.get("/api/tasks/").get_json()["items"] == []


# --- pools -------------------------------------------------------------------------------------------


def test_pools_are_listed_with_slots_running_waiting_and_their_tasks(app, web, client):
    empty = html_at(web, "/admin/pools/")
    assert "No pools yet." in empty and 'href="/admin/pools/new"' in empty
    assert 'href="/admin/pools/"' in html_at(web, "/admin/")  # in the navigation

    response = web.post("/admin/pools/new", data={"csrf_token": csrf_of(web), "name": "gpu", "slots": "2",
                                                 "description": "two cards\r\nonly"})
    assert response.status_code == 302 and response.location == "/admin/pools/"
    assert flashes(html_at(web, "/admin/pools/"), "success") == ["Pool “gpu” created with 2 slots."]
    assert flashes(html_at(web, "/admin/pools/"), "success") == []  # shown once
    create_pool(web, "spare", slots="1")
    stored = client.get("/api/pools/gpu/").get_json()
    assert (stored["slots"], stored["description"], stored["running"]) == (2, "two cards\nonly", 0)

    first = create_task(web, "train-a", pool="gpu", enabled=None)
    create_task(web, "train-b", pool="gpu", enabled=None)
    add_run(app, first, "pending", trigger="schedule")
    add_run(app, first, "pending", trigger="schedule")
    with app.app_context():
        db.session.execute(sa.update(Pool).where(Pool.name == "gpu").values(running=2))
        db.session.commit()

    listing = html_at(web, "/admin/pools/")
    assert re.findall(r'<tr data-pool="([^"]+)"', listing) == ["gpu", "spare"]
    row = re.search(r'<tr data-pool="gpu">.*?</tr>', listing, re.S).group(0)
    cells = [text_of(cell).replace(" ,", ",") for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    assert cells[0].startswith("gpu") and "two cards" in cells[0]
    assert cells[1:5] == ["2", "2 full", "2", "train-a, train-b"]
    assert f'href="/admin/tasks/{first}/"' in row
    spare = re.search(r'<tr data-pool="spare">.*?</tr>', listing, re.S).group(0)
    assert [text_of(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", spare, re.S)][1:5] == [
        "1", "0", "0", "no task"]
    assert [actor for actor, task_id in audit_actions(app, "create") if task_id is None] == [ACTOR, ACTOR]


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"name": "no spaces"}, "name", "1..100 letters, digits, '-' or '_'."),
    ({"name": ""}, "name", "1..100 letters, digits, '-' or '_'."),
    ({"slots": "0"}, "slots", "Must be greater than or equal to 1"),
    ({"slots": "many"}, "slots", "Not a valid integer."),
    ({"slots": ""}, "slots", "Missing data for required field."),
    ({"description": "x" * 10001}, "description", "Longer than maximum length 10000."),
])
def test_a_bad_pool_is_shown_beside_its_field_and_nothing_is_created(web, client, fields, field, message):
    data = {"csrf_token": csrf_of(web), "name": "gpu", "slots": "2", "description": "", **fields}
    response = web.post("/admin/pools/new", data=data)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert any(error.startswith(message) for error in field_errors(html, field)), field_errors(html, field)
    if field != "description":
        assert f'value="{data[field]}"' in html  # kept, to correct
    assert client.get("/api/pools/").get_json()["items"] == []


def test_a_taken_pool_name_is_shown_beside_the_name(web, client):
    create_pool(web, "gpu", slots="2", description="first")
    response = web.post("/admin/pools/new", data={"csrf_token": csrf_of(web), "name": "gpu", "slots": "9"})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert field_errors(html, "name") == ["Already taken."]
    assert "a pool named &#39;gpu&#39; already exists" in html
    assert client.get("/api/pools/gpu/").get_json()["slots"] == 2


def test_edit_shows_the_pool_now_and_saves_slots_and_description(app, web, client):
    create_pool(web, "gpu", slots="2", description="old")
    task_id = create_task(web, "train", pool="gpu", enabled=None)
    add_run(app, task_id, "pending", trigger="schedule")
    form = html_at(web, "/admin/pools/gpu/edit")
    assert text_of(re.search(r'id="pool-running">(.*?)</dd>', form, re.S).group(1)) == "0 of 2 slots"
    assert text_of(re.search(r'id="pool-waiting">(.*?)</dd>', form, re.S).group(1)) == "1 run"
    assert f'href="/admin/tasks/{task_id}/">train</a>' in form
    assert 'id="slots" name="slots" value="2"' in form and ">old</textarea>" in form
    assert 'name="name"' not in form  # a pool keeps its name

    response = web.post("/admin/pools/gpu/edit", data={"csrf_token": csrf_of(web), "slots": "5", "description": "new"})
    assert response.status_code == 302 and response.location == "/admin/pools/"
    assert flashes(html_at(web, "/admin/pools/"), "success") == ["Pool “gpu” saved: 5 slots."]
    stored = client.get("/api/pools/gpu/").get_json()
    assert (stored["slots"], stored["description"]) == (5, "new")
    [entry] = client.get("/api/audit/", query_string={"action": "update"}).get_json()["items"]
    assert entry["actor"] == ACTOR and entry["changes"]["slots"] == [2, 5]

    refused = web.post("/admin/pools/gpu/edit", data={"csrf_token": csrf_of(web), "slots": "0", "description": "x"})
    assert refused.status_code == 422
    html = refused.get_data(as_text=True)
    assert field_errors(html, "slots")[0].startswith("Must be greater than or equal to 1")
    assert 'value="0"' in html and "5 slots" in text_of(html)  # the typed value, and the pool as it is
    assert client.get("/api/pools/gpu/").get_json()["slots"] == 5


def test_delete_a_pool_asks_first_and_is_refused_while_a_task_uses_it(app, web, client):
    create_pool(web, "gpu")
    create_pool(web, "spare")
    task_id = create_task(web, "train", pool="gpu", enabled=None)

    confirm = html_at(web, "/admin/pools/spare/delete")
    assert "Delete pool “spare”?" in confirm and "Delete pool</button>" in confirm
    assert client.get("/api/pools/spare/").status_code == 200  # asking deletes nothing
    response = web.post("/admin/pools/spare/delete", data={"csrf_token": csrf_of(web)})
    assert response.status_code == 302 and response.location == "/admin/pools/"
    assert flashes(html_at(web, "/admin/pools/"), "success") == ["Pool “spare” deleted."]
    assert client.get("/api/pools/spare/").status_code == 404

    confirm = html_at(web, "/admin/pools/gpu/delete")
    assert "This pool cannot be deleted: tasks use it." in text_of(confirm)
    assert f'href="/admin/tasks/{task_id}/edit">train</a>' in confirm and "Delete pool</button>" not in confirm
    refused = web.post("/admin/pools/gpu/delete", data={"csrf_token": csrf_of(web)})
    assert refused.status_code == 409
    assert "Not deleted. pool 'gpu' is used by: train; change those tasks first" in text_of(
        refused.get_data(as_text=True))
    assert client.get("/api/pools/gpu/").status_code == 200

    # Once the task leaves it, it goes.
    web.post(f"/admin/tasks/{task_id}/edit", data=task_form("train", csrf_of(web), pool="", enabled=None))
    assert web.post("/admin/pools/gpu/delete", data={"csrf_token": csrf_of(web)}).status_code == 302
    assert client.get("/api/pools/").get_json()["items"] == []


def test_unknown_pools_are_html_404s(web):
    for url in ("/admin/pools/nope/edit", "/admin/pools/nope/delete"):
        response = web.get(url)
        assert response.status_code == 404 and response.mimetype == "text/html", url
        assert "Pool “nope” does not exist." in response.get_data(as_text=True)


# --- CSRF and login -----------------------------------------------------------------------------------


def test_every_run_control_form_needs_this_sessions_csrf_token(app, web, client):
    create_pool(web, "gpu", description="as it was")
    task_id = create_task(web, "guarded", enabled=None)
    pending = add_run(app, task_id, "pending", trigger="schedule")
    running = add_running_run(app, task_id)
    paused = create_task(web, "resting")
    pause(web, paused, note="kept")
    before = {"task": api_task(client, task_id), "paused": api_task(client, paused),
              "pool": client.get("/api/pools/gpu/").get_json()}

    posts = [
        (f"/admin/runs/{pending}/cancel", {}),
        (f"/admin/runs/{running}/cancel", {}),
        (f"/admin/tasks/{task_id}/pause", {"note": "forged"}),
        (f"/admin/tasks/{paused}/resume", {}),
        ("/admin/pools/new", {"name": "forged", "slots": "1"}),
        ("/admin/pools/gpu/edit", {"slots": "9", "description": "forged"}),
        ("/admin/pools/gpu/delete", {}),
    ]
    for url, data in posts:
        for token in (None, "", "forged-token"):
            body = dict(data) if token is None else {**data, "csrf_token": token}
            response = web.post(url, data=body)
            assert response.status_code == 400 and "Form expired" in response.get_data(as_text=True), (url, token)

    assert api_run(client, pending)["status"] == "pending" and api_run(client, running)["status"] == "running"
    assert cancel_rows(app) == []
    after = {"task": api_task(client, task_id), "paused": api_task(client, paused),
             "pool": client.get("/api/pools/gpu/").get_json()}
    assert after == before
    assert [pool["name"] for pool in client.get("/api/pools/").get_json()["items"]] == ["gpu"]


@pytest.mark.parametrize("url", ["/admin/pools/", "/admin/pools/new", "/admin/pools/gpu/edit",
                                 "/admin/pools/gpu/delete"])
def test_pool_pages_need_a_login(app, url):
    response = app.test_client().get(url)
    assert response.status_code == 302 and response.location.startswith("/admin/login")


def test_buttons_need_a_login_even_with_a_token_of_their_own(app, web, client):
    """A forged form from another session (its own CSRF token, no login) changes nothing."""
    task_id = create_task(web, "mine", enabled=None)
    run_id = add_run(app, task_id, "pending", trigger="schedule")
    stranger = app.test_client()
    stranger.get("/admin/login")  # a session with a CSRF token, but nobody logged in
    for url in (f"/admin/runs/{run_id}/cancel", f"/admin/tasks/{task_id}/pause", f"/admin/tasks/{task_id}/resume"):
        response = stranger.post(url, data={"csrf_token": csrf_of(stranger)})
        assert response.status_code == 302 and response.location.startswith("/admin/login"), url
    assert api_run(client, run_id)["status"] == "pending"
    assert api_task(client, task_id)["pause_note"] is None


# --- in a real browser, with the engine running (slow) ---------------------------------------------------


@pytest.mark.slow
def test_in_a_browser_cancel_a_running_shell_run_pause_resume_and_make_a_pool(browser_tab, live):
    tab = browser_tab
    task_id = create_task_directly(live.app, name="sleeper", cron_expression=DAILY_FAR_FROM_NOW,
                                   action={"type": "shell", "command": "echo started; sleep 60"})
    log_in(tab)
    tab.goto(f"/admin/tasks/{task_id}/")
    tab.click("button:has-text('Run now')")
    tab.click(".flash-success a")  # to the run's page
    deadline = time.monotonic() + 20
    while tab.locator("h1 .badge-running").count() == 0:
        assert time.monotonic() < deadline, tab.locator("h1").inner_text()
        time.sleep(0.3)
        tab.reload()
    shoot(tab, "run-control-01-running")
    started = time.monotonic()
    tab.click("button:has-text('Cancel run')")
    assert "asked to stop" in tab.locator(".flash-success").inner_text()
    while tab.locator("h1 .badge-failed").count() == 0:  # the page reloads itself until the run ends
        assert time.monotonic() - started < 20, tab.locator("main").inner_text()[:500]
        time.sleep(0.3)
        tab.reload()
    assert tab.locator(".run-message").first.inner_text().startswith(f"cancelled by {ACTOR}")
    assert time.monotonic() - started < 10  # the contract: stopped within 5 seconds (loose here)
    shoot(tab, "run-control-02-cancelled")

    tab.click("h1 a:has-text('sleeper')")
    tab.fill("#note", "vendor outage")
    tab.fill("#until", (datetime.now(UTC) + timedelta(hours=2)).isoformat())
    tab.click("#pause button:has-text('Pause')")
    assert "paused until" in tab.locator(".flash-success").inner_text()
    assert "vendor outage" in tab.locator("#pause-state").inner_text()
    shoot(tab, "run-control-03-paused")
    tab.click(".page-head button:has-text('Resume')")
    assert "resumed" in tab.locator(".flash-success").inner_text()
    assert tab.locator("#pause-state").count() == 0

    tab.click("nav >> text=Pools")
    tab.click("text=New pool")
    tab.fill("#name", "gpu")
    tab.fill("#slots", "0")
    tab.click("button:has-text('Create pool')")
    assert "Must be greater than or equal to 1" in tab.locator("#field-slots .field-error").inner_text()
    tab.fill("#slots", "2")
    tab.click("button:has-text('Create pool')")
    assert tab.locator("tr[data-pool='gpu']").is_visible()
    shoot(tab, "run-control-04-pools")
    assert_only_own_assets(tab, live)
