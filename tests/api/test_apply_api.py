"""POST /api/apply/ (contract: Governance, "Tasks as files"): the document `flask tasks export` writes, as
JSON; answers the plan; all or nothing; admin scope."""
from __future__ import annotations

import sqlalchemy as sa

from tests.api.api_helpers import assert_json_error, field_errors, make_task
from scheduler_service.auth import issue_token
from scheduler_service.extensions import db
from scheduler_service.models import AuditEntry, Task

SECRET_HEADERS = {"Authorization": "Bearer tok-1"}
DOCUMENT = {"tasks": {
    "extract": {"cron_expression": "0 2 * * *", "timezone": "Europe/Berlin",
                "action": {"type": "http", "url": "http://etl.example.com/x", "headers": SECRET_HEADERS}},
    "transform": {"depends_on": ["extract"], "action": {"type": "shell", "command": "transform"}},
    "load": {"depends_on": ["transform"], "action": {"type": "shell", "command": "load"}},
}}
CREATED = [
    {"task": "extract", "change": "create", "fields": []},
    {"task": "load", "change": "create", "fields": []},
    {"task": "transform", "change": "create", "fields": []},
]


def apply(client, document, **args):
    query = {name: str(value).lower() for name, value in args.items()}
    return client.post("/api/apply/", json=document, query_string=query)


def stored(app) -> dict[str, dict]:
    with app.app_context():
        return {
            task.name: {"parents": sorted(parent.name for parent in task.parents), "action": task.action,
                        "next_run_at": task.next_run_at}
            for task in db.session.scalars(sa.select(Task))
        }


def audit_trail(app) -> list[tuple[str, str]]:
    with app.app_context():
        return [(entry.action, entry.actor) for entry in db.session.scalars(sa.select(AuditEntry))]


def test_dry_run_answers_the_plan_and_changes_nothing(app, client):
    response = apply(client, DOCUMENT, dry_run=True)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"dry_run": True, "changed": True, "changes": CREATED}
    assert stored(app) == {}
    assert audit_trail(app) == []


def test_apply_creates_the_chain_and_a_second_apply_changes_nothing(app, client):
    response = apply(client, DOCUMENT)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"dry_run": False, "changed": True, "changes": CREATED}
    tasks = stored(app)
    assert tasks["load"]["parents"] == ["transform"] and tasks["transform"]["parents"] == ["extract"]
    assert tasks["extract"]["next_run_at"] is not None
    assert audit_trail(app) == [("apply", "token:tests")] * 3

    again = apply(client, DOCUMENT)
    assert again.get_json() == {"dry_run": False, "changed": False, "changes": []}
    assert len(audit_trail(app)) == 3


def test_updates_name_their_fields_masks_keep_secrets_and_prune_deletes(app, client):
    make_task(client, name="old")
    apply(client, DOCUMENT)
    document = {"tasks": {**DOCUMENT["tasks"], "extract": {
        **DOCUMENT["tasks"]["extract"], "max_retries": 0,
        "action": {**DOCUMENT["tasks"]["extract"]["action"], "headers": {"Authorization": "***"}},
    }}}
    response = apply(client, document, prune=True)
    assert response.get_json()["changes"] == [
        {"task": "extract", "change": "update", "fields": ["max_retries"]},
        {"task": "old", "change": "delete", "fields": []},
    ]
    tasks = stored(app)
    assert set(tasks) == {"extract", "transform", "load"}
    assert tasks["extract"]["action"]["headers"] == SECRET_HEADERS


def test_an_invalid_document_is_422_naming_task_and_field_and_changes_nothing(app, client):
    make_task(client, name="kept")
    document = {"tasks": {
        **DOCUMENT["tasks"],
        "bad": {"cron_expression": "0 0 31 2 *", "action": {"type": "http", "url": "http://x.example.com/"}},
        "masked": {"cron_expression": "@daily",
                   "action": {"type": "http", "url": "http://x.example.com/", "headers": {"X-Key": "***"}}},
        "loop": {"depends_on": ["loop"], "action": {"type": "shell", "command": "x"}},
    }}
    response = apply(client, document, prune=True)
    errors = field_errors(response)
    assert set(errors) == {"tasks"}
    assert set(errors["tasks"]) == {"bad", "masked", "loop"}
    assert list(errors["tasks"]["bad"]) == ["cron_expression"]
    assert errors["tasks"]["masked"]["action"]["headers"]["X-Key"]
    assert errors["tasks"]["loop"]["depends_on"] == ["A task cannot depend on itself."]
    assert set(stored(app)) == {"kept"}
    assert audit_trail(app) == [("create", "token:tests")]


def test_documents_of_the_wrong_shape_are_422_or_400(client):
    assert field_errors(apply(client, {"tasks": {}, "extra": 1})) == {
        "extra": ["Unknown field: the document has only 'tasks'."]
    }
    assert list(field_errors(apply(client, {}))) == ["tasks"]
    assert list(field_errors(apply(client, {"tasks": []}))) == ["tasks"]
    assert field_errors(apply(client, {"tasks": {"a": 1}})) == {"tasks": {"a": {"_schema": [
        "Must be a mapping of the task's fields."]}}}
    assert "_schema" in field_errors(apply(client, [1, 2]))
    assert_json_error(client.post("/api/apply/", data="tasks: {}", content_type="application/yaml"), 400)
    assert "dry_run" in field_errors(apply(client, DOCUMENT, dry_run="maybe"), "query")


def test_apply_needs_the_admin_scope(app, client):
    with app.app_context():
        writer = issue_token("w", scope="write")
    response = client.post("/api/apply/", json=DOCUMENT, headers={"Authorization": f"Bearer {writer}"})
    body = assert_json_error(response, 403)
    assert "admin" in body["message"]
    assert stored(app) == {}
    assert_json_error(app.test_client().post("/api/apply/", json=DOCUMENT), 401)
