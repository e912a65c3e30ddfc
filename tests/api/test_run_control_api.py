"""Run control over HTTP (no engine running): cancelling runs, pausing and resuming tasks, pools,
the new task fields (pool, concurrency_policy values, pause_after_failures), manual runs under
each overlap policy, and the scopes and audit entries of those writes.

Runs in states the disabled scheduler never reaches (running, queued schedule slots, finished)
are inserted with ``add_run``; everything else goes through the API, as a user would."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from tests.api.api_helpers import (
    HUGE_ID, RUN_FIELDS, TASK_FIELDS, add_run, assert_json_error, count_rows, describe, field_errors, make_task,
    now, parse_time, set_task, task_payload,
)
from scheduler_service.auth import issue_token
from scheduler_service.extensions import db
from scheduler_service.models import AuditEntry, Pool, Run, RunCancel, Task

POLICIES = ("forbid", "allow", "buffer_one", "buffer_all", "replace")
POOL_FIELDS = {"name", "slots", "description", "running", "waiting", "created_at", "updated_at"}
PAUSE_FIELDS = ("pause_note", "paused_until", "paused_by")
OWNER = "host-a:1234:engine-1"


# --- helpers -------------------------------------------------------------------------


def client_with_scope(app, scope: str):
    with app.app_context():
        secret = issue_token(f"{scope}-token", scope=scope)
    scoped = app.test_client()
    scoped.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    return scoped


def assert_forbidden(response, needed: str) -> None:
    body = assert_json_error(response, 403)
    assert f"'{needed}' scope" in body.get("message", ""), body


def audit_entries(client, **filters) -> list[dict]:
    response = client.get("/api/audit/", query_string={"limit": 500, **filters})
    assert response.status_code == 200, describe(response)
    return response.get_json()["items"]


def get_task(client, task_id: int) -> dict:
    response = client.get(f"/api/tasks/{task_id}/")
    assert response.status_code == 200, describe(response)
    return response.get_json()


def get_run(client, run_id: int) -> dict:
    response = client.get(f"/api/logs/{run_id}/")
    assert response.status_code == 200, describe(response)
    return response.get_json()


def active_runs(app, task_id: int) -> int:
    with app.app_context():
        return db.session.get(Task, task_id).active_runs


def run_now(client, task_id: int) -> dict:
    response = client.post(f"/api/tasks/{task_id}/run/")
    assert response.status_code == 202, describe(response)
    return response.get_json()


def cancel(client, run_id: int):
    return client.post(f"/api/logs/{run_id}/cancel/")


def add_running_run(app, task_id: int, owner: str = OWNER) -> int:
    """A run that an engine named ``owner`` runs now (the task's active_runs counts it)."""
    run_id = add_run(app, task_id, "running", trigger="manual")
    with app.app_context():
        db.session.execute(sa.update(Run).where(Run.id == run_id).values(owner=owner))
        db.session.execute(sa.update(Task).where(Task.id == task_id).values(active_runs=Task.active_runs + 1))
        db.session.commit()
    return run_id


def cancel_rows(app) -> list[dict]:
    with app.app_context():
        rows = db.session.execute(sa.select(RunCancel.__table__)).mappings().all()
        return [dict(row) for row in rows]


def run_counts(client, task_id: int) -> dict:
    response = client.get("/api/stats/", query_string={"task_id": task_id})
    assert response.status_code == 200, describe(response)
    return response.get_json()["runs"]["by_status"]


def make_pool(client, name: str, slots: int = 2, description: str = "") -> dict:
    response = client.post("/api/pools/", json={"name": name, "slots": slots, "description": description})
    assert response.status_code == 201, describe(response)
    return response.get_json()


def get_pool(client, name: str) -> dict:
    response = client.get(f"/api/pools/{name}/")
    assert response.status_code == 200, describe(response)
    return response.get_json()


def iso(moment: datetime) -> str:
    return moment.isoformat()


# --- cancel --------------------------------------------------------------------------


def test_a_pending_manual_run_is_cancelled_at_once_and_frees_its_task(app, client):
    task = make_task(client)  # forbid
    run = run_now(client, task["id"])
    assert active_runs(app, task["id"]) == 1
    assert_json_error(client.post(f"/api/tasks/{task['id']}/run/"), 409)  # the pending run is active

    before = now()
    response = cancel(client, run["id"])
    after = now()
    assert response.status_code == 202, describe(response)
    body = response.get_json()
    assert set(body) == RUN_FIELDS
    assert (body["id"], body["status"], body["trigger"]) == (run["id"], "failed", "manual")
    assert body["message"].startswith("cancelled"), body["message"]
    assert "token:tests" in body["message"]
    assert body["finished_at"] is not None
    assert before.replace(microsecond=0) <= parse_time(body["finished_at"]) <= after
    assert get_run(client, run["id"])["status"] == "failed"

    # Its slot is free: the task is not active any more, so forbid accepts a new manual run.
    assert active_runs(app, task["id"]) == 1 - 1
    assert get_task(client, task["id"])["status"] == "pending"  # never ran: the cancel ran nothing
    second = run_now(client, task["id"])
    assert second["id"] != run["id"] and second["status"] == "pending"
    assert active_runs(app, task["id"]) == 1

    # A cancelled run has finished: cancelling it again is a conflict and changes nothing.
    assert_json_error(cancel(client, run["id"]), 409)
    assert get_run(client, run["id"]) == body
    assert cancel_rows(app) == []  # a pending run needs no request to an engine


@pytest.mark.parametrize("status", ["success", "skipped", "failed"])
def test_a_finished_run_cannot_be_cancelled(app, client, status):
    task = make_task(client)
    run_id = add_run(app, task["id"], status, message="as it was")
    before = get_run(client, run_id)
    body = assert_json_error(cancel(client, run_id), 409)
    assert "message" in body
    assert get_run(client, run_id) == before
    assert audit_entries(client, action="cancel") == []


def test_cancelling_an_unknown_run_is_404(app, client):
    for run_id in (12345, HUGE_ID):
        assert_json_error(cancel(client, run_id), 404)
    assert count_rows(app, RunCancel) == 0


def test_a_running_run_is_asked_to_stop_through_its_owner(app, client):
    task = make_task(client, max_retries=3)
    run_id = add_running_run(app, task["id"])
    asked_at = now()
    response = cancel(client, run_id)
    assert response.status_code == 202, describe(response)
    body = response.get_json()
    assert body["id"] == run_id
    assert body["status"] == "running"  # the engine that runs it stops it and records the outcome

    [row] = cancel_rows(app)
    assert row["run_id"] == run_id and row["owner"] == OWNER
    assert row["message"].startswith("cancelled") and "token:tests" in row["message"]
    requested = row["requested_at"]
    requested = requested if requested.tzinfo else requested.replace(tzinfo=asked_at.tzinfo)
    assert abs((requested - asked_at).total_seconds()) < 60

    # Asking again is not an error and keeps the first request.
    again = cancel(client, run_id)
    assert again.status_code == 202, describe(again)
    assert cancel_rows(app) == [row]
    assert active_runs(app, task["id"]) == 1  # still running until its engine stops it


def test_cancelling_a_queued_schedule_slot_leaves_the_active_count_alone(app, client):
    task = make_task(client)
    running = add_running_run(app, task["id"])  # the active run the slot waits for
    queued = add_run(app, task["id"], "pending", trigger="schedule")
    assert active_runs(app, task["id"]) == 1
    response = cancel(client, queued)
    assert response.status_code == 202, describe(response)
    body = response.get_json()
    assert body["status"] == "failed" and body["message"].startswith("cancelled")
    assert body["finished_at"] is not None
    assert active_runs(app, task["id"]) == 1  # a queued slot was never counted as active
    assert get_run(client, running)["status"] == "running"
    assert cancel_rows(app) == []


def test_a_queued_slot_of_an_idle_task_is_cancelled_without_touching_the_count(app, client):
    task = make_task(client)
    queued = add_run(app, task["id"], "pending", trigger="schedule")
    assert cancel(client, queued).status_code == 202
    assert active_runs(app, task["id"]) == 0
    assert run_now(client, task["id"])["status"] == "pending"


def test_run_counts_move_from_pending_to_failed(app, client):
    task = make_task(client, concurrency_policy="allow")
    manual = run_now(client, task["id"])
    queued = add_run(app, task["id"], "pending", trigger="schedule")
    counts = run_counts(client, task["id"])
    assert (counts["pending"], counts["failed"]) == (2, 0), counts

    assert cancel(client, manual["id"]).status_code == 202
    counts = run_counts(client, task["id"])
    assert (counts["pending"], counts["failed"]) == (1, 1), counts

    assert cancel(client, queued).status_code == 202
    counts = run_counts(client, task["id"])
    assert (counts["pending"], counts["failed"]) == (0, 2), counts
    assert client.get("/api/stats/").get_json()["runs"]["by_status"]["failed"] == 2


def test_a_cancel_is_audited_with_the_run(app, client):
    task = make_task(client)
    run = run_now(client, task["id"])
    runner = client_with_scope(app, "run")
    assert cancel(runner, run["id"]).status_code == 202
    [entry] = audit_entries(client, action="cancel")
    assert entry["task_id"] == task["id"] and entry["actor"] == "token:run-token"
    assert run["id"] in entry["changes"]["run_id"]
    assert get_run(client, run["id"])["message"].startswith("cancelled")
    assert "token:run-token" in get_run(client, run["id"])["message"]


# --- pause and resume ----------------------------------------------------------------


def test_pause_with_a_note_and_until_disables_the_task_and_says_who(app, client):
    task = make_task(client, cron_expression="*/5 * * * *")
    assert task["next_run_at"] is not None
    assert (task["pause_note"], task["paused_until"], task["paused_by"]) == (None, None, None)
    runner = client_with_scope(app, "run")
    until = (now() + timedelta(days=1)).replace(microsecond=0)
    response = runner.post(f"/api/tasks/{task['id']}/pause/", json={"note": "db migration", "until": iso(until)})
    assert response.status_code == 200, describe(response)
    body = response.get_json()
    assert set(body) == TASK_FIELDS
    assert body["enabled"] is False
    assert body["pause_note"] == "db migration"
    assert parse_time(body["paused_until"]) == until
    assert body["paused_by"] == "token:run-token"
    assert body["next_run_at"] is None
    assert get_task(client, task["id"]) == body


def test_until_is_read_with_its_offset_and_returned_in_utc(client):
    task = make_task(client)
    until = (now() + timedelta(hours=5)).replace(microsecond=0)
    local = until.astimezone(datetime.fromisoformat("2026-01-01T00:00:00+05:30").tzinfo)
    response = client.post(f"/api/tasks/{task['id']}/pause/", json={"until": local.isoformat()})
    assert response.status_code == 200, describe(response)
    assert parse_time(response.get_json()["paused_until"]) == until
    # a time without an offset is UTC
    response = client.post(f"/api/tasks/{task['id']}/pause/", json={"until": "2030-01-01T00:00:00"})
    assert response.status_code == 200, describe(response)
    assert response.get_json()["paused_until"] == "2030-01-01T00:00:00+00:00"


@pytest.mark.parametrize("until", [
    "past", "now", "tomorrow", "2026-13-01T00:00:00+00:00", 5, True, ["2030-01-01T00:00:00+00:00"], {},
])
def test_a_bad_or_past_until_is_422_naming_until_and_changes_nothing(app, client, until):
    task = make_task(client)
    value = {"past": iso(now() - timedelta(minutes=1)), "now": iso(now())}.get(until, until) \
        if isinstance(until, str) else until
    errors = field_errors(client.post(f"/api/tasks/{task['id']}/pause/", json={"note": "x", "until": value}))
    assert "until" in errors, errors
    assert get_task(client, task["id"]) == task
    assert audit_entries(client, action="pause") == []


@pytest.mark.parametrize("body, field", [
    ({"note": 5}, "note"),
    ({"note": "x" * 2001}, "note"),
    ({"reason": "x"}, "reason"),
])
def test_bad_pause_bodies_are_422_naming_the_field(client, body, field):
    task = make_task(client)
    errors = field_errors(client.post(f"/api/tasks/{task['id']}/pause/", json=body))
    assert field in errors, errors
    assert get_task(client, task["id"])["enabled"] is True


def test_pause_with_an_empty_body_works_and_pausing_again_changes_the_note(client):
    task = make_task(client)
    response = client.post(f"/api/tasks/{task['id']}/pause/", json={})
    assert response.status_code == 200, describe(response)
    body = response.get_json()
    assert (body["enabled"], body["pause_note"], body["paused_until"], body["paused_by"], body["next_run_at"]) == (
        False, None, None, "token:tests", None)

    again = client.post(f"/api/tasks/{task['id']}/pause/", json={"note": "still broken"})
    assert again.status_code == 200, describe(again)
    assert (again.get_json()["enabled"], again.get_json()["pause_note"]) == (False, "still broken")

    third = client.post(f"/api/tasks/{task['id']}/pause/", json={"note": None})
    assert third.status_code == 200, describe(third)
    assert third.get_json()["pause_note"] is None


def test_pause_without_any_body_pauses_without_a_note(client):
    task = make_task(client)
    response = client.post(f"/api/tasks/{task['id']}/pause/")
    assert response.status_code == 200, describe(response)
    assert (response.get_json()["enabled"], response.get_json()["pause_note"]) == (False, None)
    # A body that needs fields, sent as nothing at all, is told which (not a 400 about JSON).
    assert "name" in field_errors(client.post("/api/tasks/"))


def test_resume_enables_the_task_clears_the_pause_and_schedules_from_now(client):
    task = make_task(client, cron_expression="*/5 * * * *")
    until = now() + timedelta(days=2)
    assert client.post(f"/api/tasks/{task['id']}/pause/", json={"note": "n", "until": iso(until)}).status_code == 200
    before = now()
    response = client.post(f"/api/tasks/{task['id']}/resume/")
    assert response.status_code == 200, describe(response)
    body = response.get_json()
    assert body["enabled"] is True
    assert {field: body[field] for field in PAUSE_FIELDS} == dict.fromkeys(PAUSE_FIELDS)
    assert body["next_run_at"] is not None
    next_run = parse_time(body["next_run_at"])
    assert before < next_run <= before + timedelta(minutes=5, seconds=1)
    assert get_task(client, task["id"]) == body


def test_toggle_on_a_paused_task_clears_the_pause(client):
    task = make_task(client)
    client.post(f"/api/tasks/{task['id']}/pause/", json={"note": "n", "until": iso(now() + timedelta(days=1))})
    response = client.post(f"/api/tasks/{task['id']}/toggle/")
    assert response.status_code == 200, describe(response)
    body = response.get_json()
    assert body["enabled"] is True and body["next_run_at"] is not None
    assert {field: body[field] for field in PAUSE_FIELDS} == dict.fromkeys(PAUSE_FIELDS)


def test_patch_enabled_true_on_a_paused_task_clears_the_pause(client):
    task = make_task(client)
    client.post(f"/api/tasks/{task['id']}/pause/", json={"note": "n", "until": iso(now() + timedelta(days=1))})
    response = client.patch(f"/api/tasks/{task['id']}/", json={"enabled": True})
    assert response.status_code == 200, describe(response)
    body = response.get_json()
    assert body["enabled"] is True
    assert {field: body[field] for field in PAUSE_FIELDS} == dict.fromkeys(PAUSE_FIELDS)


def test_disabling_by_patch_or_toggle_sets_no_note(client):
    patched = make_task(client)
    response = client.patch(f"/api/tasks/{patched['id']}/", json={"enabled": False})
    assert response.status_code == 200, describe(response)
    body = response.get_json()
    assert body["enabled"] is False
    assert {field: body[field] for field in PAUSE_FIELDS} == dict.fromkeys(PAUSE_FIELDS)

    toggled = make_task(client)
    body = client.post(f"/api/tasks/{toggled['id']}/toggle/").get_json()
    assert body["enabled"] is False
    assert {field: body[field] for field in PAUSE_FIELDS} == dict.fromkeys(PAUSE_FIELDS)


def test_pause_and_resume_are_audited_with_their_changes(app, client):
    task = make_task(client)
    runner = client_with_scope(app, "run")
    until = (now() + timedelta(days=1)).replace(microsecond=0)
    assert runner.post(f"/api/tasks/{task['id']}/pause/", json={"note": "n", "until": iso(until)}).status_code == 200
    assert runner.post(f"/api/tasks/{task['id']}/resume/").status_code == 200

    trail = audit_entries(client, task_id=task["id"])
    assert [entry["action"] for entry in trail] == ["resume", "pause", "create"]
    resume, pause, _ = trail
    assert pause["actor"] == resume["actor"] == "token:run-token"
    assert pause["task_id"] == resume["task_id"] == task["id"]
    changes = pause["changes"]
    assert changes["enabled"] == [True, False]
    assert changes["pause_note"] == [None, "n"]
    assert changes["paused_by"] == [None, "token:run-token"]
    assert changes["paused_until"][0] is None
    assert parse_time(changes["paused_until"][1].replace("Z", "+00:00")) == until
    changes = resume["changes"]
    assert changes["enabled"] == [False, True]
    assert changes["pause_note"] == ["n", None]
    assert changes["paused_by"] == ["token:run-token", None]
    assert changes["paused_until"][1] is None


def test_pause_skips_the_queued_slots_but_not_a_manual_run(app, client):
    task = make_task(client)
    manual = run_now(client, task["id"])
    queued = add_run(app, task["id"], "pending", trigger="schedule")
    assert client.post(f"/api/tasks/{task['id']}/pause/", json={}).status_code == 200
    assert get_run(client, queued)["status"] == "skipped"
    assert get_run(client, manual["id"])["status"] == "pending"
    counts = run_counts(client, task["id"])
    assert (counts["pending"], counts["skipped"]) == (1, 1), counts


def test_changing_other_fields_of_a_paused_task_keeps_the_pause(client):
    task = make_task(client)
    paused = client.post(f"/api/tasks/{task['id']}/pause/",
                         json={"note": "n", "until": iso(now() + timedelta(days=1))}).get_json()
    for change in ({"description": "x"}, {"max_retries": 1}, {"enabled": False}):
        response = client.patch(f"/api/tasks/{task['id']}/", json=change)
        assert response.status_code == 200, describe(response)
        body = response.get_json()
        assert body["enabled"] is False and body["next_run_at"] is None, change
        assert {field: body[field] for field in PAUSE_FIELDS} == {field: paused[field] for field in PAUSE_FIELDS}


def test_resume_resets_the_consecutive_failures_and_works_on_a_plain_disabled_task(app, client):
    task = make_task(client, pause_after_failures=2)
    assert client.post(f"/api/tasks/{task['id']}/pause/", json={"note": "x"}).status_code == 200
    set_task(app, task["id"], consecutive_failures=2)
    assert get_task(client, task["id"])["consecutive_failures"] == 2
    body = client.post(f"/api/tasks/{task['id']}/resume/").get_json()
    assert (body["enabled"], body["consecutive_failures"], body["pause_after_failures"]) == (True, 0, 2)

    disabled = make_task(client, enabled=False)
    response = client.post(f"/api/tasks/{disabled['id']}/resume/")
    assert response.status_code == 200, describe(response)
    assert response.get_json()["enabled"] is True and response.get_json()["next_run_at"] is not None


def test_pause_and_resume_of_an_unknown_task_are_404(client):
    for action in ("pause", "resume"):
        assert_json_error(client.post(f"/api/tasks/12345/{action}/", json={}), 404)


# --- scopes --------------------------------------------------------------------------


def test_a_read_token_may_not_pause_resume_or_cancel(app, client):
    task = make_task(client)
    run = run_now(client, task["id"])
    reader = client_with_scope(app, "read")
    assert_forbidden(reader.post(f"/api/tasks/{task['id']}/pause/", json={"note": "x"}), "run")
    assert_forbidden(reader.post(f"/api/tasks/{task['id']}/resume/"), "run")
    assert_forbidden(cancel(reader, run["id"]), "run")
    assert get_task(client, task["id"])["enabled"] is True
    assert get_run(client, run["id"])["status"] == "pending"
    assert [entry["action"] for entry in audit_entries(client)] == ["run", "create"]


def test_a_run_token_may_pause_resume_and_cancel(app, client):
    task = make_task(client)
    run = run_now(client, task["id"])
    runner = client_with_scope(app, "run")
    assert runner.post(f"/api/tasks/{task['id']}/pause/", json={"note": "x"}).status_code == 200
    assert runner.post(f"/api/tasks/{task['id']}/resume/").status_code == 200
    assert cancel(runner, run["id"]).status_code == 202
    assert get_run(client, run["id"])["status"] == "failed"


# --- pools ---------------------------------------------------------------------------


def test_pool_create_list_get_put_delete(app, client):
    created = client.post("/api/pools/", json={"name": "db", "slots": 2, "description": "the database"})
    assert created.status_code == 201, describe(created)
    body = created.get_json()
    assert set(body) == POOL_FIELDS
    assert {key: body[key] for key in ("name", "slots", "description", "running", "waiting")} == {
        "name": "db", "slots": 2, "description": "the database", "running": 0, "waiting": 0,
    }
    for stamp in ("created_at", "updated_at"):
        parse_time(body[stamp])
    make_pool(client, "api", slots=1)
    assert client.post("/api/pools/", json={"name": "cpu", "slots": 3}).get_json()["description"] == ""

    listed = client.get("/api/pools/").get_json()
    assert [item["name"] for item in listed["items"]] == ["api", "cpu", "db"]
    assert listed["next_cursor"] is None
    assert get_pool(client, "db") == body

    for update in ({"slots": 5, "description": "bigger"}, {"name": "db", "slots": 5, "description": "bigger"}):
        response = client.put("/api/pools/db/", json=update)
        assert response.status_code == 200, describe(response)
        changed = response.get_json()
        assert (changed["name"], changed["slots"], changed["description"], changed["running"]) == (
            "db", 5, "bigger", 0)
    assert get_pool(client, "db")["slots"] == 5

    assert client.delete("/api/pools/db/").status_code == 204
    assert_json_error(client.get("/api/pools/db/"), 404)
    assert count_rows(app, Pool) == 2


def test_pools_are_listed_a_page_at_a_time_in_name_order(client):
    for name in ("c", "a", "e", "b"):
        make_pool(client, name)
    first = client.get("/api/pools/", query_string={"limit": 2}).get_json()
    assert [item["name"] for item in first["items"]] == ["a", "b"] and first["next_cursor"]
    make_pool(client, "d")  # added between the pages, after the cursor: on the next page
    second = client.get("/api/pools/", query_string={"limit": 2, "cursor": first["next_cursor"]}).get_json()
    assert [item["name"] for item in second["items"]] == ["c", "d"] and second["next_cursor"]
    last = client.get("/api/pools/", query_string={"limit": 2, "cursor": second["next_cursor"]}).get_json()
    assert [item["name"] for item in last["items"]] == ["e"] and last["next_cursor"] is None
    for query in ({"limit": 0}, {"limit": 501}, {"limit": "x"}):
        assert "limit" in field_errors(client.get("/api/pools/", query_string=query), "query")
    assert "cursor" in field_errors(client.get("/api/pools/", query_string={"cursor": "bm90LWEtbmFtZQ"}), "query")


def test_paging_returns_every_pool_once_whatever_the_names(client):
    names = ["b", "B", "a-c", "ab", "A_b", "_x", "9", "a"]
    for name in names:
        make_pool(client, name)
    unpaged = [item["name"] for item in client.get("/api/pools/").get_json()["items"]]
    assert sorted(unpaged) == sorted(names)
    paged, cursor = [], None
    while True:
        page = client.get("/api/pools/", query_string={"limit": 3, **({"cursor": cursor} if cursor else {})}).get_json()
        paged += [item["name"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert paged == unpaged


def test_a_pool_name_with_a_trailing_newline_is_refused(app, client):
    response = client.post("/api/pools/", json={"name": "db\n", "slots": 1})
    assert "name" in field_errors(response)
    assert count_rows(app, Pool) == 0


def test_the_openapi_document_has_the_run_control_routes(anonymous):
    paths = anonymous.get("/api/openapi.json").get_json()["paths"]
    for path, methods in {
        "/api/logs/{run_id}/cancel/": {"post"},
        "/api/tasks/{task_id}/pause/": {"post"},
        "/api/tasks/{task_id}/resume/": {"post"},
        "/api/pools/": {"get", "post"},
        "/api/pools/{name}/": {"get", "put", "delete"},
    }.items():
        assert path in paths, sorted(paths)
        assert methods <= set(paths[path]), (path, sorted(paths[path]))


def test_a_pool_put_with_another_name_is_422_and_changes_nothing(app, client):
    original = make_pool(client, "db", slots=2)
    errors = field_errors(client.put("/api/pools/db/", json={"name": "other", "slots": 9}))
    assert "name" in errors, errors
    assert get_pool(client, "db") == original
    assert_json_error(client.get("/api/pools/other/"), 404)
    assert count_rows(app, Pool) == 1


def test_a_duplicate_pool_name_is_409(app, client):
    make_pool(client, "dup", slots=1, description="first")
    assert_json_error(client.post("/api/pools/", json={"name": "dup", "slots": 7}), 409)
    assert count_rows(app, Pool) == 1
    assert (get_pool(client, "dup")["slots"], get_pool(client, "dup")["description"]) == (1, "first")


def test_unknown_pools_are_404(client):
    assert_json_error(client.get("/api/pools/nope/"), 404)
    assert_json_error(client.put("/api/pools/nope/", json={"slots": 1}), 404)
    assert_json_error(client.delete("/api/pools/nope/"), 404)


def test_a_pool_in_use_cannot_be_deleted(app, client):
    make_pool(client, "busy")
    task = make_task(client, pool="busy")
    assert_json_error(client.delete("/api/pools/busy/"), 409)
    assert get_pool(client, "busy")["name"] == "busy"
    client.patch(f"/api/tasks/{task['id']}/", json={"enabled": False})  # a disabled task's use counts too
    assert_json_error(client.delete("/api/pools/busy/"), 409)
    assert client.patch(f"/api/tasks/{task['id']}/", json={"pool": None}).status_code == 200
    assert client.delete("/api/pools/busy/").status_code == 204
    assert count_rows(app, Pool) == 0


@pytest.mark.parametrize("body, field", [
    ({"name": "p", "slots": 0}, "slots"),
    ({"name": "p", "slots": -1}, "slots"),
    ({"name": "p", "slots": "x"}, "slots"),
    ({"name": "p", "slots": "2"}, "slots"),
    ({"name": "p", "slots": 1.5}, "slots"),
    ({"name": "p", "slots": None}, "slots"),
    ({"name": "p", "slots": 2**31}, "slots"),
    ({"name": "p"}, "slots"),
    ({"slots": 1}, "name"),
    ({"name": "", "slots": 1}, "name"),
    ({"name": "a b", "slots": 1}, "name"),
    ({"name": "a/b", "slots": 1}, "name"),
    ({"name": "x" * 101, "slots": 1}, "name"),
    ({"name": 5, "slots": 1}, "name"),
    ({"name": "p", "slots": 1, "description": 5}, "description"),
    ({"name": "p", "slots": 1, "colour": "red"}, "colour"),
])
def test_bad_pools_are_422_naming_the_field(app, client, body, field):
    errors = field_errors(client.post("/api/pools/", json=body))
    assert field in errors, errors
    assert count_rows(app, Pool) == 0
    assert count_rows(app, AuditEntry) == 0


@pytest.mark.parametrize("body, field", [
    ({"slots": 0}, "slots"),
    ({"slots": "x"}, "slots"),
    ({"slots": 2, "colour": "red"}, "colour"),
])
def test_bad_pool_puts_are_422_and_change_nothing(client, body, field):
    original = make_pool(client, "p", slots=3)
    errors = field_errors(client.put("/api/pools/p/", json=body))
    assert field in errors, errors
    assert get_pool(client, "p") == original


def test_a_pool_body_that_is_not_an_object_is_refused(app, client):
    for body in ([], "db", 3):
        response = client.post("/api/pools/", json=body)
        assert response.status_code == 422, describe(response)
    response = client.post("/api/pools/", data="{not json", content_type="application/json")
    assert response.status_code == 400, describe(response)
    assert count_rows(app, Pool) == 0


def test_read_only_pool_fields_sent_are_ignored(client):
    body = make_pool(client, "p", slots=1)
    response = client.post("/api/pools/", json={"name": "q", "slots": 1, "running": 5, "waiting": 3})
    assert response.status_code == 201, describe(response)
    assert (response.get_json()["running"], response.get_json()["waiting"]) == (0, 0)
    response = client.put("/api/pools/p/", json={"slots": 1, "running": 9})
    assert response.status_code == 200, describe(response)
    assert response.get_json()["running"] == body["running"] == 0


def test_pool_scopes(app, client):
    make_pool(client, "shared")
    reader, runner, writer = (client_with_scope(app, scope) for scope in ("read", "run", "write"))
    assert reader.get("/api/pools/").status_code == 200
    assert reader.get("/api/pools/shared/").status_code == 200
    assert_forbidden(reader.post("/api/pools/", json={"name": "r", "slots": 1}), "write")
    assert_forbidden(reader.put("/api/pools/shared/", json={"slots": 4}), "write")
    assert_forbidden(reader.delete("/api/pools/shared/"), "write")
    assert_forbidden(runner.post("/api/pools/", json={"name": "r", "slots": 1}), "write")
    assert_forbidden(runner.put("/api/pools/shared/", json={"slots": 4}), "write")
    assert_forbidden(runner.delete("/api/pools/shared/"), "write")
    assert count_rows(app, Pool) == 1 and get_pool(client, "shared")["slots"] == 2

    assert writer.post("/api/pools/", json={"name": "w", "slots": 1}).status_code == 201
    assert writer.put("/api/pools/w/", json={"slots": 3}).status_code == 200
    assert writer.delete("/api/pools/w/").status_code == 204


def test_pool_writes_are_audited_without_a_task(app, client):
    writer = client_with_scope(app, "write")
    writer.post("/api/pools/", json={"name": "audited", "slots": 2})
    writer.put("/api/pools/audited/", json={"slots": 4, "description": "more"})
    writer.put("/api/pools/audited/", json={"slots": 4, "description": "more"})  # no change: no entry
    writer.delete("/api/pools/audited/")
    trail = audit_entries(client, actor="token:write-token")
    assert [entry["action"] for entry in trail] == ["delete", "update", "create"]
    assert {entry["task_id"] for entry in trail} == {None}
    delete, update, create = trail
    assert create["changes"]["slots"] == [None, 2]
    assert update["changes"]["slots"] == [2, 4]
    assert update["changes"]["description"] == ["", "more"]
    assert delete["changes"]["slots"] == [4, None]
    for entry in trail:
        assert "audited" in str(entry["changes"]), entry


def test_refused_pool_writes_are_not_audited(app, client):
    make_pool(client, "used")
    make_task(client, pool="used")
    entries = count_rows(app, AuditEntry)
    client.post("/api/pools/", json={"name": "used", "slots": 1})
    client.put("/api/pools/used/", json={"name": "renamed", "slots": 1})
    client.put("/api/pools/used/", json={"slots": 0})
    client.delete("/api/pools/used/")
    assert count_rows(app, AuditEntry) == entries


# --- task fields: pool, concurrency_policy, pause_after_failures ---------------------


def test_a_task_with_an_unknown_pool_is_422_and_nothing_is_written(app, client):
    errors = field_errors(client.post("/api/tasks/", json=task_payload(pool="nope")))
    assert "pool" in errors, errors
    assert count_rows(app, Task) == 0 and count_rows(app, AuditEntry) == 0

    task = make_task(client)
    entries = count_rows(app, AuditEntry)
    assert "pool" in field_errors(client.patch(f"/api/tasks/{task['id']}/", json={"pool": "nope"}))
    assert "pool" in field_errors(client.put(f"/api/tasks/{task['id']}/",
                                             json=task_payload(name=task["name"], pool="nope")))
    assert get_task(client, task["id"]) == task
    assert count_rows(app, AuditEntry) == entries


@pytest.mark.parametrize("pool", ["", 5, "x" * 101])
def test_a_malformed_pool_on_a_task_is_422(app, client, pool):
    errors = field_errors(client.post("/api/tasks/", json=task_payload(pool=pool)))
    assert "pool" in errors, errors
    assert count_rows(app, Task) == 0


def test_a_task_with_a_pool(app, client):
    make_pool(client, "db")
    task = make_task(client, pool="db")
    assert task["pool"] == "db"
    assert get_task(client, task["id"])["pool"] == "db"
    other = make_task(client)
    assert other["pool"] is None
    changed = client.patch(f"/api/tasks/{other['id']}/", json={"pool": "db"})
    assert changed.status_code == 200, describe(changed)
    assert changed.get_json()["pool"] == "db"
    update = audit_entries(client, task_id=other["id"], action="update")[0]
    assert update["changes"]["pool"] == [None, "db"]
    assert get_pool(client, "db")["running"] == 0


def test_new_task_fields_default(client):
    task = make_task(client)
    assert {field: task[field] for field in ("pool", "pause_after_failures", "pause_note", "paused_until",
                                             "paused_by", "consecutive_failures", "concurrency_policy")} == {
        "pool": None, "pause_after_failures": 0, "pause_note": None, "paused_until": None, "paused_by": None,
        "consecutive_failures": 0, "concurrency_policy": "forbid",
    }


@pytest.mark.parametrize("policy", POLICIES)
def test_every_concurrency_policy_is_accepted(client, policy):
    task = make_task(client, concurrency_policy=policy)
    assert task["concurrency_policy"] == policy
    other = make_task(client)
    response = client.patch(f"/api/tasks/{other['id']}/", json={"concurrency_policy": policy})
    assert response.status_code == 200, describe(response)
    assert response.get_json()["concurrency_policy"] == policy


@pytest.mark.parametrize("policy", ["skip", "", "FORBID", "buffer", None, 1])
def test_other_concurrency_policies_are_422(app, client, policy):
    errors = field_errors(client.post("/api/tasks/", json=task_payload(concurrency_policy=policy)))
    assert "concurrency_policy" in errors, errors
    assert count_rows(app, Task) == 0


@pytest.mark.parametrize("value", [0, 1, 5, 2**31 - 1])
def test_pause_after_failures_accepts_zero_and_up(client, value):
    task = make_task(client, pause_after_failures=value)
    assert task["pause_after_failures"] == value
    response = client.patch(f"/api/tasks/{task['id']}/", json={"pause_after_failures": 3})
    assert response.status_code == 200, describe(response)
    assert response.get_json()["pause_after_failures"] == 3


@pytest.mark.parametrize("value", [-1, "x", "3", 1.5, None, 2**31])
def test_pause_after_failures_refuses_the_rest(app, client, value):
    errors = field_errors(client.post("/api/tasks/", json=task_payload(pause_after_failures=value)))
    assert "pause_after_failures" in errors, errors
    assert count_rows(app, Task) == 0


def test_read_only_run_control_fields_sent_are_ignored(client):
    task = make_task(client, consecutive_failures=7, paused_by="someone", pause_note="n")
    assert (task["consecutive_failures"], task["paused_by"], task["pause_note"]) == (0, None, None)


# --- manual runs under each overlap policy -------------------------------------------


@pytest.mark.parametrize("policy, second_status", [
    ("forbid", 409), ("buffer_one", 409), ("buffer_all", 409), ("allow", 202), ("replace", 202),
])
def test_a_manual_run_while_another_is_active(app, client, policy, second_status):
    task = make_task(client, concurrency_policy=policy)
    first = run_now(client, task["id"])
    response = client.post(f"/api/tasks/{task['id']}/run/")
    assert response.status_code == second_status, describe(response)
    expected = 1 if second_status == 409 else 2
    assert count_rows(app, Run, task_id=task["id"]) == expected
    assert active_runs(app, task["id"]) == expected
    assert get_run(client, first["id"])["status"] == "pending"

    # A running run (not a pending one) is active too.
    other = make_task(client, concurrency_policy=policy)
    add_running_run(app, other["id"])
    response = client.post(f"/api/tasks/{other['id']}/run/")
    assert response.status_code == second_status, describe(response)


@pytest.mark.parametrize("policy", ["forbid", "buffer_one", "buffer_all"])
def test_a_manual_run_is_accepted_again_once_the_active_one_is_cancelled(client, policy):
    task = make_task(client, concurrency_policy=policy)
    first = run_now(client, task["id"])
    assert_json_error(client.post(f"/api/tasks/{task['id']}/run/"), 409)
    assert cancel(client, first["id"]).status_code == 202
    assert run_now(client, task["id"])["status"] == "pending"


# --- waiting ---------------------------------------------------------------------------


def test_pending_runs_of_a_pools_tasks_show_as_waiting(app, client):
    make_pool(client, "db", slots=1)
    make_pool(client, "idle", slots=1)
    first = make_task(client, pool="db", concurrency_policy="allow")
    second = make_task(client, pool="db")
    outside = make_task(client)

    run_now(client, first["id"])
    run_now(client, first["id"])
    queued = add_run(app, second["id"], "pending", trigger="schedule")
    add_run(app, second["id"], "success")
    add_running_run(app, second["id"])  # running, not waiting
    run_now(client, outside["id"])  # not a pool task

    assert get_pool(client, "db")["waiting"] == 3
    assert get_pool(client, "idle")["waiting"] == 0
    listed = {item["name"]: item["waiting"] for item in client.get("/api/pools/").get_json()["items"]}
    assert listed == {"db": 3, "idle": 0}

    assert cancel(client, queued).status_code == 202
    assert get_pool(client, "db")["waiting"] == 2
    put = client.put("/api/pools/db/", json={"slots": 2})
    assert put.status_code == 200 and put.get_json()["waiting"] == 2
