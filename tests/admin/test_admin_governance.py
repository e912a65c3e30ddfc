"""Governance in the admin: changes recorded as the logged-in admin's, the task page's history, secrets
masked in the forms, and the http action's follow_redirects kept by an edit."""
from __future__ import annotations

import re

from tests.admin.admin_helpers import ADMIN_NAME, csrf_of, task_form, text_of


def _create(web, name: str, **fields) -> int:
    response = web.post("/admin/tasks/new", data=task_form(name, csrf_of(web), **fields))
    assert response.status_code == 302, text_of(response.get_data(as_text=True))[:2000]
    return int(re.search(r"/admin/tasks/(\d+)/", response.location).group(1))


def test_admin_changes_are_recorded_as_the_admin_and_shown_on_the_task_page(web, client):
    task_id = _create(web, "backup", shell_env="DB_PASSWORD=hunter22")
    edit = task_form("backup", csrf_of(web), shell_env="DB_PASSWORD=***", max_retries="7")
    assert web.post(f"/admin/tasks/{task_id}/edit", data=edit).status_code == 302
    assert web.post(f"/admin/tasks/{task_id}/toggle", data={"csrf_token": csrf_of(web)}).status_code == 302
    client.post(f"/api/tasks/{task_id}/run/")

    trail = client.get("/api/audit/", query_string={"task_id": task_id}).get_json()["items"]
    assert [(entry["action"], entry["actor"]) for entry in trail] == [
        ("run", "token:tests"), ("toggle", f"admin:{ADMIN_NAME}"), ("update", f"admin:{ADMIN_NAME}"),
        ("create", f"admin:{ADMIN_NAME}"),
    ]
    assert trail[2]["changes"] == {"max_retries": [3, 7]}  # the masked env sent back changed nothing

    html = web.get(f"/admin/tasks/{task_id}/").get_data(as_text=True)
    history = text_of(html[html.index('id="history"'):])
    assert f"admin:{ADMIN_NAME}" in history and "token:tests" in history
    assert "max_retries" in history and "toggle" in history
    assert "hunter22" not in html  # neither in the action card nor in the history


def test_the_edit_form_shows_secrets_masked(web):
    task_id = _create(web, "deploy", shell_env="API_KEY=abc123secret")
    html = web.get(f"/admin/tasks/{task_id}/edit").get_data(as_text=True)
    assert "abc123secret" not in html and "API_KEY=***" in html


def test_follow_redirects_survives_the_edit_form(web, client):
    task_id = _create(web, "hook", action_type="http", http_url="http://example.com/x", http_follow_redirects="on")
    assert client.get(f"/api/tasks/{task_id}/").get_json()["action"]["follow_redirects"] is True
    html = web.get(f"/admin/tasks/{task_id}/edit").get_data(as_text=True)
    assert re.search(r'name="http_follow_redirects" checked', html)
    edit = task_form("hook", csrf_of(web), action_type="http", http_url="http://example.com/x")
    assert web.post(f"/admin/tasks/{task_id}/edit", data=edit).status_code == 302
    assert "follow_redirects" not in client.get(f"/api/tasks/{task_id}/").get_json()["action"]
