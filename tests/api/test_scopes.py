"""Token scopes: read < run < write < admin. A token without the scope a request needs gets 403
naming the scope, and nothing is written."""
from __future__ import annotations

import re

import pytest

from tests.api.api_helpers import assert_json_error, count_rows, make_task, task_payload
from scheduler_service.auth import issue_token
from scheduler_service.extensions import db
from scheduler_service.models import ApiToken, AuditEntry, Run, Task

SHELL = {"type": "shell", "command": "echo hi"}
PYTHON = {"type": "python", "callable": "json:dumps", "args": [1]}
HTTP = {"type": "http", "url": "http://example.com/hook"}


def client_with_scope(app, scope: str):
    with app.app_context():
        token = issue_token(f"{scope}-token", scope=scope)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


@pytest.fixture
def scoped(app):
    return {scope: client_with_scope(app, scope) for scope in ("read", "run", "write")}


def assert_forbidden(response, needed: str) -> None:
    body = assert_json_error(response, 403)
    assert f"'{needed}' scope" in body["message"], body


def test_a_read_token_reads_everything_and_changes_nothing(app, client, scoped):
    reader = scoped["read"]
    task = make_task(client, action=SHELL)
    for path in ("/api/tasks/", f"/api/tasks/{task['id']}/", "/api/logs/", "/api/stats/", "/api/audit/",
                 "/api/alerts/", "/api/schedule/preview/?cron_expression=*/5+*+*+*+*", "/metrics"):
        assert reader.get(path).status_code == 200, path

    assert_forbidden(reader.post("/api/tasks/", json=task_payload(action=SHELL)), "write")
    assert_forbidden(reader.post("/api/tasks/", json=task_payload(action=HTTP)), "write")
    assert_forbidden(reader.patch(f"/api/tasks/{task['id']}/", json={"description": "x"}), "write")
    assert_forbidden(reader.delete(f"/api/tasks/{task['id']}/"), "write")
    assert_forbidden(reader.post(f"/api/tasks/{task['id']}/run/"), "run")
    assert_forbidden(reader.post(f"/api/tasks/{task['id']}/toggle/"), "run")
    assert_forbidden(reader.get("/api/tokens/"), "admin")

    assert count_rows(app, Task) == 1 and count_rows(app, Run) == 0
    assert count_rows(app, AuditEntry) == 1  # the admin's create, nothing of the read token's
    assert client.get(f"/api/tasks/{task['id']}/").get_json()["description"] == ""


def test_no_write_route_of_the_api_is_open_to_a_read_token(app, scoped):
    """Every route under /api/ that takes anything but GET refuses a read token, including
    routes added later that forget to declare a scope (the default for writes is admin)."""
    reader = scoped["read"]
    checked = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        for method in sorted(rule.methods - {"GET", "HEAD", "OPTIONS"}):
            path = re.sub(r"<(?:\w+:)?(\w+)>", "1", rule.rule)
            response = reader.open(path, method=method, json={})
            assert response.status_code == 403, (method, path, response.status_code)
            checked.append((method, path))
    assert ("POST", "/api/tasks/") in checked and ("DELETE", "/api/tasks/1/") in checked


def test_a_run_token_runs_and_toggles_but_does_not_write(app, client, scoped):
    runner = scoped["run"]
    task = make_task(client, action=SHELL)
    response = runner.post(f"/api/tasks/{task['id']}/run/")
    assert response.status_code == 202, response.get_json()
    assert runner.post(f"/api/tasks/{task['id']}/toggle/").get_json()["enabled"] is False
    assert_forbidden(runner.post("/api/tasks/", json=task_payload(action=HTTP)), "write")
    assert_forbidden(runner.put(f"/api/tasks/{task['id']}/", json=task_payload(action=HTTP)), "write")


def test_a_write_token_manages_http_tasks_but_not_shell_or_python_ones(app, client, scoped):
    writer = scoped["write"]
    created = writer.post("/api/tasks/", json=task_payload(action=HTTP))
    assert created.status_code == 201
    http_id = created.get_json()["id"]
    assert writer.patch(f"/api/tasks/{http_id}/", json={"description": "changed"}).status_code == 200

    for action in (SHELL, PYTHON):
        assert_forbidden(writer.post("/api/tasks/", json=task_payload(action=action)), "admin")
        # nor turn an http task into one
        assert_forbidden(writer.patch(f"/api/tasks/{http_id}/", json={"action": action}), "admin")
    shell = make_task(client, action=SHELL)
    assert_forbidden(writer.patch(f"/api/tasks/{shell['id']}/", json={"description": "x"}), "admin")
    assert_forbidden(writer.put(f"/api/tasks/{shell['id']}/", json=task_payload(action=HTTP)), "admin")
    assert_forbidden(writer.delete(f"/api/tasks/{shell['id']}/"), "admin")
    # ...but may run it: running is the run scope's, whatever the action
    assert writer.post(f"/api/tasks/{shell['id']}/run/").status_code == 202

    with app.app_context():
        tasks = {task.name: task.action["type"] for task in db.session.scalars(db.select(Task))}
    assert sorted(tasks.values()) == ["http", "shell"], tasks  # nothing half-written
    assert writer.delete(f"/api/tasks/{http_id}/").status_code == 204


def test_the_admin_token_does_everything(client):
    shell = make_task(client, action=SHELL)
    assert client.patch(f"/api/tasks/{shell['id']}/", json={"action": PYTHON}).status_code == 200
    assert client.get("/api/tokens/").status_code == 200
    assert client.delete(f"/api/tasks/{shell['id']}/").status_code == 204


def test_the_token_list_shows_names_scopes_and_use_never_secrets(app, client, scoped):
    scoped["read"].get("/api/tasks/")
    body = client.get("/api/tokens/").get_json()
    listed = {item["name"]: item for item in body["items"]}
    assert set(listed) == {"tests", "read-token", "run-token", "write-token"}
    assert listed["read-token"]["scope"] == "read" and listed["tests"]["scope"] == "admin"
    assert set(listed["tests"]) == {"name", "scope", "created_at", "last_used_at"}
    assert listed["tests"]["last_used_at"] is not None  # this very request used it
    assert listed["run-token"]["last_used_at"] is None
    with app.app_context():
        hashes = [token.token_hash for token in db.session.scalars(db.select(ApiToken))]
    text = client.get("/api/tokens/").get_data(as_text=True)
    assert not any(digest in text for digest in hashes)


def test_the_openapi_document_says_which_scope_each_write_needs(client):
    paths = client.get("/api/openapi.json").get_json()["paths"]
    assert "`write`" in paths["/api/tasks/"]["post"]["summary"] + paths["/api/tasks/"]["post"].get("description", "")
    assert "`run`" in paths["/api/tasks/{task_id}/run/"]["post"]["summary"]


def test_create_token_takes_a_scope_and_defaults_to_admin(app, runner):
    result = runner.invoke(args=["create-token", "prometheus", "--scope", "read"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    assert runner.invoke(args=["create-token", "ops"]).exit_code == 0
    bad = runner.invoke(args=["create-token", "x", "--scope", "root"])
    assert bad.exit_code != 0 and "root" in bad.output
    with app.app_context():
        scopes = dict(db.session.execute(db.select(ApiToken.name, ApiToken.scope)).all())
    assert scopes == {"prometheus": "read", "ops": "admin"}
    prometheus = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert prometheus.get("/metrics", headers=headers).status_code == 200
    assert prometheus.post("/api/tasks/", json=task_payload(action=SHELL), headers=headers).status_code == 403
