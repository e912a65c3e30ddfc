"""Guard rails for actions at write time (contract: "Guard rails for actions"; issue 13 point 4):
a write that breaks one gets 422 naming the field, and nothing is stored."""
from __future__ import annotations

import ipaddress

import pytest

from tests.api.api_helpers import Failures, count_rows, describe, error_at, field_errors, make_task, task_payload
from scheduler_service.models import Task

METADATA = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"


def messages_at(response, path: str) -> list[str]:
    """The messages a 422 answer gives for the field at ``path`` (fails if it names no such field)."""
    node = error_at(field_errors(response), path)
    assert node is not None, f"{path} not named: {describe(response)}"
    return node


def refused_at(client, path: str, cases: list[tuple[str, dict]], *field_words: str) -> None:
    """Each (label, body) is 422 naming ``path`` with a message holding every one of ``field_words``."""
    failures = Failures()
    for label, body in cases:
        response = client.post("/api/tasks/", json=body)
        if response.status_code != 422:
            failures.check(False, label, describe(response))
            continue
        node = error_at(response.get_json()["errors"]["json"], path)
        failures.check(node is not None and all(word in " ".join(node) for word in field_words), label,
                       describe(response))
    failures.assert_none()


def http(url: str, **fields) -> dict:
    return task_payload(action={"type": "http", "url": url, **fields})


# --- http actions and webhooks: HTTP_ACTIONS_DENY_NETWORKS ------------------------------------


def test_a_url_whose_host_is_a_denied_address_is_422_naming_the_field(app, client):
    refused_at(client, "action.url", [
        ("the metadata address", http(METADATA)),
        ("with a port", http("http://169.254.169.254:80/")),
        ("https", http("https://169.254.170.2/v2/credentials")),
        ("written as one number", http("http://2852039166/")),
        ("written in hex", http("http://0xa9fea9fe/")),
        ("IPv4-mapped IPv6", http("http://[::ffff:a9fe:a9fe]/")),
        ("AWS IPv6 metadata", http("http://[fd00:ec2::254]/")),
        ("IPv6 link-local", http("http://[fe80::1]/")),
    ], "HTTP_ACTIONS_DENY_NETWORKS")
    assert count_rows(app, Task) == 0
    [message] = messages_at(client.post("/api/tasks/", json=http(METADATA)), "action.url")
    assert message == "Refused: 169.254.169.254 is in HTTP_ACTIONS_DENY_NETWORKS (169.254.0.0/16)."


def test_names_and_other_addresses_are_accepted(client):
    for url in ("http://example.com/", "http://localhost:8080/x", "http://10.0.0.5/", "http://[::1]:8080/",
                "http://169.254.example.com/"):
        make_task(client, action={"type": "http", "url": url})


@pytest.mark.parametrize("app_config", [{"HTTP_ACTIONS_DENY_NETWORKS": (ipaddress.ip_network("127.0.0.0/8"),)}],
                         ids=["loopback-denied"])
def test_the_deny_list_is_the_setting(client):
    [message] = messages_at(client.post("/api/tasks/", json=http("http://127.0.0.1:8080/")), "action.url")
    assert message == "Refused: 127.0.0.1 is in HTTP_ACTIONS_DENY_NETWORKS (127.0.0.0/8)."
    make_task(client, action={"type": "http", "url": "http://169.254.169.254/"})  # not on this list
    make_task(client, action={"type": "http", "url": "http://localhost:8080/"})  # a name: refused when run


def test_put_and_patch_are_checked_too(client):
    task = make_task(client)
    path = f"/api/tasks/{task['id']}/"
    action = {"type": "http", "url": METADATA}
    assert messages_at(client.put(path, json=task_payload(name=task["name"], action=action)), "action.url")
    assert messages_at(client.patch(path, json={"action": action}), "action.url")
    notify = {"url": "http://169.254.169.254/hook", "events": ["failure"]}
    assert messages_at(client.patch(path, json={"notify": notify}), "notify.url")
    assert client.get(path).get_json() == task


def test_a_webhook_url_whose_host_is_a_denied_address_is_422(app, client):
    body = task_payload(notify={"url": "http://[fd00:ec2::254]/hook", "events": ["failure"]})
    [message] = messages_at(client.post("/api/tasks/", json=body), "notify.url")
    assert message == "Refused: fd00:ec2::254 is in HTTP_ACTIONS_DENY_NETWORKS (fd00:ec2::254/128)."
    assert count_rows(app, Task) == 0
    make_task(client, notify={"url": "http://hooks.example.com/x", "events": ["failure"]})


