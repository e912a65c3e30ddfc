"""A list page costs a few statements, however many items it holds and however they are linked."""
from __future__ import annotations

import pytest

from tests.api.api_helpers import add_run, describe, make_task
from tests.statements import counted_statements

# tasks: the page, and the parents of its tasks; logs: the page (task names joined in).
# The bearer token is checked once per process every few seconds, so it costs nothing here.
MOST_STATEMENTS = {"/api/tasks/": 2, "/api/logs/": 1}


def _linked_tasks_with_runs(app, client, count: int) -> None:
    """Tasks where each one after the second depends on the two before it, each with runs."""
    tasks = [make_task(client), make_task(client)]
    for _ in range(count - 2):
        tasks.append(make_task(client, depends_on=[tasks[-1]["id"], tasks[-2]["id"]]))
    for task in tasks:
        for _ in range(2):
            add_run(app, task["id"], "success")


@pytest.mark.parametrize("path", list(MOST_STATEMENTS))
def test_a_list_page_costs_the_same_few_statements_at_any_size(app, client, path):
    _linked_tasks_with_runs(app, client, 12)
    assert client.get(path).status_code == 200  # the token is now checked
    counts = {}
    for limit in (1, 5, 50):
        with counted_statements(app) as statements:
            response = client.get(f"{path}?limit={limit}")
        assert response.status_code == 200, describe(response)
        assert len(response.get_json()["items"]) == min(limit, 12 if path == "/api/tasks/" else 24)
        counts[limit] = len(statements)
    assert set(counts.values()) == {MOST_STATEMENTS[path]}, counts


def test_an_empty_task_page_does_not_look_for_parents(app, client):
    assert client.get("/api/tasks/").status_code == 200
    with counted_statements(app) as statements:
        assert client.get("/api/tasks/").get_json()["items"] == []
    assert len(statements) == 1, statements
