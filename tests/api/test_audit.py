"""The audit trail: every change through the API, the admin and the CLI, with its actor and each
changed field before and after; GET /api/audit/ filters and pages it, newest first."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tests.api.api_helpers import count_rows, make_task, task_payload
from scheduler_service.auth import issue_token
from scheduler_service.models import AuditEntry

SECRET_ACTION = {"type": "shell", "command": "deploy", "env": {"API_KEY": "s3cret-value"}}


def entries(client, **filters) -> list[dict]:
    response = client.get("/api/audit/", query_string=filters)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["items"]


def test_each_change_is_recorded_with_its_actor_and_fields(client):
    task = make_task(client, name="nightly", action=SECRET_ACTION)
    task_id = task["id"]
    client.patch(f"/api/tasks/{task_id}/", json={"description": "the nightly deploy", "max_retries": 5})
    client.post(f"/api/tasks/{task_id}/toggle/")
    run = client.post(f"/api/tasks/{task_id}/run/").get_json()
    client.delete(f"/api/tasks/{task_id}/")

    trail = entries(client, task_id=task_id)
    assert [entry["action"] for entry in trail] == ["delete", "run", "toggle", "update", "create"]
    assert {entry["actor"] for entry in trail} == {"token:tests"}
    delete, ran, toggle, update, create = trail
    assert create["changes"]["name"] == [None, "nightly"]
    assert create["changes"]["action"] == [None, {"type": "shell", "command": "deploy",
                                                  "env": {"API_KEY": "***"}, "cwd": None}]
    assert update["changes"] == {"description": ["", "the nightly deploy"], "max_retries": [3, 5]}
    assert toggle["changes"] == {"enabled": [True, False]}
    assert ran["changes"] == {"run_id": [None, run["id"]]}
    assert delete["changes"]["name"] == ["nightly", None]
    assert "s3cret-value" not in client.get("/api/audit/").get_data(as_text=True)


def test_a_write_that_changes_nothing_or_is_refused_records_nothing(app, client):
    task = make_task(client)
    assert client.patch(f"/api/tasks/{task['id']}/", json={"name": task["name"]}).status_code == 200
    assert client.patch(f"/api/tasks/{task['id']}/", json={"max_retries": -1}).status_code == 422
    assert client.post("/api/tasks/", json=task_payload(name=task["name"])).status_code == 409
    assert count_rows(app, AuditEntry) == 1  # the create alone


def test_a_secret_changed_is_recorded_as_changed_without_either_value(client):
    task = make_task(client, action=SECRET_ACTION)
    changed = {**SECRET_ACTION, "env": {"API_KEY": "new-secret"}}
    assert client.put(f"/api/tasks/{task['id']}/", json=task_payload(name=task["name"], action=changed)).status_code == 200
    text = client.get("/api/audit/").get_data(as_text=True)
    assert "s3cret-value" not in text and "new-secret" not in text
    update = entries(client, action="update")[0]
    assert update["changes"] == {"action": [
        {"type": "shell", "command": "deploy", "env": {"API_KEY": "***"}, "cwd": None},
        {"type": "shell", "command": "deploy", "env": {"API_KEY": "***"}, "cwd": None},
    ]}


def test_filters_and_paging(app, client):
    with app.app_context():
        other = issue_token("deployer")
    deployer = app.test_client()
    deployer.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {other}"
    first = make_task(client)
    second = make_task(deployer)
    for _ in range(3):
        deployer.post(f"/api/tasks/{second['id']}/toggle/")

    assert [e["task_id"] for e in entries(client, actor="token:deployer")] == [second["id"]] * 4
    assert [e["action"] for e in entries(client, action="create")] == ["create", "create"]
    assert [e["task_id"] for e in entries(client, task_id=first["id"])] == [first["id"]]

    everything = entries(client, limit=500)
    assert len(everything) == 5
    paged, cursor = [], None
    while True:
        body = client.get("/api/audit/", query_string={"limit": 2, **({"cursor": cursor} if cursor else {})}).get_json()
        paged += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [e["id"] for e in paged] == [e["id"] for e in everything]
    assert [e["id"] for e in everything] == sorted((e["id"] for e in everything), reverse=True)

    newest = datetime.fromisoformat(everything[0]["at"])
    assert entries(client, since=(newest + timedelta(seconds=1)).isoformat()) == []
    assert len(entries(client, until=(newest + timedelta(seconds=1)).isoformat())) == 5
    assert entries(client, until=datetime(2000, 1, 1, tzinfo=timezone.utc).isoformat()) == []


def test_bad_filters_get_422_naming_the_field(client):
    for args, field in (({"action": "explode"}, "action"), ({"task_id": "x"}, "task_id"),
                        ({"since": "yesterday"}, "since"), ({"cursor": "!!"}, "cursor")):
        response = client.get("/api/audit/", query_string=args)
        assert response.status_code == 422, args
        assert field in response.get_json()["errors"]["query"], response.get_json()


def test_a_change_made_outside_a_request_is_by_cli(app, client):
    """What CLI commands (tasks apply) do: no request, so no token or admin to name."""
    task = make_task(client)
    with app.app_context():
        from scheduler_service import services
        from scheduler_service.extensions import db
        from scheduler_service.models import Task

        services.toggle_task(db.session.get(Task, task["id"]))
    assert entries(client, action="toggle")[0]["actor"] == "cli"
