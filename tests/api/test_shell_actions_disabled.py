"""SHELL_ACTIONS_ENABLED=false: shell actions are refused (422 naming action.type); others still work."""
from __future__ import annotations

import pytest

from tests.api.api_helpers import Failures, count_rows, describe, error_at, field_errors, make_task, task_payload
from scheduler_service.models import Task


@pytest.fixture
def app_config():
    # With shell actions off, python actions default to none at all (any callable can start a
    # shell); this deployment names the module its python actions come from.
    return {"SHELL_ACTIONS_ENABLED": False, "PYTHON_ACTIONS_MODULES": ("pkg",)}


def test_shell_actions_are_refused_when_disabled(app, client):
    failures = Failures()
    for label, action in (("plain", {"type": "shell", "command": "echo hi"}),
                          ("with env", {"type": "shell", "command": "env", "env": {"A": "1"}, "cwd": "/tmp"})):
        response = client.post("/api/tasks/", json=task_payload(action=action))
        if response.status_code != 422:
            failures.check(False, label, describe(response))
            continue
        errors = response.get_json()["errors"]["json"]
        failures.check(error_at(errors, "action.type") is not None, label, repr(errors))
    failures.assert_none()
    assert count_rows(app, Task) == 0

    # Other action types are accepted as usual (python ones from PYTHON_ACTIONS_MODULES).
    http = make_task(client, action={"type": "http", "url": "http://example.com/"})
    python = make_task(client, action={"type": "python", "callable": "pkg.mod:func"})
    assert (http["action"]["type"], python["action"]["type"]) == ("http", "python")

    # Neither PUT nor PATCH can turn a task into a shell task.
    shell = {"type": "shell", "command": "echo hi"}
    path = f"/api/tasks/{http['id']}/"
    errors = field_errors(client.put(path, json=task_payload(name=http["name"], action=shell)))
    assert error_at(errors, "action.type") is not None
    errors = field_errors(client.patch(path, json={"action": shell}))
    assert error_at(errors, "action.type") is not None
    assert client.get(path).get_json() == http
    assert count_rows(app, Task) == 2
