"""Lists: {items, next_cursor}, limit 1..500 (default 50), opaque cursors, filters, and paging
through a list that grows meanwhile without repeating or skipping an item."""
from __future__ import annotations

import base64

from tests.api.api_helpers import (
    Failures, add_run, call, describe, error_at, field_errors, make_task, set_task,
)
from scheduler_service.extensions import db
from scheduler_service.models import Task


def insert_tasks(app, count: int) -> list[int]:
    """Many tasks at once, straight into the database (creating them one by one costs time)."""
    with app.app_context():
        tasks = [Task(name=f"bulk-{index:03d}", cron_expression="0 0 * * *", timezone="UTC",
                      action={"type": "http", "url": "http://example.com/"}) for index in range(count)]
        db.session.add_all(tasks)
        db.session.commit()
        return [task.id for task in tasks]


def walk(client, path: str, limit: int, between=None, **params) -> tuple[list[int], list[dict]]:
    """Follow next_cursor to the end; ``between(page_number)`` runs after each page."""
    seen, pages, cursor = [], [], None
    for page_number in range(100):
        query = {"limit": limit, **params}
        if cursor is not None:
            query["cursor"] = cursor
        response = client.get(path, query_string=query)
        assert response.status_code == 200, describe(response)
        page = response.get_json()
        assert set(page) == {"items", "next_cursor"}
        assert len(page["items"]) <= limit
        pages.append(page)
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen, pages
        assert isinstance(cursor, str) and cursor
        if between:
            between(page_number)
    raise AssertionError("paging never ended")


def encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_limit_defaults_to_50_and_accepts_1_to_500(app, client):
    ids = insert_tasks(app, 51)
    page = client.get("/api/tasks/").get_json()
    assert [item["id"] for item in page["items"]] == ids[:50]
    assert page["next_cursor"] is not None
    rest = client.get("/api/tasks/", query_string={"cursor": page["next_cursor"]}).get_json()
    assert [item["id"] for item in rest["items"]] == ids[50:]
    assert rest["next_cursor"] is None

    everything = client.get("/api/tasks/", query_string={"limit": 500}).get_json()
    assert [item["id"] for item in everything["items"]] == ids and everything["next_cursor"] is None
    one = client.get("/api/tasks/", query_string={"limit": 1}).get_json()
    assert [item["id"] for item in one["items"]] == ids[:1] and one["next_cursor"] is not None

    failures = Failures()
    for path in ("/api/tasks/", "/api/logs/"):
        for limit in ("0", "501", "-1", "abc", "1.5", str(10**20)):
            response = client.get(path, query_string={"limit": limit})
            ok = response.status_code == 422 and error_at(response.get_json().get("errors", {}), "query.limit")
            failures.check(bool(ok), f"{path}?limit={limit}", describe(response))
    failures.assert_none()


def test_paging_tasks_visits_each_once_in_id_order_while_the_list_changes(app, client):
    ids = [make_task(client)["id"] for _ in range(5)]

    # limit 2 over 5 tasks: 2 + 2 + 1, and no cursor after the last page.
    seen, pages = walk(client, "/api/tasks/", limit=2)
    assert seen == ids
    assert [len(page["items"]) for page in pages] == [2, 2, 1]
    assert pages[-1]["next_cursor"] is None

    # A page that ends exactly at the end of the list has no next cursor either.
    seen, pages = walk(client, "/api/tasks/", limit=5)
    assert seen == ids and len(pages) == 1

    # Tasks created between pages are not repeated, and nothing is skipped.
    created = []
    seen, _ = walk(client, "/api/tasks/", limit=2, between=lambda page: created.append(make_task(client)["id"]))
    assert len(seen) == len(set(seen))
    assert seen[:5] == ids
    assert set(seen) <= set(ids) | set(created)

    # Deleting the last task of a page before reading the next one skips nothing else.
    current = [item["id"] for item in client.get("/api/tasks/", query_string={"limit": 500}).get_json()["items"]]
    first = client.get("/api/tasks/", query_string={"limit": 2}).get_json()
    assert client.delete(f"/api/tasks/{first['items'][-1]['id']}/").status_code == 204
    rest, _ = walk(client, "/api/tasks/", limit=2, cursor=first["next_cursor"])
    assert [item["id"] for item in first["items"]] + rest == current


