"""Hostile input: nothing a client sends may get a 5xx.

Every test runs on SQLite and, with TEST_DATABASE_URL, on PostgreSQL.

* schemathesis generates requests for every operation of the app's own
  ``/api/openapi.json`` (positive and negative data; examples, coverage and a
  bounded, derandomized fuzzing phase) and sends them to the WSGI app
  in-process with a valid bearer token. Checks: ``not_a_server_error`` and
  ``response_schema_conformance``. Under ``TESTING`` the app lets an unexpected
  exception propagate, so a would-be 500 fails the test with its traceback.
  ``test_responses_conform_to_the_served_openapi_document`` validates each
  operation's answers against the document exactly as served.
* hand-written cases for what a generator rarely sends: bodies over
  ``MAX_REQUEST_BYTES`` (413), JSON nested 100,000 deep (400) or just shallow
  enough to parse, wrong content types and undecodable bytes, lone surrogates
  and NUL in every string field (422), SQL-looking strings (stored and matched
  literally), out-of-range numbers in paths, queries and bodies, extremely
  long strings, unicode, methods not allowed (405).

Table-driven tests collect every failing case and report them together.
"""
from __future__ import annotations

import base64
import copy
import io
import json
import re
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.appfactory import database_url, make_app, reset_database
from scheduler_service.auth import issue_token
from scheduler_service.extensions import db
from scheduler_service.models import Run, Task

UTC = timezone.utc
INT_MAX = 2**31 - 1
JSON_HEADERS = {"Content-Type": "application/json"}
HTTP = {"type": "http", "url": "http://e.com/"}
PYTHON = {"type": "python", "callable": "m:f"}
SHELL = {"type": "shell", "command": "true"}
LONE_SURROGATES_AND_NUL = {"lone high surrogate": "\ud800", "lone low surrogate": "x\udfffy", "NUL": "a\x00b"}
SQL_LOOKING = ("'; DROP TABLE task; --", "%' OR 1=1 --", "Robert'); DROP TABLE run;--", '" OR ""="',
               "1; SELECT pg_sleep(5)")


# --- helpers ------------------------------------------------------------------------------------------------


