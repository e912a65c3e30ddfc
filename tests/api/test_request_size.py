"""MAX_REQUEST_BYTES: a larger body gets 413 (JSON), and nothing is stored."""
from __future__ import annotations

import pytest

from tests.api.api_helpers import assert_json_error, count_rows, make_task, task_payload
from scheduler_service.models import Task


@pytest.fixture
def app_config(monkeypatch):
    # Set the documented environment variable, read when the app is built.
    monkeypatch.setenv("MAX_REQUEST_BYTES", "1000")
    return {}


def test_a_body_over_max_request_bytes_is_413(app, client):
    task = make_task(client, description="small enough")
    big = "x" * 2000

    assert_json_error(client.post("/api/tasks/", json=task_payload(description=big)), 413)
    assert_json_error(client.put(f"/api/tasks/{task['id']}/", json=task_payload(description=big)), 413)
    assert_json_error(client.patch(f"/api/tasks/{task['id']}/", json={"description": big}), 413)
    response = client.post("/api/tasks/", data=b"{" + b" " * 5000 + b"}", content_type="application/json")
    assert_json_error(response, 413)

    assert count_rows(app, Task) == 1
    assert client.get(f"/api/tasks/{task['id']}/").get_json() == task
    # Just under the limit is fine.
    assert make_task(client, description="y" * 700)["description"] == "y" * 700