def test_paging_logs_newest_first_while_runs_are_added(app, client):
    task = make_task(client)
    run_ids = [add_run(app, task["id"], "success") for _ in range(5)]

    seen, pages = walk(client, "/api/logs/", limit=2)
    assert seen == run_ids[::-1]
    assert [len(page["items"]) for page in pages] == [2, 2, 1]

    added = []
    seen, _ = walk(client, "/api/logs/", limit=2, between=lambda page: added.append(add_run(app, task["id"])))
    assert len(seen) == len(set(seen))
    assert [run_id for run_id in seen if run_id in run_ids] == run_ids[::-1]
    assert set(seen) <= set(run_ids) | set(added)

    # Logs default to 50 per page as well.
    for _ in range(47):
        add_run(app, task["id"])
    page = client.get("/api/logs/").get_json()
    assert len(page["items"]) == 50 and page["next_cursor"] is not None


def test_a_bad_cursor_is_422_naming_cursor(app, client):
    make_task(client)
    failures = Failures()
    for path in ("/api/tasks/", "/api/logs/"):
        for label, cursor in (("garbage", "not-a-cursor!!"), ("other prefix", encode("page:2")),
                              ("non-numeric", encode("id:abc")), ("negative", encode("id:-1")),
                              ("plain number", "12"), ("NUL", "a\u0000b"), ("too long", "A" * 5000)):
            response = client.get(path, query_string={"cursor": cursor})
            if response.status_code != 422:
                failures.check(False, f"{path} {label}", describe(response))
                continue
            failures.check(error_at(response.get_json()["errors"], "query.cursor") is not None,
                           f"{path} {label}", describe(response))
    failures.assert_none()


def test_a_cursor_past_any_id_is_refused_or_an_empty_page_not_a_server_error(app, client):
    make_task(client)
    failures = Failures()
    for path in ("/api/tasks/", "/api/logs/"):
        for value in (2**31, 2**63 - 1):
            response = call(client.get, path, query_string={"cursor": encode(f"id:{value}")})
            if isinstance(response, str):
                ok = False
            elif response.status_code == 422:
                ok = error_at(response.get_json()["errors"], "query.cursor") is not None
            else:
                ok = response.status_code == 200 and response.get_json() == {"items": [], "next_cursor": None}
            failures.check(ok, f"{path} cursor for id {value}", describe(response))
    failures.assert_none()


def test_task_filters_enabled_status_and_name_contains(app, client):
    names = ["Nightly Backup", "backup-logs", "100% done", "100 percent", "a_b", "axb", "report", "C:\\temp"]
    tasks = {name: make_task(client, name=name) for name in names}
    client.post(f"/api/tasks/{tasks['report']['id']}/toggle/")
    client.post(f"/api/tasks/{tasks['axb']['id']}/toggle/")
    set_task(app, tasks["backup-logs"]["id"], status="failed")
    set_task(app, tasks["a_b"]["id"], status="success")

    def names_for(**params):
        response = client.get("/api/tasks/", query_string=params)
        assert response.status_code == 200, describe(response)
        return [item["name"] for item in response.get_json()["items"]]

    assert names_for(enabled="false") == ["axb", "report"]
    assert names_for(enabled="true") == ["Nightly Backup", "backup-logs", "100% done", "100 percent", "a_b",
                                         "C:\\temp"]
    assert names_for(status="failed") == ["backup-logs"]
    assert names_for(status="success") == ["a_b"]
    assert names_for(status="pending") == ["Nightly Backup", "100% done", "100 percent", "axb", "report",
                                           "C:\\temp"]
    assert names_for(q="BACKUP") == ["Nightly Backup", "backup-logs"]  # case-insensitive "contains"
    assert names_for(q="%") == ["100% done"]  # % is literal
    assert names_for(q="_") == ["a_b"]  # _ is literal
    assert names_for(q="a_b") == ["a_b"]
    assert names_for(q="100%") == ["100% done"]
    assert names_for(q="\\") == ["C:\\temp"]  # so is a backslash
    assert names_for(q="nothing like it") == []
    assert names_for(q="backup", enabled="true", status="pending") == ["Nightly Backup"]

    # Filters and paging combine.
    seen, pages = walk(client, "/api/tasks/", limit=1, q="backup")
    assert seen == [tasks["Nightly Backup"]["id"], tasks["backup-logs"]["id"]] and len(pages) == 2

    for params, field in (({"enabled": "maybe"}, "enabled"), ({"status": "sleeping"}, "status")):
        errors = field_errors(client.get("/api/tasks/", query_string=params), location="query")
        assert field in errors