def call(send: Callable, *args: Any, **kwargs: Any):
    """A request; an exception escaping the app (a 500 outside of tests) becomes a string to report."""
    try:
        return send(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - reported as a failing case, not swallowed
        first_line = (str(exc).splitlines() or [""])[0][:160]
        return f"server error (500): {type(exc).__name__}: {first_line}"


def describe(response) -> str:
    if isinstance(response, str):
        return response
    return f"{response.status_code} {response.get_data(as_text=True)[:240]!r}"


def is_json_error(response, statuses) -> bool:
    """The service's one error shape ({"code", "status", ...}) with one of ``statuses``, never HTML."""
    if isinstance(response, str) or response.status_code not in statuses:
        return False
    body = response.get_json(silent=True)
    return (response.mimetype == "application/json" and isinstance(body, dict)
            and body.get("code") == response.status_code)


def names_field(response, field: str | None, location: str = "json") -> bool:
    """A 422 whose ``errors.<location>`` names ``field`` (None: any field will do)."""
    if not is_json_error(response, {422}):
        return False
    return field is None or field in (response.get_json().get("errors", {}).get(location) or {})


def raw_json(data: Any, token: str | None = None) -> str:
    """JSON text as a client may send it: non-ASCII escaped, so lone surrogates travel as \\ud800.

    With ``token``, the string value "@" is replaced by that raw text (NaN, 5000 digits, deep nesting...).
    """
    text = json.dumps(data, ensure_ascii=True)
    return text if token is None else text.replace('"@"', token)


class Failures:
    """The cases of a table-driven test that went wrong, reported all at once."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def check(self, ok: bool, label: str, response: Any = None) -> None:
        if not ok:
            self.items.append(f"{label}: {describe(response)}" if response is not None else label)

    def assert_none(self) -> None:
        assert not self.items, f"{len(self.items)} failing case(s):\n  " + "\n  ".join(self.items)


_counter = iter(range(1, 10**9))


def task_body(**overrides: Any) -> dict:
    body = {
        "name": f"hostile-{next(_counter)}",
        "cron_expression": "*/5 * * * *",
        "action": {"type": "http", "url": "http://example.com/hook"},
    }
    body.update(overrides)
    return body


def create(client, **overrides: Any) -> dict:
    response = client.post("/api/tasks/", json=task_body(**overrides))
    assert response.status_code == 201, describe(response)
    return response.get_json()


def task_count(app) -> int:
    with app.app_context():
        return db.session.execute(sa.select(sa.func.count()).select_from(Task)).scalar_one()


def table_names(app) -> set[str]:
    with app.app_context():
        return set(sa.inspect(db.engine).get_table_names())


def add_run(app, task_id: int, status: str, minute: int, output: str = "") -> None:
    at = datetime(2026, 3, 1, 10, 0, tzinfo=UTC) + timedelta(minutes=minute)
    finished = status in ("success", "failed", "skipped")
    with app.app_context():
        db.session.add(Run(
            task_id=task_id, status=status, trigger="schedule", attempt=1, scheduled_for=at,
            started_at=at if status != "pending" else None,
            finished_at=at + timedelta(seconds=2) if finished else None,
            duration_seconds=2.0 if finished else None, exit_code=0 if status == "success" else None,
            output=output, message="" if status == "success" else "boom", created_at=at,
        ))
        db.session.commit()


@pytest.fixture
def seeded(app, client) -> list[dict]:
    """Tasks 1..3 (a parent, a disabled dependency-only child, a shell task in another zone) and runs 1..4."""
    tasks = [
        create(client, name="alpha", description="the parent"),
        create(client, name="beta", cron_expression=None, depends_on=[1], enabled=False,
               action={"type": "python", "callable": "os.path:join", "args": ["a", 1], "kwargs": {"b": None}}),
        create(client, name="gamma", cron_expression="30 2 * * * 0", timezone="Europe/Berlin",
               concurrency_policy="allow", timeout_seconds=None,
               action={"type": "shell", "command": "echo hi", "env": {"A": "1"}}),
    ]
    for minute, status in enumerate(("success", "failed", "pending", "skipped")):
        add_run(app, 1, status, minute, output=f"{status} output\n")
    return tasks


# --- schemathesis over the app's own OpenAPI document -------------------------------------------------------

NULLABLE_TIMES = ("last_run_at", "next_run_at")
MAX_EXAMPLES = 15  # the fuzzing phase, per operation; the coverage phase adds its own deterministic cases
CRON_EXAMPLES = ["*/5 * * * *", "0 2 * * *", "@daily", "@hourly", "30 1 * * 1-5", "* * * * * */10", "0 0 29 2 *"]
ZONE_EXAMPLES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Pacific/Chatham", "Etc/GMT+12"]
URL_EXAMPLES = ["http://example.com/hook", "https://example.org/a/b?c=d", "http://10.0.0.1:8080/"]
STATUS_LIST = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 100, "maximum": 599}}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
VALID_ACTIONS = [
    {"type": "object", "required": ["type", "command"], "additionalProperties": False, "properties": {
        "type": {"type": "string", "enum": ["shell"]},
        "command": {"type": "string", "minLength": 1, "maxLength": 300},
        "env": STRING_MAP,
        "cwd": {"type": "string", "minLength": 1, "maxLength": 300},
    }},
    {"type": "object", "required": ["type", "url"], "additionalProperties": False, "properties": {
        "type": {"type": "string", "enum": ["http"]},
        "url": {"type": "string", "enum": URL_EXAMPLES},
        "method": {"type": "string", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]},
        "headers": STRING_MAP,
        "body": {},
        "expect_status": STATUS_LIST,
    }},
    {"type": "object", "required": ["type", "callable"], "additionalProperties": False, "properties": {
        "type": {"type": "string", "enum": ["python"]},
        "callable": {"type": "string", "pattern": r"^[a-z_]{1,8}(\.[a-z_]{1,8}){0,2}:[a-z_]{1,8}\Z"},
        "args": {"type": "array"},
        "kwargs": {"type": "object"},
    }},
]


def openapi_document() -> dict:
    """The document the app serves (read from a throwaway app: it needs no database)."""
    app = make_app("sqlite://")
    try:
        response = app.test_client().get("/api/openapi.json")
        assert response.status_code == 200, describe(response)
        return response.get_json()
    finally:
        with app.app_context():
            db.engine.dispose()


def fuzzable(document: dict) -> dict:
    """The served document, with request bodies that can be valid.

    It declares a task's ``action`` as any object and cron/zone as any string, so
    generated tasks would (almost) never be valid and the success paths (201,
    200 on an existing task) would go untested. The task request bodies (POST,
    PUT, PATCH) get schemas whose valid values are real actions, expressions,
    zones and parent ids; negative generation still sends everything else.
    Response schemas are left as served (but see ``NULLABLE_TIMES``); an example
    body and path id 3 (a seeded task, and a seeded run) feed the examples phase.
    """
    document = copy.deepcopy(document)
    schemas = document["components"]["schemas"]
    for name in ("Task", "TaskUpdate"):
        request = copy.deepcopy(schemas[name])
        # The contract has read-only fields in a body ignored; leaving them out saves ~50 coverage cases.
        properties = request["properties"] = {key: value for key, value in request["properties"].items()
                                              if not value.get("readOnly")}
        properties["action"] = {"anyOf": VALID_ACTIONS}
        properties["cron_expression"] = {"type": "string", "enum": CRON_EXAMPLES, "nullable": True}
        properties["timezone"] = {"type": "string", "enum": ZONE_EXAMPLES}
        properties["depends_on"]["items"] = {"type": "integer", "enum": [1, 2, 3]}
        request["example"] = {"name": f"from-the-{name}-example", "cron_expression": "@daily",
                              "action": {"type": "http", "url": "http://example.com/"}}
        schemas[f"{name}Request"] = request
    for operations in document["paths"].values():
        for parameter in operations.get("parameters", []):
            if parameter["in"] == "path":
                parameter["example"] = 3
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            if body.get("schema", {}).get("$ref", "").startswith("#/components/schemas/Task"):
                body["schema"] = {"$ref": body["schema"]["$ref"] + "Request"}
    # The served document does not mark these nullable, though the contract says "time or null" (a disabled
    # task, a task that never ran): test_responses_conform_to_the_served_openapi_document reports that against
    # the document as served; here it is patched so that the fuzzer keeps checking every other part of responses.
    for field in NULLABLE_TIMES:
        schemas["Task"]["properties"][field] = {**schemas["Task"]["properties"][field], "nullable": True}
    return document


SCHEMA = schemathesis.openapi.from_dict(
    fuzzable(openapi_document()),
    config=SchemathesisConfig.from_dict({
        "seed": 20261128,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        # PUT and PATCH validate bodies with POST's schema: their coverage phase would repeat POST's hundreds of
        # boundary bodies only to meet the same validation. They keep the examples and fuzzing phases.
        "operations": [{"include-path": "/api/tasks/{task_id}/", "include-method": ["PUT", "PATCH"],
                        "phases": {"coverage": {"enabled": False}}}],
    }),
)


# One pytest item per operation and database. The schema is loaded eagerly from a throwaway app and each case
# is sent to the test's own app (`app=`): schemathesis.pytest.from_fixture, the lazy alternative, fails on
# pytest 9.2 (it sets `Function._nodeid`, which pytest no longer has).
@SCHEMA.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
def test_schemathesis_finds_no_server_error(case, app, token, seeded):
    # The cases of one operation share its app: state piles up, as it would in production.
    case.call_and_validate(
        app=app,
        headers={"Authorization": f"Bearer {token}"},
        checks=[not_a_server_error, response_schema_conformance],
    )


def test_responses_conform_to_the_served_openapi_document(app, client, seeded):
    """Each operation's success (and a few error) answers, validated against /api/openapi.json as served."""
    served = schemathesis.openapi.from_dict(openapi_document())
    item, log = "/api/tasks/{task_id}/", "/api/logs/{run_id}/"
    requests = [
        ("GET", "/api/tasks/", "/api/tasks/", None),
        ("GET", item, "/api/tasks/2/", None),
        ("POST", "/api/tasks/", "/api/tasks/", task_body(name="conform")),
        ("PUT", item, "/api/tasks/3/", task_body(name="gamma", enabled=False)),
        ("PATCH", item, "/api/tasks/3/", {"description": "patched"}),
        ("POST", "/api/tasks/{task_id}/toggle/", "/api/tasks/1/toggle/", None),
        ("POST", "/api/tasks/{task_id}/run/", "/api/tasks/1/run/", None),
        ("DELETE", item, "/api/tasks/4/", None),
        ("GET", "/api/logs/", "/api/logs/", None),
        ("GET", log, "/api/logs/3/", None),
        ("GET", "/api/stats/", "/api/stats/", None),
        ("GET", "/api/stats/", "/api/stats/?task_id=2", None),
        ("GET", "/api/schedule/preview/", "/api/schedule/preview/?cron_expression=@daily", None),
        ("GET", "/api/health", "/api/health", None),
        ("GET", item, "/api/tasks/999/", None),
        ("POST", "/api/tasks/", "/api/tasks/", {}),
    ]
    failures = Failures()
    for method, template, path, body in requests:
        response = call(client.open, path, method=method, json=body)
        if isinstance(response, str):
            failures.check(False, f"{method} {path}", response)
            continue
        try:
            served[template][method].validate_response(response)
        except (AssertionError, FailureGroup) as exc:
            for problem in getattr(exc, "exceptions", [exc]):
                lines = [line.strip() for line in str(problem).splitlines() if line.strip()]
                where = next((line for line in lines if line.startswith("Schema at")), "").rstrip(":")
                failures.check(False, f"{method} {path} -> {response.status_code}: {' '.join(lines[1:2])} ({where})")
    failures.assert_none()


# --- request size -------------------------------------------------------------------------------------------

LIMIT = 2048


@pytest.fixture
def limited(db_kind, tmp_path, monkeypatch):
    """An app built with MAX_REQUEST_BYTES=2048 (the documented variable), a client and its one task."""
    monkeypatch.setenv("MAX_REQUEST_BYTES", str(LIMIT))
    app = make_app(database_url(db_kind, tmp_path))
    reset_database(app)
    with app.app_context():
        token = issue_token("limited")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    yield app, client, create(client, name="small")
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def over_limit_requests(client, path: str) -> tuple[dict[str, Callable], dict[str, Callable]]:
    """(JSON bodies the endpoint reads, bodies it does not read as JSON), each over LIMIT."""
    big = raw_json(task_body(description="x" * (2 * LIMIT)))
    big_patch = raw_json({"description": "y" * (2 * LIMIT)})
    read = {
        "POST json": lambda: client.post("/api/tasks/", data=big, headers=JSON_HEADERS),
        "PUT json": lambda: client.put(path, data=big, headers=JSON_HEADERS),
        "PATCH json": lambda: client.patch(path, data=big_patch, headers=JSON_HEADERS),
        "POST json, chunked (no Content-Length)": lambda: client.post(
            "/api/tasks/", input_stream=io.BytesIO(big.encode()), headers=JSON_HEADERS,
            environ_overrides={"wsgi.input_terminated": True}),
        "POST json, Content-Length understated": lambda: client.post(
            "/api/tasks/", data=big, headers={**JSON_HEADERS, "Content-Length": "100"}),
    }
    unread = {
        "POST text/plain": lambda: client.post("/api/tasks/", data=big, headers={"Content-Type": "text/plain"}),
        "POST form-encoded": lambda: client.post("/api/tasks/", data={"description": "x" * (2 * LIMIT)}),
        "POST multipart": lambda: client.post("/api/tasks/", data={"f": (io.BytesIO(b"x" * 2 * LIMIT), "a.json")}),
        "PATCH text/plain": lambda: client.patch(path, data=big, headers={"Content-Type": "text/plain"}),
        "POST toggle (takes no body)": lambda: client.post(f"{path}toggle/", data=big, headers=JSON_HEADERS),
        "POST run (takes no body)": lambda: client.post(f"{path}run/", data=big, headers=JSON_HEADERS),
    }
    return read, unread


def check_over_limit(app, client, task: dict, requests: dict[str, Callable]) -> None:
    failures = Failures()
    for label, request in requests.items():
        response = call(request)
        failures.check(is_json_error(response, {413}), f"{label} (a body over {LIMIT} bytes)", response)
    # Nothing was stored or changed; a body just under the limit is fine.
    failures.check(task_count(app) == 1, f"tasks stored: {task_count(app)}")
    now = client.get(f"/api/tasks/{task['id']}/").get_json()
    failures.check(now == task, f"task changed: {now}")
    response = client.post("/api/tasks/", json=task_body(description="z" * (LIMIT - 400)))
    failures.check(response.status_code == 201, "a body under the limit", response)
    failures.assert_none()


def test_a_json_body_over_max_request_bytes_gets_413_json(limited):
    app, client, task = limited
    check_over_limit(app, client, task, over_limit_requests(client, f"/api/tasks/{task['id']}/")[0])


def test_a_body_over_max_request_bytes_gets_413_even_where_it_would_not_be_read_as_json(limited):
    """The contract: MAX_REQUEST_BYTES is the largest body *accepted*; a larger one gets 413, whatever it holds."""
    app, client, task = limited
    check_over_limit(app, client, task, over_limit_requests(client, f"/api/tasks/{task['id']}/")[1])


# --- deep JSON ----------------------------------------------------------------------------------------------


def nested(depth: int, kind: str = "array") -> str:
    return "[" * depth + "]" * depth if kind == "array" else '{"a":' * depth + "1" + "}" * depth


def test_json_nested_100000_deep_is_400(app, client, seeded):
    deep, deep_object = nested(100_000), nested(100_000, "object")
    bodies = {
        "top-level array": deep,
        "top-level object": deep_object,
        "unclosed array": "[" * 100_000,
        "in action.body": raw_json(task_body(action={**HTTP, "body": "@"}), deep),
        "in action.args": raw_json(task_body(action={**PYTHON, "args": "@"}), deep),
        "in action.kwargs": raw_json(task_body(action={**PYTHON, "kwargs": "@"}), deep_object),
        "in name": raw_json(task_body(name="@"), deep),
    }
    failures = Failures()
    for label, body in bodies.items():
        for method, path in (("POST", "/api/tasks/"), ("PUT", "/api/tasks/1/"), ("PATCH", "/api/tasks/1/")):
            response = call(client.open, path, method=method, data=body, headers=JSON_HEADERS)
            failures.check(is_json_error(response, {400}), f"{method} {path} {label}", response)
    failures.check(task_count(app) == 3, f"tasks stored: {task_count(app)}")
    failures.assert_none()


def test_json_nested_just_under_the_parsers_limit_never_gets_a_5xx(app, client):
    """Depths the parser still accepts must not blow the stack later (validation, the DB's JSON, the response)."""
    # Where the parser gives up depends on the stack already in use (pytest's, a WSGI server's): sweep a band
    # below the recursion limit, where a parsed value may still be too deep for what handles it next.
    limit = sys.getrecursionlimit()
    failures = Failures()
    for depth in range(max(limit - 150, 10), limit + 10, 3):
        text = raw_json(task_body(name=f"deep-{depth}", action={**HTTP, "body": "@"}), nested(depth))
        response = call(client.post, "/api/tasks/", data=text, headers=JSON_HEADERS)
        ok = not isinstance(response, str) and response.status_code in (201, 400, 422)
        if ok and response.status_code == 201:
            response = call(client.get, f"/api/tasks/{response.get_json()['id']}/")
            ok = not isinstance(response, str) and response.status_code == 200
        failures.check(ok, f"POST /api/tasks/ with action.body nested {depth} deep", response)
    failures.assert_none()


# --- content types and encodings ----------------------------------------------------------------------------


def as_form(body: dict) -> dict:
    return {key: json.dumps(value) if isinstance(value, (dict, list)) else str(value) for key, value in body.items()}


def test_wrong_content_types_get_4xx_json_and_change_nothing(app, client, seeded):
    path = "/api/tasks/1/"
    before = client.get(path).get_json()
    change = {"description": "sent with the wrong content type"}
    full = task_body(name="wrong-type", description=change["description"])
    sends = {
        "text/plain": lambda body: {"data": raw_json(body), "headers": {"Content-Type": "text/plain"}},
        "form-encoded": lambda body: {"data": as_form(body)},
        "multipart": lambda body: {"data": {"json": (io.BytesIO(raw_json(body).encode()), "body.json")},
                                   "content_type": "multipart/form-data"},
        "no Content-Type": lambda body: {"data": raw_json(body)},
        "application/xml": lambda body: {"data": "<task><name>x</name></task>",
                                         "headers": {"Content-Type": "application/xml"}},
        "text/json": lambda body: {"data": raw_json(body), "headers": {"Content-Type": "text/json"}},
    }
    failures = Failures()
    for label, send in sends.items():
        for method, url, body in (("POST", "/api/tasks/", full), ("PUT", path, full), ("PATCH", path, change)):
            response = call(client.open, url, method=method, **send(body))
            failures.check(is_json_error(response, {400, 415, 422}), f"{method} {url} as {label}", response)
    failures.check(task_count(app) == 3, f"tasks stored: {task_count(app)}")
    after = client.get(path).get_json()
    failures.check(after == before, f"task 1 changed: {after}")
    failures.assert_none()


def test_bodies_that_are_not_utf8_json_get_400(app, client, seeded):
    valid = raw_json(task_body(name="encoded"))
    bodies = {
        "invalid UTF-8 bytes": b'{"name": "\xff\xfe", "action": {}}',
        "overlong UTF-8": b'{"name": "\xc0\xaf"}',
        "UTF-8-encoded surrogate (CESU)": b'{"name": "\xed\xa0\x80"}',
        "truncated UTF-8": b'{"name": "\xe2\x82"}',
        "Latin-1": '{"name": "caf\xe9"}'.encode("latin-1"),
        "UTF-16": valid.encode("utf-16"),
        "UTF-32": valid.encode("utf-32"),
        "trailing garbage after the JSON": valid.encode() + b" trailing",
        "single quotes": b"{'name': 'x'}",
    }
    failures = Failures()
    for label, body in bodies.items():
        for method, path in (("POST", "/api/tasks/"), ("PUT", "/api/tasks/1/"), ("PATCH", "/api/tasks/1/")):
            response = call(client.open, path, method=method, data=body, headers=JSON_HEADERS)
            failures.check(is_json_error(response, {400}), f"{method} {path} {label}", response)
    failures.check(task_count(app) == 3, f"tasks stored: {task_count(app)}")
    failures.assert_none()


def test_json_values_that_are_not_objects_get_422(client, seeded):
    failures = Failures()
    # NaN is no JSON value at all, so 400 is as right as 422 there.
    for text, statuses in (("[]", {422}), ("[1, 2]", {422}), ('"a string"', {422}), ("42", {422}),
                           ("true", {422}), ("null", {422}), ("NaN", {400, 422})):
        for method, path in (("POST", "/api/tasks/"), ("PUT", "/api/tasks/1/"), ("PATCH", "/api/tasks/1/")):
            response = call(client.open, path, method=method, data=text, headers=JSON_HEADERS)
            failures.check(is_json_error(response, statuses), f"{method} {path} body {text}", response)
    failures.assert_none()


# --- lone surrogates and NUL in every string field ----------------------------------------------------------

# (field, a valid task body with the given string in that field, the top-level field the 422 must name)
STRING_FIELDS: list[tuple[str, Callable[[str], dict], str | None]] = [
    ("name", lambda s: task_body(name=s), "name"),
    ("description", lambda s: task_body(description=s), "description"),
    ("cron_expression", lambda s: task_body(cron_expression=s), "cron_expression"),
    ("timezone", lambda s: task_body(timezone=s), "timezone"),
    ("concurrency_policy", lambda s: task_body(concurrency_policy=s), "concurrency_policy"),
    ("action.type", lambda s: task_body(action={**HTTP, "type": s}), "action"),
    ("shell command", lambda s: task_body(action={**SHELL, "command": s}), "action"),
    ("shell cwd", lambda s: task_body(action={**SHELL, "cwd": s}), "action"),
    ("shell env key", lambda s: task_body(action={**SHELL, "env": {s: "v"}}), "action"),
    ("shell env value", lambda s: task_body(action={**SHELL, "env": {"K": s}}), "action"),
    ("http url", lambda s: task_body(action={**HTTP, "url": f"http://e.com/{s}"}), "action"),
    ("http method", lambda s: task_body(action={**HTTP, "method": s}), "action"),
    ("http header name", lambda s: task_body(action={**HTTP, "headers": {s: "v"}}), "action"),
    ("http header value", lambda s: task_body(action={**HTTP, "headers": {"X": s}}), "action"),
    ("http body string", lambda s: task_body(action={**HTTP, "body": s}), "action"),
    ("http body nested", lambda s: task_body(action={**HTTP, "body": {"a": [{"b": s}]}}), "action"),
    ("http body key", lambda s: task_body(action={**HTTP, "body": {s: 1}}), "action"),
    ("python callable", lambda s: task_body(action={**PYTHON, "callable": f"m:f{s}"}), "action"),
    ("python args item", lambda s: task_body(action={**PYTHON, "args": [1, s]}), "action"),
    ("python kwargs key", lambda s: task_body(action={**PYTHON, "kwargs": {s: 1}}), "action"),
    ("python kwargs value", lambda s: task_body(action={**PYTHON, "kwargs": {"k": [s]}}), "action"),
    ("unknown field's name", lambda s: {**task_body(), s: 1}, None),
]


def test_lone_surrogates_and_nul_in_every_string_field_get_422(app, client, seeded):
    failures = Failures()
    for field, make_body, error_key in STRING_FIELDS:
        for bad_label, bad in LONE_SURROGATES_AND_NUL.items():
            body = make_body(bad)
            patch_body = {"name": bad} if field == "name" else {key: body[key] for key in body if key != "name"}
            requests = [("POST", "/api/tasks/", body), ("PATCH", "/api/tasks/3/", patch_body)]
            if "." not in field and " " not in field:  # PUT loads bodies with POST's schema: top-level is enough
                requests.append(("PUT", "/api/tasks/3/", body))
            for method, path, sent in requests:
                response = call(client.open, path, method=method, data=raw_json(sent), headers=JSON_HEADERS)
                failures.check(names_field(response, error_key),
                               f"{method} {path} {bad_label} in {field} (the 422 must name {error_key!r})", response)
    failures.check(task_count(app) == 3, f"tasks stored: {task_count(app)}")
    failures.assert_none()


def test_lone_surrogates_nul_and_undecodable_bytes_in_query_strings_never_get_a_5xx(client, seeded):
    queries = {
        "/api/tasks/?q=": "q", "/api/tasks/?cursor=": "cursor", "/api/tasks/?status=": "status",
        "/api/logs/?status=": "status", "/api/logs/?trigger=": "trigger", "/api/logs/?since=": "since",
        "/api/schedule/preview/?cron_expression=": "cron_expression",
        "/api/schedule/preview/?cron_expression=@daily&timezone=": "timezone",
    }
    failures = Failures()
    for prefix, param in queries.items():
        response = call(client.get, prefix + "a%00b")
        failures.check(names_field(response, param, "query"), f"GET {prefix}a%00b (NUL), naming {param}", response)
        # Bytes that are not UTF-8 (\xff, an encoded surrogate): decoded with replacement, so any 2xx/4xx will do.
        for encoded in ("%FF%FE", "%ED%A0%80", "%C0%AF"):
            response = call(client.get, prefix + encoded)
            ok = not isinstance(response, str) and (
                response.status_code == 200 or is_json_error(response, {400, 404, 422}))
            failures.check(ok, f"GET {prefix}{encoded}", response)
    failures.assert_none()


# --- SQL-looking strings ------------------------------------------------------------------------------------


def test_sql_looking_strings_are_stored_and_matched_literally(app, client, seeded):
    tables = table_names(app)
    assert {"task", "run"} <= tables
    names = [*SQL_LOOKING, "100%", "a_b", "back\\slash", "plain"]
    failures = Failures()
    created = {}
    for name in names:
        response = call(client.post, "/api/tasks/", json=task_body(name=name, description=f"{name} -- {name}"))
        ok = not isinstance(response, str) and response.status_code == 201
        failures.check(ok, f"create {name!r}", response)
        if ok:
            created[name] = response.get_json()["id"]
    for name, task_id in created.items():
        body = client.get(f"/api/tasks/{task_id}/").get_json()
        ok = body["name"] == name and body["description"] == f"{name} -- {name}"
        failures.check(ok, f"read back {name!r}", body)
    # A duplicate of a SQL-looking name is a plain 409, not a second row or an error.
    response = call(client.post, "/api/tasks/", json=task_body(name=SQL_LOOKING[0]))
    failures.check(is_json_error(response, {409}), "duplicate SQL-looking name", response)

    every_name = ["alpha", "beta", "gamma", *created]
    for q in [*SQL_LOOKING, "%", "_", "\\", "%%", "' OR '1'='1", "DROP"]:
        response = call(client.get, "/api/tasks/", query_string={"q": q, "limit": 500})
        expected = sorted(name for name in every_name if q.lower() in name.lower())
        got = response if isinstance(response, str) or response.status_code != 200 else \
            sorted(item["name"] for item in response.get_json()["items"])
        failures.check(got == expected, f"q={q!r} must match the names containing it: expected {expected}, got", got)

    for path, query in (("/api/tasks/", {"cursor": SQL_LOOKING[0]}), ("/api/logs/", {"cursor": SQL_LOOKING[1]}),
                        ("/api/logs/", {"task_id": "1 OR 1=1"}), ("/api/stats/", {"task_id": "1; DROP TABLE task"}),
                        ("/api/logs/", {"status": "success' OR '1'='1"}), ("/api/tasks/", {"enabled": "true OR 1=1"}),
                        ("/api/schedule/preview/", {"cron_expression": "@daily", "timezone": SQL_LOOKING[0]}),
                        ("/api/schedule/preview/", {"cron_expression": "* * * * *'; DROP TABLE task; --"})):
        response = call(client.get, path, query_string=query)
        failures.check(is_json_error(response, {422}), f"GET {path} {query}", response)
    for path in ("/api/tasks/1%20OR%201=1/", "/api/tasks/1;DROP%20TABLE%20task/", "/api/logs/1'--/"):
        response = call(client.get, path)
        failures.check(is_json_error(response, {404}), f"GET {path}", response)

    failures.check(table_names(app) == tables, f"tables now {sorted(table_names(app))}")
    failures.check(task_count(app) == 3 + len(created), f"tasks stored: {task_count(app)}")
    failures.assert_none()


# --- numbers out of range, in paths, queries and bodies -----------------------------------------------------

BAD_PATH_IDS = ("0", "-1", str(INT_MAX + 1), str(2**63), str(2**64), "9" * 30, "9" * 5000,
                "1.5", "1e3", "0x1", "+1", "1%20", "%201", "NaN", "abc")
ITEM_REQUESTS = (("GET", "/api/tasks/{}/", None), ("PUT", "/api/tasks/{}/", "task"),
                 ("PATCH", "/api/tasks/{}/", {"description": "x"}), ("DELETE", "/api/tasks/{}/", None),
                 ("POST", "/api/tasks/{}/toggle/", None), ("POST", "/api/tasks/{}/run/", None),
                 ("GET", "/api/logs/{}/", None))


def test_out_of_range_and_malformed_path_ids_get_404(client, seeded):
    failures = Failures()
    for task_id in BAD_PATH_IDS:
        for method, template, body in ITEM_REQUESTS:
            path = template.format(task_id)
            response = call(client.open, path, method=method, json=task_body() if body == "task" else body)
            failures.check(is_json_error(response, {404}), f"{method} {path[:60]}", response)
    failures.assert_none()


def test_out_of_range_and_malformed_numbers_in_query_params_get_422(client, seeded):
    bad = ("-1", "1.5", "1e2", "2.0", str(INT_MAX + 1), str(2**63), "9" * 30, "9" * 5000,
           "NaN", "inf", "", "abc", "0x10")
    params = (("/api/tasks/", "limit", ("0", "501")), ("/api/logs/", "limit", ("0", "501")),
              ("/api/logs/", "task_id", ("0",)), ("/api/stats/", "task_id", ("0",)),
              ("/api/schedule/preview/", "count", ("0", "101")))
    failures = Failures()
    for path, param, edges in params:
        for value in (*bad, *edges):
            query = {param: value}
            if path == "/api/schedule/preview/":
                query["cron_expression"] = "@daily"
            response = call(client.get, path, query_string=query)
            failures.check(names_field(response, param, "query"), f"GET {path}?{param}={value[:20]}", response)
    failures.assert_none()


def cursor_for(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_cursors_that_were_never_given_out_get_422_or_a_consistent_page(client, seeded):
    failures = Failures()
    malformed = {"garbage": "!!!", "not base64": "a" * 5, "wrong prefix": cursor_for("pk:1"),
                 "negative": cursor_for("id:-1"), "float": cursor_for("id:1.5"), "2**63": cursor_for(f"id:{2**63}"),
                 "5000 digits": cursor_for("id:" + "9" * 5000)[:200], "non-ASCII": "é"}
    for path in ("/api/tasks/", "/api/logs/"):
        for label, value in malformed.items():
            response = call(client.get, path, query_string={"cursor": value})
            failures.check(is_json_error(response, {422}), f"GET {path} cursor {label}", response)
        # Well-formed, at or past the largest id a row can have (ids are 32-bit on PostgreSQL): 422, or a page
        # consistent with it, never a database error.
        for last_id in (INT_MAX, INT_MAX + 1, 2**40, 2**63 - 1):
            response = call(client.get, path, query_string={"cursor": cursor_for(f"id:{last_id}")})
            ok = not isinstance(response, str) and response.status_code in (200, 422)
            if ok and response.status_code == 200:
                # Newest first (logs), every run is "before" a huge cursor; oldest first (tasks), none is "after" it.
                ok = (response.get_json()["items"] != []) == (path == "/api/logs/")
            elif ok:
                ok = is_json_error(response, {422})
            failures.check(ok, f"GET {path} cursor id:{last_id}", response)
    failures.assert_none()


def test_extreme_datetimes_in_query_params_never_get_a_5xx(client, seeded):
    values = ("0001-01-01T00:00:00+14:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00",
              "9999-12-31T23:59:59.999999Z", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-01-01T25:00:00Z",
              "2026-01-01T00:00:00+99:00", "99999-01-01T00:00:00Z", "-0001-01-01T00:00:00Z", "now", "1" * 300)
    failures = Failures()
    for value in values:
        for path, query in (("/api/logs/", {"since": value}), ("/api/logs/", {"until": value}),
                            ("/api/schedule/preview/", {"cron_expression": "* * * * *", "start": value})):
            response = call(client.get, path, query_string=query)
            ok = not isinstance(response, str) and (response.status_code == 200 or is_json_error(response, {422}))
            failures.check(ok, f"GET {path} {query}", response)
    failures.assert_none()


INTEGER_FIELDS = ("timeout_seconds", "max_retries", "retry_delay_seconds", "retry_max_delay_seconds",
                  "misfire_grace_seconds", "depends_on", "expect_status")
BAD_INTEGERS = {"2**31": 2**31, "2**63": 2**63, "10**30": 10**30, "-1": -1, "1.5": 1.5, "1e308": 1e308,
                "string": "5", "bool": True, "object": {"a": 1}}
# Tokens Python's parser takes but JSON does not have: the body is not JSON (400), or the field is invalid (422).
NON_JSON_NUMBERS = {"NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity", "1e400": "1e400",
                    "5000-digit integer": "9" * 5000}


def with_integer(field: str, value: Any) -> dict:
    """A task body with ``value`` in the integer field ``field`` (depends_on: as its one item)."""
    if field == "depends_on":
        return task_body(depends_on=[value])
    if field == "expect_status":
        return task_body(action={**HTTP, "expect_status": value})
    return task_body(**{field: value})


def test_out_of_range_and_mistyped_numbers_in_json_fields_get_4xx(app, client, seeded):
    failures = Failures()

    def send(label: str, text: str, statuses: set[int], field: str, put: bool) -> None:
        name = re.search(r'"name": "(hostile-\d+)"', text).group(1)
        for method, path in (("POST", "/api/tasks/"), ("PUT", "/api/tasks/3/"))[:2 if put else 1]:
            # A name of its own for each request: a wrongly accepted POST must not turn the PUT into a 409.
            sent = text.replace(f'"{name}"', f'"{name}-{method}"')
            response = call(client.open, path, method=method, data=sent, headers=JSON_HEADERS)
            ok = is_json_error(response, statuses) and (response.status_code != 422 or names_field(response, field))
            failures.check(ok, f"{method} {path} {label}", response)

    for field in INTEGER_FIELDS:
        error_key = "action" if field == "expect_status" else field
        put = field in ("timeout_seconds", "depends_on")  # PUT shares POST's schema: two fields are enough there
        for label, value in BAD_INTEGERS.items():
            send(f"{field}={label}", raw_json(with_integer(field, value)), {422}, error_key, put)
        for label, token in NON_JSON_NUMBERS.items():
            send(f"{field}={label}", raw_json(with_integer(field, "@"), token), {400, 422}, error_key, put)

    # Free-form JSON (an http body, python args and kwargs) takes any JSON value, and only JSON values.
    for label, token in NON_JSON_NUMBERS.items():
        for where, action in (("action.body", {**HTTP, "body": {"x": "@"}}),
                              ("action.args", {**PYTHON, "args": ["@"]}),
                              ("action.kwargs", {**PYTHON, "kwargs": {"k": "@"}})):
            send(f"{label} in {where}", raw_json(task_body(action=action), token), {400, 422}, "action", True)
    failures.check(task_count(app) == 3, f"tasks stored: {task_count(app)}")
    failures.assert_none()


def test_big_integers_in_free_form_json_round_trip_exactly(client, seeded):
    values = [2**31, 2**63, -(2**70), 10**30]
    task = create(client, action={**PYTHON, "args": values, "kwargs": {"big": 2**64}})
    again = client.get(f"/api/tasks/{task['id']}/").get_json()
    assert again["action"]["args"] == values and again["action"]["kwargs"] == {"big": 2**64}, again["action"]


# --- long strings -------------------------------------------------------------------------------------------


def test_strings_over_their_limits_get_422_naming_the_field(app, client, seeded):
    huge = "x" * 200_000  # well under MAX_REQUEST_BYTES (1 MiB by default)
    cases = {
        "name 201": (task_body(name="n" * 201), "name"),
        "name 200k": (task_body(name=huge), "name"),
        "name 201 astral chars": (task_body(name="\U0001F680" * 201), "name"),
        "description 10001": (task_body(description="d" * 10_001), "description"),
        "cron_expression 201": (task_body(cron_expression="*" * 201), "cron_expression"),
        "cron_expression 200k": (task_body(cron_expression="* " * 100_000), "cron_expression"),
        "timezone 65": (task_body(timezone="Z" * 65), "timezone"),
        "timezone 200k": (task_body(timezone="Europe/" * 28_000), "timezone"),
        "shell command 65537": (task_body(action={**SHELL, "command": "c" * 65_537}), "action"),
        "shell cwd 4097": (task_body(action={**SHELL, "cwd": "/" * 4097}), "action"),
        "unknown field with a 200k name": ({**task_body(), huge: 1}, None),
        "python callable 200k": (task_body(action={**PYTHON, "callable": "m:" + "f" * 200_000 + "("}), "action"),
    }
    failures = Failures()
    for label, (body, field) in cases.items():
        for method, path in (("POST", "/api/tasks/"), ("PUT", "/api/tasks/3/")):
            response = call(client.open, path, method=method, data=raw_json(body), headers=JSON_HEADERS)
            failures.check(names_field(response, field), f"{method} {path} {label}", response)
    long_queries = (("/api/tasks/", {"q": "q" * 201}, "q"), ("/api/logs/", {"cursor": "c" * 201}, "cursor"),
                    ("/api/schedule/preview/", {"cron_expression": "* " * 5000}, "cron_expression"),
                    ("/api/schedule/preview/", {"cron_expression": "@daily", "timezone": "T" * 65}, "timezone"))
    for path, query, param in long_queries:
        response = call(client.get, path, query_string=query)
        failures.check(names_field(response, param, "query"), f"GET {path} with a {len(query[param])}-char {param}",
                       response)
    failures.check(task_count(app) == 3, f"tasks stored: {task_count(app)}")
    failures.assert_none()


def test_long_strings_in_fields_without_a_declared_limit_never_get_a_5xx(client, seeded):
    long = "a" * 300_000
    actions = {
        "http url": {"type": "http", "url": "http://example.com/" + long},
        "http url host": {"type": "http", "url": f"http://{long}.com/"},
        "http header value": {**HTTP, "headers": {"X-Long": long}},
        "http body": {**HTTP, "body": long},
        "shell env value": {**SHELL, "env": {"LONG": long}},
        "python args": {**PYTHON, "args": [long]},
    }
    failures = Failures()
    for label, action in actions.items():
        response = call(client.post, "/api/tasks/", json=task_body(action=action))
        ok = not isinstance(response, str) and (response.status_code == 201 or is_json_error(response, {422}))
        if ok and response.status_code == 201:
            sent = response.get_json()["action"]
            response = call(client.get, f"/api/tasks/{response.get_json()['id']}/")
            ok = not isinstance(response, str) and response.status_code == 200
            ok = ok and response.get_json()["action"] == sent
        failures.check(ok, f"POST a 300k-char {label}", response)
    failures.assert_none()


# --- unicode ------------------------------------------------------------------------------------------------


def test_unicode_is_stored_returned_and_searched_literally(app, client, seeded):
    names = ["日本語のタスク", "emoji \U0001F680\U0001F525", "rtl \u202eevil\u202c", "zero\u200bwidth",
             "e\u0301 vs \u00e9", "nonchar \uffff", "astral \U0001D518\U0001D52B", "\U0001F680" * 200,
             "tab\tnew\nline\rescape\x1b", "\u00a0nbsp\u3000ideographic space", "quote\" back\\ slash'"]
    failures = Failures()
    for name in names:
        response = call(client.post, "/api/tasks/", json=task_body(name=name, description=name * 3))
        ok = not isinstance(response, str) and response.status_code == 201
        failures.check(ok, f"create {name[:30]!r}", response)
        if ok:
            again = client.get(f"/api/tasks/{response.get_json()['id']}/").get_json()
            ok = again["name"] == name and again["description"] == name * 3
            failures.check(ok, f"read back {name[:30]!r}", again)
    for q, expected in (("\U0001F680\U0001F525", ["emoji \U0001F680\U0001F525"]), ("日本語", ["日本語のタスク"]),
                        ("\u200b", ["zero\u200bwidth"]), ("\u202e", ["rtl \u202eevil\u202c"])):
        response = call(client.get, "/api/tasks/", query_string={"q": q})
        got = response if isinstance(response, str) else [item["name"] for item in response.get_json()["items"]]
        failures.check(got == expected, f"q={q!r}: expected {expected}, got", got)
    # Look-alikes of valid values are not valid values.
    look_alikes = (("fullwidth digit in cron", "cron_expression", "\uff15 * * * *"),
                   ("no-break spaces in cron", "cron_expression", "*\u00a0*\u00a0*\u00a0*\u00a0*"),
                   ("fullwidth solidus in zone", "timezone", "Europe\uff0fBerlin"),
                   ("Cyrillic o in an enum", "concurrency_policy", "f\u043erbid"))
    for label, field, value in look_alikes:
        response = call(client.post, "/api/tasks/", json=task_body(**{field: value}))
        failures.check(names_field(response, field), label, response)
    failures.assert_none()


def test_line_breaks_where_they_can_never_work_get_422(client, seeded):
    """A callable that cannot be imported and HTTP headers that cannot be sent (CR/LF: header injection; requests
    raises InvalidHeader for each of these at run time) are refused when the task is written, not stored to fail
    at every run."""
    cases = {
        "callable with a trailing newline": {**PYTHON, "callable": "m:f\n"},
        "callable with a trailing CR": {**PYTHON, "callable": "m:f\r"},
        "header value with CR/LF": {**HTTP, "headers": {"X-A": "v\r\nInjected: 1"}},
        "header value with LF": {**HTTP, "headers": {"X-A": "v\nInjected: 1"}},
        "header name with CR/LF": {**HTTP, "headers": {"X-A\r\nInjected": "v"}},
        "empty header name": {**HTTP, "headers": {"": "v"}},
    }
    failures = Failures()
    for label, action in cases.items():
        response = call(client.post, "/api/tasks/", json=task_body(action=action))
        failures.check(names_field(response, "action"), label, response)
    failures.assert_none()


# --- methods ------------------------------------------------------------------------------------------------

NOT_ALLOWED = [
    ("DELETE", "/api/tasks/"), ("PUT", "/api/tasks/"), ("PATCH", "/api/tasks/"), ("POST", "/api/tasks/1/"),
    ("GET", "/api/tasks/1/toggle/"), ("PUT", "/api/tasks/1/toggle/"), ("DELETE", "/api/tasks/1/toggle/"),
    ("GET", "/api/tasks/1/run/"), ("DELETE", "/api/tasks/1/run/"), ("POST", "/api/logs/"),
    ("DELETE", "/api/logs/"), ("PUT", "/api/logs/1/"), ("DELETE", "/api/logs/1/"), ("POST", "/api/stats/"),
    ("POST", "/api/schedule/preview/"), ("POST", "/api/health"), ("DELETE", "/api/health"),
    ("POST", "/api/openapi.json"), ("TRACE", "/api/tasks/"), ("CONNECT", "/api/tasks/"),
    ("PROPFIND", "/api/tasks/1/"), ("FOO", "/api/tasks/"), ("QUERY", "/api/logs/"),
]
ALLOWED = {"/api/tasks/": {"GET", "POST"}, "/api/tasks/1/": {"GET", "PUT", "PATCH", "DELETE"},
           "/api/tasks/1/toggle/": {"POST"}, "/api/tasks/1/run/": {"POST"}, "/api/logs/": {"GET"},
           "/api/logs/1/": {"GET"}, "/api/stats/": {"GET"}, "/api/schedule/preview/": {"GET"},
           "/api/health": {"GET"}, "/api/openapi.json": {"GET"}}


def send_not_allowed(client, method: str, path: str):
    return call(client.open, path, method=method, json=task_body() if method in ("PUT", "POST", "PATCH") else None)


def test_methods_not_allowed_get_405_json_and_change_nothing(app, client, seeded):
    before = client.get("/api/tasks/1/").get_json()
    failures = Failures()
    for method, path in NOT_ALLOWED:
        response = send_not_allowed(client, method, path)
        failures.check(is_json_error(response, {405}), f"{method} {path}", response)
    failures.check(task_count(app) == 3, f"tasks stored: {task_count(app)}")
    failures.check(client.get("/api/tasks/1/").get_json() == before, "task 1 changed")
    failures.assert_none()


def test_a_405_names_the_allowed_methods(client, seeded):
    """RFC 9110 15.5.6: the server MUST send an Allow header with a 405."""
    failures = Failures()
    for method, path in NOT_ALLOWED:
        response = send_not_allowed(client, method, path)
        header = "" if isinstance(response, str) else response.headers.get("Allow", "")
        allow = {item.strip() for item in header.split(",") if item.strip()}
        label = f"{method} {path}: Allow={sorted(allow)}, expected {sorted(ALLOWED[path])}"
        failures.check(ALLOWED[path] <= allow, label, response)
    failures.assert_none()