def test_follow_redirects_is_an_optional_boolean(client):
    assert "follow_redirects" not in make_task(client)["action"]  # absent: redirects are not followed
    for value in (True, False):
        task = make_task(client, action={"type": "http", "url": "http://example.com/", "follow_redirects": value})
        assert task["action"]["follow_redirects"] is value
    refused_at(client, "action.follow_redirects", [
        ("a word", http("http://example.com/", follow_redirects="sometimes")),
        ("a list", http("http://example.com/", follow_redirects=[True])),
    ])
    # Only http actions have it.
    body = task_payload(action={"type": "shell", "command": "true", "follow_redirects": True})
    assert messages_at(client.post("/api/tasks/", json=body), "action.follow_redirects")


# --- shell env names -----------------------------------------------------------------------------


def test_env_names_must_be_shell_variable_names(app, client):
    def shell(env: dict) -> dict:
        return task_payload(action={"type": "shell", "command": "env", "env": env})

    refused_at(client, "action.env", [
        ("A=B, the issue's reproduction", shell({"A=B": "1"})),
        ("leading digit", shell({"1A": "x"})),
        ("dash", shell({"MY-VAR": "x"})),
        ("space", shell({"MY VAR": "x"})),
        ("empty", shell({"": "x"})),
        ("non-ASCII letter", shell({"É": "x"})),
        ("one bad among good", shell({"GOOD": "1", "BAD=": "2"})),
    ], "[A-Za-z_][A-Za-z0-9_]*")
    assert count_rows(app, Task) == 0
    [message] = messages_at(client.post("/api/tasks/", json=shell({"A=B": "1"})), "action.env")
    assert message == "Not a valid variable name: 'A=B' (names match [A-Za-z_][A-Za-z0-9_]*)."
    task = make_task(client, action={"type": "shell", "command": "env", "env": {"_A1": "x", "path": "y"}})
    assert set(task["action"]["env"]) == {"_A1", "path"}


# --- python callables: PYTHON_ACTIONS_MODULES ------------------------------------------------------


def python(reference: str) -> dict:
    return task_payload(action={"type": "python", "callable": reference})


@pytest.mark.parametrize("app_config", [{"SHELL_ACTIONS_ENABLED": False}], ids=["shell-disabled"])
def test_python_actions_are_refused_by_default_when_shell_actions_are_disabled(app, client):
    # The reproduction: with shell off, subprocess:getoutput started a shell all the same.
    [message] = messages_at(client.post("/api/tasks/", json=python("subprocess:getoutput")), "action.callable")
    assert message == ("Refused: module 'subprocess' is not allowed by PYTHON_ACTIONS_MODULES"
                       " (empty: no python actions).")
    refused_at(client, "action.callable", [("os.system", python("os:system")), ("mine", python("myapp.jobs:run"))],
               "PYTHON_ACTIONS_MODULES")
    assert count_rows(app, Task) == 0


def test_any_module_is_allowed_by_default_while_shell_actions_are_enabled(client):
    assert make_task(client, action={"type": "python", "callable": "subprocess:getoutput"})["action"]["callable"] \
        == "subprocess:getoutput"


@pytest.mark.parametrize("app_config", [{"PYTHON_ACTIONS_MODULES": ("myapp.jobs", "reports")}], ids=["listed"])
def test_python_callables_come_from_the_listed_module_prefixes(app, client):
    for reference in ("myapp.jobs:run", "myapp.jobs.nightly:run", "reports:build", "reports.pdf:render.page"):
        make_task(client, action={"type": "python", "callable": reference})
    refused_at(client, "action.callable", [
        ("another module", python("subprocess:getoutput")),
        ("a name that only starts like a prefix", python("myapp.jobsx:run")),
        ("the parent of a prefix", python("myapp:run")),
        ("a sibling", python("myapp.admin:run")),
    ], "PYTHON_ACTIONS_MODULES (myapp.jobs, reports)")
    task = make_task(client, action={"type": "python", "callable": "reports:build"})
    path = f"/api/tasks/{task['id']}/"
    assert messages_at(client.patch(path, json={"action": {"type": "python", "callable": "os:system"}}),
                       "action.callable")
    assert client.get(path).get_json() == task
    assert count_rows(app, Task) == 5
