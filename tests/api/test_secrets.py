"""Write-only secrets: header and env values, and the path and query of webhook URLs, read as
"***" everywhere; a write that sends "***" back keeps the stored value."""
from __future__ import annotations

from tests.api.api_helpers import error_at, field_errors, make_task, task_payload
from scheduler_service.extensions import db
from scheduler_service.models import Task

HOOK = "https://hooks.example.com/services/T000/B000/XXXXSECRET?token=abc"
HTTP_WITH_HEADERS = {"type": "http", "url": "http://example.com/api", "headers": {"Authorization": "Bearer xyz-secret"}}


def stored(app, task_id: int) -> Task:
    with app.app_context():
        task = db.session.get(Task, task_id)
        db.session.expunge(task)
        return task


def test_reads_show_the_mask(client):
    task = make_task(client, action=HTTP_WITH_HEADERS, notify={"url": HOOK, "events": ["failure"]})
    for body in (task, client.get(f"/api/tasks/{task['id']}/").get_json(),
                 client.get("/api/tasks/").get_json()["items"][0]):
        assert body["action"]["headers"] == {"Authorization": "***"}
        assert body["notify"]["url"] == "https://hooks.example.com/***"
    text = client.get("/api/tasks/").get_data(as_text=True) + client.get("/api/audit/").get_data(as_text=True)
    assert "xyz-secret" not in text and "XXXXSECRET" not in text


def test_a_read_written_back_keeps_every_secret(app, client):
    task = make_task(client, action=HTTP_WITH_HEADERS, notify={"url": HOOK, "events": ["failure"]})
    shown = client.get(f"/api/tasks/{task['id']}/").get_json()
    body = {key: shown[key] for key in ("name", "cron_expression", "action", "notify")}
    body["description"] = "edited"
    assert client.put(f"/api/tasks/{task['id']}/", json=body).status_code == 200
    kept = stored(app, task["id"])
    assert kept.action["headers"] == {"Authorization": "Bearer xyz-secret"}
    assert kept.notify["url"] == HOOK
    assert kept.description == "edited"


def test_a_new_value_replaces_the_secret(app, client):
    task = make_task(client, action=HTTP_WITH_HEADERS)
    action = {**HTTP_WITH_HEADERS, "headers": {"Authorization": "Bearer rotated", "X-Extra": "1"}}
    assert client.patch(f"/api/tasks/{task['id']}/", json={"action": action}).status_code == 200
    assert stored(app, task["id"]).action["headers"] == {"Authorization": "Bearer rotated", "X-Extra": "1"}


def test_the_mask_where_nothing_is_stored_is_refused_naming_the_field(app, client):
    response = client.post("/api/tasks/", json=task_payload(
        action={"type": "shell", "command": "true", "env": {"TOKEN": "***"}}))
    assert error_at(field_errors(response), "action.env.TOKEN"), response.get_json()

    task = make_task(client, action=HTTP_WITH_HEADERS)
    action = {**HTTP_WITH_HEADERS, "headers": {"Authorization": "***", "X-New": "***"}}
    response = client.patch(f"/api/tasks/{task['id']}/", json={"action": action})
    assert error_at(field_errors(response), "action.headers.X-New"), response.get_json()
    response = client.patch(f"/api/tasks/{task['id']}/", json={
        "notify": {"url": "https://other.example.com/***", "events": ["failure"]}})
    assert error_at(field_errors(response), "notify.url"), response.get_json()
    assert stored(app, task["id"]).action == {**HTTP_WITH_HEADERS, "method": "GET", "body": None,
                                              "expect_status": None, **_defaults(app, task["id"])}


def _defaults(app, task_id: int) -> dict:
    """Fields the http schema adds that this test does not care about (follow_redirects)."""
    action = stored(app, task_id).action
    return {key: value for key, value in action.items()
            if key not in {"type", "url", "headers", "method", "body", "expect_status"}}


def test_the_alerts_list_masks_webhook_paths(app, client):
    from scheduler_service.ops.models import Alert

    task = make_task(client)
    with app.app_context():
        db.session.add(Alert(task_id=task["id"], event="failure", payload={}, url=HOOK))
        db.session.commit()
    text = client.get("/api/alerts/").get_data(as_text=True)
    assert "XXXXSECRET" not in text and "https://hooks.example.com/***" in text
