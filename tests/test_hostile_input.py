"""Hostile input: nothing a client sends may get a 5xx.

Two halves, each run on SQLite and (with TEST_DATABASE_URL) PostgreSQL:

* schemathesis generates requests for every operation of the app's own
  ``/api/openapi.json`` (positive and negative data, its coverage phase and a
  bounded, derandomized fuzzing phase) and calls the WSGI app in-process with
  a valid bearer token. Checks: ``not_a_server_error`` and
  ``response_schema_conformance``. Under ``TESTING`` the app lets an unexpected
  exception propagate, so a would-be 500 fails the test with its traceback.
* hand-written cases for what a generator rarely hits: bodies over
  ``MAX_REQUEST_BYTES`` (413), JSON nested 100,000 deep (400), wrong content
  types, undecodable bytes, lone surrogates and NUL in every string field (422),
  SQL-looking strings (stored and matched literally), out-of-range numbers in
  paths, queries and bodies, extremely long strings, methods not allowed (405).

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
from schemathesis.specs.openapi.checks import response_schema_conformance

from conftest import database_url, make_app, reset_database
from scheduler_service.auth import issue_token
from scheduler_service.extensions import db
from scheduler_service.models import Run, Task

UTC = timezone.utc
INT_MAX = 2**31 - 1
JSON_HEADERS = {"Content-Type": "application/json"}
LONE_SURROGATES_AND_NUL = {"lone high surrogate": "\ud800", "lone low surrogate": "x\udfffy", "NUL": "a\x00b"}
SQL_LOOKING = ("'; DROP TABLE task; --", "%' OR 1=1 --", "Robert'); DROP TABLE run;--", '" OR ""="', "1; SELECT pg_sleep(5)")


# --- helpers ------------------------------------------------------------------------


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


def raw_json(data: Any) -> str:
    """JSON text as a client may send it: non-ASCII escaped, so lone surrogates travel as \\ud800."""
    return json.dumps(data, ensure_ascii=True)


class Failures:
    """The cases of a table-driven test that went wrong, reported all at once."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def check(self, ok: bool, label: str, response: Any = None) -> None:
        if not ok:
            self.items.append(f"{label}: {describe(response) if response is not None else ''}")

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
            started_at=at if status != "pending" else None, finished_at=at + timedelta(seconds=2) if finished else None,
            duration_seconds=2.0 if finished else None, exit_code=0 if status == "success" else None,
            output=output, message="" if status == "success" else "boom", created_at=at,
        ))
        db.session.commit()


@pytest.fixture
def seeded(app, client) -> list[dict]:
    """Three tasks (ids 1..3: a parent, a disabled dependency-only child, a shell task in another zone) and runs 1..4."""
    tasks = [
        create(client, name="alpha", description="the parent"),
        create(client, name="beta", cron_expression=None, depends_on=[1], enabled=False,
               action={"type": "python", "callable": "os.path:join", "args": ["a", 1], "kwargs": {"b": None}}),
        create(client, name="gamma", cron_expression="30 2 * * * 0", timezone="Europe/Berlin", concurrency_policy="allow",
               timeout_seconds=None, action={"type": "shell", "command": "echo hi", "env": {"A": "1"}}),
    ]
    for minute, status in enumerate(("success", "failed", "pending", "skipped")):
        add_run(app, 1, status, minute, output=f"{status} output\n")
    return tasks


# --- schemathesis over the app's own OpenAPI document ---------------------------------

MAX_EXAMPLES = 15  # the fuzzing phase, per operation; the coverage phase adds its own deterministic cases
CRON_EXAMPLES = ["*/5 * * * *", "0 2 * * *", "@daily", "@hourly", "30 1 * * 1-5", "* * * * * */10", "0 0 29 2 *"]
ZONE_EXAMPLES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Pacific/Chatham", "Etc/GMT+12"]
STATUS_LIST = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 100, "maximum": 599}}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
VALID_ACTIONS = [
    {"type": "object", "required": ["type", "command"], "additionalProperties": False, "properties": {
        "type": {"type": "string", "enum": ["shell"]},
        "command": {"type": "string", "minLength": 1, "maxLength": 300},
        "env": STRING_MAP,
        "cwd": {"type": "string", "minLength": 1, "maxLength": 300, "nullable": True},
    }},
    {"type": "object", "required": ["type", "url"], "additionalProperties": False, "properties": {
        "type": {"type": "string", "enum": ["http"]},
        "url": {"type": "string", "enum": ["http://example.com/hook", "https://example.org/a/b?c=d", "http://10.0.0.1:8080/"]},
        "method": {"type": "string", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]},
        "headers": STRING_MAP,
        "body": {},
        "expect_status": {"anyOf": [{"type": "integer", "minimum": 100, "maximum": 599}, STATUS_LIST], "nullable": True},
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
    """The document with reachable valid values added beside what it declares.

    It declares ``action`` as any object and cron/zone as any string, so generated
    tasks would (almost) never be valid and the success paths (201, 200 on an
    existing task, response-schema conformance of a Task) would go untested.
    Every value the original schema allows stays allowed (``anyOf`` with it);
    paths, parameters and responses are untouched.
    """
    document = copy.deepcopy(document)
    for name in ("Task", "TaskUpdate"):
        properties = document["components"]["schemas"][name]["properties"]
        properties["action"] = {"anyOf": [*VALID_ACTIONS, properties["action"]]}
        properties["cron_expression"] = {"anyOf": [{"type": "string", "enum": CRON_EXAMPLES}, properties["cron_expression"]]}
        properties["timezone"] = {"anyOf": [{"type": "string", "enum": ZONE_EXAMPLES}, properties["timezone"]]}
        properties["depends_on"]["items"] = {"anyOf": [{"type": "integer", "enum": [1, 2, 3]}, properties["depends_on"]["items"]]}
        # The served document omits `nullable` here although the contract says "time or null" (a disabled task, a
        # task that never ran). test_responses_conform_to_the_served_openapi_document reports that against the
        # document as served; here it is patched so the fuzzer keeps checking every other part of every response.
        for field in ("last_run_at", "next_run_at"):
            properties[field] = {**properties[field], "nullable": True}
    return document


SCHEMA = schemathesis.openapi.from_dict(
    fuzzable(openapi_document()),
    config=SchemathesisConfig.from_dict({
        "seed": 20261128,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    }),
)


@SCHEMA.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
def test_schemathesis_finds_no_server_error(case, app, token, seeded):
    # The app fixture is shared by the generated cases of one operation: state piles up, as it would in production.
    response = case.call_and_validate(
        app=app,
        headers={"Authorization": f"Bearer {token}"},
        checks=[not_a_server_error, response_schema_conformance],
    )
    import collections
    _DBG.setdefault(case.operation.label, collections.Counter())[response.status_code] += 1
    if case.operation.label == "POST /api/tasks/" and case.meta.generation.mode.name == "POSITIVE" and response.status_code == 422:
        _DBG.setdefault("POSERR", collections.Counter()).update(f"{case.meta.phase.name}:{k}" for k in response.json()["errors"]["json"])
    if case.operation.label == "POST /api/tasks/" and case.meta.generation.mode.name == "POSITIVE":
        _DBG.setdefault("POS", collections.Counter())[(case.meta.phase.name, response.status_code)] += 1


_DBG = {}


def test_zz_dbg():
    for k, v in _DBG.items():
        print(k, dict(v))


# --- request size ----------------------------------------------------------------------

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


def test_a_body_over_max_request_bytes_gets_413_json_whatever_its_type_or_endpoint(limited):
    app, client, task = limited
    path = f"/api/tasks/{task['id']}/"
    big = raw_json(task_body(description="x" * (2 * LIMIT)))
    assert len(big) > LIMIT
    requests = {
        "POST json": lambda: client.post("/api/tasks/", data=big, headers=JSON_HEADERS),
        "PUT json": lambda: client.put(path, data=big, headers=JSON_HEADERS),
        "PATCH json": lambda: client.patch(path, data=raw_json({"description": "y" * (2 * LIMIT)}), headers=JSON_HEADERS),
        "POST json, chunked (no Content-Length)": lambda: client.post(
            "/api/tasks/", input_stream=io.BytesIO(big.encode()), headers=JSON_HEADERS,
            environ_overrides={"wsgi.input_terminated": True}),
        "POST json, Content-Length understated": lambda: client.post(
            "/api/tasks/", data=big, headers={**JSON_HEADERS, "Content-Length": "100"}),
        "POST text/plain": lambda: client.post("/api/tasks/", data=big, headers={"Content-Type": "text/plain"}),
        "POST form-encoded": lambda: client.post("/api/tasks/", data={"description": "x" * (2 * LIMIT)}),
        "POST multipart": lambda: client.post("/api/tasks/", data={"file": (io.BytesIO(b"x" * 2 * LIMIT), "a.json")}),
        "PATCH text/plain": lambda: client.patch(path, data=big, headers={"Content-Type": "text/plain"}),
        "POST toggle with a big body": lambda: client.post(f"{path}toggle/", data=big, headers=JSON_HEADERS),
        "POST run with a big body": lambda: client.post(f"{path}run/", data=big, headers=JSON_HEADERS),
    }
    failures = Failures()
    for label, request in requests.items():
        response = call(request)
        failures.check(is_json_error(response, {413}), f"{label} ({len(big)} bytes > {LIMIT})", response)

    # Nothing was stored or changed; a body just under the limit is fine.
    failures.check(task_count(app) == 1, f"tasks stored: {task_count(app)}")
    now = client.get(path).get_json()
    failures.check(now == task, f"task changed: {now}")
    response = client.post("/api/tasks/", json=task_body(description="z" * (LIMIT - 400)))
    failures.check(response.status_code == 201, "a body under the limit", response)
    failures.assert_none()


# --- deep JSON -----------------------------------------------------------------------------


def nested(depth: int, kind: str = "array") -> str:
    return "[" * depth + "]" * depth if kind == "array" else '{"a":' * depth + "1" + "}" * depth


def test_json_nested_100000_deep_is_400(app, client, seeded):
    depth = 100_000
    bodies = {
        "top-level array": nested(depth),
        "top-level object": nested(depth, "object"),
        "unclosed array": "[" * depth,
        "in action.body": raw_json(task_body(action={"type": "http", "url": "http://e.com/", "body": "@"})).replace('"@"', nested(depth)),
        "in action.args": raw_json(task_body(action={"type": "python", "callable": "m:f", "args": "@"})).replace('"@"', nested(depth)),
        "in action.kwargs": raw_json(task_body(action={"type": "python", "callable": "m:f", "kwargs": "@"})).replace('"@"', nested(depth, "object")),
        "in name": raw_json(task_body(name="@")).replace('"@"', nested(depth)),
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
    for depth in range(max(limit - 200, 10), limit + 10, 3):
        for field, action in (("body", {"type": "http", "url": "http://e.com/"}),
                              ("kwargs", {"type": "python", "callable": "m:f"})):
            value = nested(depth) if field == "body" else nested(depth, "object")
            text = raw_json(task_body(name=f"deep-{field}-{depth}", action={**action, field: "@"})).replace('"@"', value)
            response = call(client.post, "/api/tasks/", data=text, headers=JSON_HEADERS)
            ok = not isinstance(response, str) and response.status_code in (201, 400, 422)
            if ok and response.status_code == 201:
                response = call(client.get, f"/api/tasks/{response.get_json()['id']}/")
                ok = not isinstance(response, str) and response.status_code == 200
            failures.check(ok, f"POST /api/tasks/ with action.{field} nested {depth} deep", response)
    failures.assert_none()


# --- content types and encodings -------------------------------------------------------------


def test_wrong_content_types_get_4xx_json_and_change_nothing(app, client, seeded):
    path = "/api/tasks/1/"
    before = client.get(path).get_json()
    change = {"description": "sent with the wrong content type"}
    full = task_body(name="wrong-type", description=change["description"])
    sends = {
        "text/plain": lambda body: {"data": raw_json(body), "headers": {"Content-Type": "text/plain"}},
        "form-encoded": lambda body: {"data": {key: json.dumps(value) if isinstance(value, (dict, list)) else str(value)
                                               for key, value in body.items()}},
        "multipart": lambda body: {"data": {"json": (io.BytesIO(raw_json(body).encode()), "body.json")},
                                   "content_type": "multipart/form-data"},
        "no Content-Type": lambda body: {"data": raw_json(body)},
        "application/xml": lambda body: {"data": "<task><name>x</name></task>", "headers": {"Content-Type": "application/xml"}},
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
        "empty JSON text, trailing garbage": valid.encode() + b" trailing",
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
    for text, statuses in (("[]", {422}), ("[1, 2]", {422}), ('"a string"', {422}), ("42", {422}), ("true", {422}),
                           ("null", {422}), ("NaN", {400, 422})):
        for method, path in (("POST", "/api/tasks/"), ("PUT", "/api/tasks/1/"), ("PATCH", "/api/tasks/1/")):
            response = call(client.open, path, method=method, data=text, headers=JSON_HEADERS)
            failures.check(is_json_error(response, statuses), f"{method} {path} body {text}", response)
    failures.assert_none()


# --- lone surrogates and NUL in every string field ---------------------------------------------

# (label, a full valid task body with "@" where the bad string goes, the top-level field the error must name)
STRING_FIELDS: list[tuple[str, Callable[[str], dict], str]] = [
    ("name", lambda s: task_body(name=s), "name"),
    ("description", lambda s: task_body(description=s), "description"),
    ("cron_expression", lambda s: task_body(cron_expression=s), "cron_expression"),
    ("timezone", lambda s: task_body(timezone=s), "timezone"),
    ("concurrency_policy", lambda s: task_body(concurrency_policy=s), "concurrency_policy"),
    ("action.type", lambda s: task_body(action={"type": s, "url": "http://e.com/"}), "action"),
    ("shell command", lambda s: task_body(action={"type": "shell", "command": s}), "action"),
    ("shell cwd", lambda s: task_body(action={"type": "shell", "command": "true", "cwd": s}), "action"),
    ("shell env key", lambda s: task_body(action={"type": "shell", "command": "true", "env": {s: "v"}}), "action"),
    ("shell env value", lambda s: task_body(action={"type": "shell", "command": "true", "env": {"K": s}}), "action"),
    ("http url", lambda s: task_body(action={"type": "http", "url": f"http://e.com/{s}"}), "action"),
    ("http method", lambda s: task_body(action={"type": "http", "url": "http://e.com/", "method": s}), "action"),
    ("http header name", lambda s: task_body(action={"type": "http", "url": "http://e.com/", "headers": {s: "v"}}), "action"),
    ("http header value", lambda s: task_body(action={"type": "http", "url": "http://e.com/", "headers": {"X": s}}), "action"),
    ("http body string", lambda s: task_body(action={"type": "http", "url": "http://e.com/", "body": s}), "action"),
    ("http body nested", lambda s: task_body(action={"type": "http", "url": "http://e.com/", "body": {"a": [{"b": s}]}}), "action"),
    ("http body key", lambda s: task_body(action={"type": "http", "url": "http://e.com/", "body": {s: 1}}), "action"),
    ("python callable", lambda s: task_body(action={"type": "python", "callable": f"m:f{s}"}), "action"),
    ("python args item", lambda s: task_body(action={"type": "python", "callable": "m:f", "args": [1, s]}), "action"),
    ("python kwargs key", lambda s: task_body(action={"type": "python", "callable": "m:f", "kwargs": {s: 1}}), "action"),
    ("python kwargs value", lambda s: task_body(action={"type": "python", "callable": "m:f", "kwargs": {"k": [s]}}), "action"),
    ("unknown field's name", lambda s: {**task_body(), s: 1}, None),
]


def test_lone_surrogates_and_nul_in_every_string_field_get_422(app, client, seeded):
    failures = Failures()
    for field, make_body, error_key in STRING_FIELDS:
        for bad_label, bad in LONE_SURROGATES_AND_NUL.items():
            body = make_body(bad)
            patch_body = {key: body[key] for key in body if key not in ("name",)} if field != "name" else {"name": bad}
            for method, path, sent in (("POST", "/api/tasks/", body), ("PUT", "/api/tasks/3/", body),
                                       ("PATCH", "/api/tasks/3/", patch_body)):
                response = call(client.open, path, method=method, data=raw_json(sent), headers=JSON_HEADERS)
                ok = is_json_error(response, {422})
                if ok and error_key is not None:
                    ok = error_key in (response.get_json().get("errors", {}).get("json") or {})
                failures.check(ok, f"{method} {path} {bad_label} in {field} (error must name {error_key!r})", response)
    failures.check(task_count(app) == 3, f"tasks stored: {task_count(app)}")
    failures.assert_none()


def test_lone_surrogates_nul_and_undecodable_bytes_in_query_strings_never_get_a_5xx(client, seeded):
    queries = {
        "/api/tasks/?q=": ("q", 422), "/api/tasks/?cursor=": ("cursor", 422), "/api/tasks/?status=": ("status", 422),
        "/api/logs/?status=": ("status", 422), "/api/logs/?trigger=": ("trigger", 422), "/api/logs/?since=": ("since", 422),
        "/api/schedule/preview/?cron_expression=": ("cron_expression", 422),
        "/api/schedule/preview/?cron_expression=@daily&timezone=": ("timezone", 422),
    }
    failures = Failures()
    for prefix, (param, status) in queries.items():
        response = call(client.get, prefix + "a%00b")
        ok = is_json_error(response, {status}) and param in response.get_json()["errors"]["query"]
        failures.check(ok, f"GET {prefix}a%00b (NUL) must be 422 naming {param}", response)
        # Bytes that are not UTF-8 (\xff, an encoded surrogate): decoded with replacement, so any 2xx/4xx will do.
        for encoded in ("%FF%FE", "%ED%A0%80", "%C0%AF"):
            response = call(client.get, prefix + encoded)
            ok = not isinstance(response, str) and (response.status_code == 200 or is_json_error(response, {400, 404, 422}))
            failures.check(ok, f"GET {prefix}{encoded}", response)
    failures.assert_none()


# --- SQL-looking strings -------------------------------------------------------------------------


def test_sql_looking_strings_are_stored_and_matched_literally(app, client, seeded):
    tables = table_names(app)
    assert {"task", "run"} <= tables
    names = [*SQL_LOOKING, "100%", "a_b", "back\\slash", "plain"]
    failures = Failures()
    created = {}
    for name in names:
        response = call(client.post, "/api/tasks/", json=task_body(name=name, description=f"{name} -- {name}"))
        failures.check(not isinstance(response, str) and response.status_code == 201, f"create {name!r}", response)
        if not isinstance(response, str) and response.status_code == 201:
            created[name] = response.get_json()["id"]
    for name, task_id in created.items():
        body = client.get(f"/api/tasks/{task_id}/").get_json()
        failures.check(body["name"] == name and body["description"] == f"{name} -- {name}", f"read back {name!r}", body)
    # A duplicate of a SQL-looking name is a plain 409, not a second row or an error.
    response = call(client.post, "/api/tasks/", json=task_body(name=SQL_LOOKING[0]))
    failures.check(is_json_error(response, {409}), "duplicate SQL-looking name", response)

    every_name = ["alpha", "beta", "gamma", *created]
    for q in [*SQL_LOOKING, "%", "_", "\\", "%%", "' OR '1'='1", "DROP"]:
        response = call(client.get, "/api/tasks/", query_string={"q": q, "limit": 500})
        expected = sorted(name for name in every_name if q.lower() in name.lower())
        got = sorted(item["name"] for item in response.get_json()["items"]) if not isinstance(response, str) and \
            response.status_code == 200 else response
        failures.check(got == expected, f"q={q!r} must match names containing it literally: expected {expected}, got", got)

    for path, query in (("/api/tasks/", {"cursor": SQL_LOOKING[0]}), ("/api/logs/", {"cursor": SQL_LOOKING[1]}),
                        ("/api/logs/", {"task_id": "1 OR 1=1"}), ("/api/stats/", {"task_id": "1; DROP TABLE task"}),
                        ("/api/logs/", {"status": "success' OR '1'='1"}), ("/api/tasks/", {"enabled": "true OR 1=1"}),
                        ("/api/schedule/preview/", {"cron_expression": "@daily", "timezone": "UTC'; DROP TABLE task; --"}),
                        ("/api/schedule/preview/", {"cron_expression": "* * * * *'; DROP TABLE task; --"})):
        response = call(client.get, path, query_string=query)
        failures.check(is_json_error(response, {422}), f"GET {path} {query}", response)
    for path in ("/api/tasks/1%20OR%201=1/", "/api/tasks/1;DROP%20TABLE%20task/", "/api/logs/1'--/"):
        response = call(client.get, path)
        failures.check(is_json_error(response, {404}), f"GET {path}", response)

    failures.check(table_names(app) == tables, f"tables now {sorted(table_names(app))}")
    failures.check(task_count(app) == 3 + len(created), f"tasks stored: {task_count(app)}")
    failures.assert_none()


# --- numbers out of range, in paths, queries and bodies ---------------------------------------------

BAD_PATH_IDS = ("0", "-1", str(INT_MAX + 1), str(2**63), str(2**64), "9" * 30, "9" * 5000,
                "1.5", "1e3", "0x1", "+1", "1%20", "%201", "NaN", "abc")


def test_out_of_range_and_malformed_path_ids_get_404(client, seeded):
    failures = Failures()
    for task_id in BAD_PATH_IDS:
        for method, template, body in (("GET", "/api/tasks/{}/", None), ("PUT", "/api/tasks/{}/", task_body()),
                                       ("PATCH", "/api/tasks/{}/", {"description": "x"}), ("DELETE", "/api/tasks/{}/", None),
                                       ("POST", "/api/tasks/{}/toggle/", None), ("POST", "/api/tasks/{}/run/", None),
                                       ("GET", "/api/logs/{}/", None)):
            path = template.format(task_id)
            response = call(client.open, path, method=method, json=body)
            failures.check(is_json_error(response, {404}), f"{method} {path[:60]}", response)
    failures.assert_none()


def test_out_of_range_and_malformed_numbers_in_query_params_get_422(client, seeded):
    bad = ("-1", "1.5", "1e2", "2.0", str(INT_MAX + 1), str(2**63), "9" * 30, "9" * 5000, "NaN", "inf", "", "abc", "0x10")
    params = {
        "/api/tasks/": ("limit", ("0", "501")),
        "/api/logs/": ("limit", ("0", "501")),
        "/api/logs/?task_id": ("task_id", ("0",)),
        "/api/stats/": ("task_id", ("0",)),
        "/api/schedule/preview/": ("count", ("0", "101")),
    }
    failures = Failures()
    for key, (param, edges) in params.items():
        path = key.split("?")[0]
        for value in (*bad, *edges):
            query = {param: value}
            if path == "/api/schedule/preview/":
                query["cron_expression"] = "@daily"
            response = call(client.get, path, query_string=query)
            ok = is_json_error(response, {422}) and param in response.get_json()["errors"]["query"]
            failures.check(ok, f"GET {path}?{param}={value[:20]}", response)
    failures.assert_none()


def test_cursors_that_were_never_given_out_get_422_or_an_empty_page(client, seeded):
    def cursor(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    failures = Failures()
    for path in ("/api/tasks/", "/api/logs/"):
        for label, value in {"garbage": "!!!", "not base64": "a" * 5, "wrong prefix": cursor("pk:1"),
                             "negative": cursor("id:-1"), "float": cursor("id:1.5"), "2**63": cursor(f"id:{2**63}"),
                             "5000 digits": cursor("id:" + "9" * 5000)[:200], "non-ASCII": "é"}.items():
            response = call(client.get, path, query_string={"cursor": value})
            failures.check(is_json_error(response, {422}), f"GET {path} cursor {label}", response)
        # Well-formed but past every row the service can store (ids are 32-bit on PostgreSQL): an empty last page.
        for last_id in (INT_MAX, INT_MAX + 1, 2**40, 2**63 - 1):
            response = call(client.get, path, query_string={"cursor": cursor(f"id:{last_id}")})
            ok = not isinstance(response, str) and response.status_code in (200, 422)
            if ok and response.status_code == 200:
                newest_first = path == "/api/logs/"
                # Newest first, everything is "before" a huge cursor; oldest first, nothing is "after" it.
                ok = response.get_json()["items"] != [] if newest_first else response.get_json()["items"] == []
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


INTEGER_FIELDS = ("timeout_seconds", "max_retries", "retry_delay_seconds", "retry_max_delay_seconds", "misfire_grace_seconds")


def test_out_of_range_and_mistyped_numbers_in_json_fields_get_4xx(app, client, seeded):
    bad_values = {"2**31": 2**31, "2**63": 2**63, "10**30": 10**30, "-1": -1, "1.5": 1.5, "1e308": 1e308,
                  "string": "5", "bool": True, "object": {"a": 1}}
    # Tokens Python's parser accepts but JSON does not: the body is not JSON (400), or the field is invalid (422).
    non_json_numbers = {"NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity", "1e400": "1e400",
                        "5000-digit integer": "9" * 5000}
    failures = Failures()

    def send(label: str, text: str, statuses: set[int], field: str | None) -> None:
        name = re.search(r'"name": "(hostile-\d+)"', text).group(1)
        for method, path in (("POST", "/api/tasks/"), ("PUT", "/api/tasks/3/")):
            # A name of its own for each request: a wrongly accepted POST must not turn the PUT into a 409.
            sent = text.replace(f'"{name}"', f'"{name}-{method}"')
            response = call(client.open, path, method=method, data=sent, headers=JSON_HEADERS)
            ok = is_json_error(response, statuses)
            if ok and response.status_code == 422 and field is not None:
                ok = field in response.get_json()["errors"]["json"]
            failures.check(ok, f"{method} {path} {label}", response)

    for field in (*INTEGER_FIELDS, "depends_on", "expect_status"):
        for label, value in bad_values.items():
            if field == "depends_on":
                body = task_body(depends_on=[value])
            elif field == "expect_status":
                body = task_body(action={"type": "http", "url": "http://e.com/", "expect_status": value})
            else:
                body = task_body(**{field: value})
            error_key = "action" if field == "expect_status" else field
            send(f"{field}={label}", raw_json(body), {422}, error_key)
        for label, token in non_json_numbers.items():
            if field == "depends_on":
                text = raw_json(task_body(depends_on="@")).replace('"@"', f"[{token}]")
            elif field == "expect_status":
                text = raw_json(task_body(action={"type": "http", "url": "http://e.com/", "expect_status": "@"})).replace('"@"', token)
            else:
                text = raw_json(task_body(**{field: "@"})).replace('"@"', token)
            send(f"{field}={label}", text, {400, 422}, "action" if field == "expect_status" else field)

    # Free-form JSON (an http body, python args and kwargs) takes any JSON value, and only JSON values.
    for label, token in non_json_numbers.items():
        for where, action in (("action.body", {"type": "http", "url": "http://e.com/", "body": {"x": "@"}}),
                              ("action.args", {"type": "python", "callable": "m:f", "args": ["@"]}),
                              ("action.kwargs", {"type": "python", "callable": "m:f", "kwargs": {"k": "@"}})):
            send(f"{token[:12]} ({label}) in {where}", raw_json(task_body(action=action)).replace('"@"', token),
                 {400, 422}, "action")
    failures.check(task_count(app) == 3, f"tasks stored: {task_count(app)}")
    failures.assert_none()


def test_big_integers_in_free_form_json_round_trip_exactly(client, seeded):
    values = [2**31, 2**63, -(2**70), 10**30]
    task = create(client, action={"type": "python", "callable": "m:f", "args": values, "kwargs": {"big": 2**64}})
    again = client.get(f"/api/tasks/{task['id']}/").get_json()
    assert again["action"]["args"] == values and again["action"]["kwargs"] == {"big": 2**64}, again["action"]


# --- long strings -------------------------------------------------------------------------------------


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
        "shell command 65537": (task_body(action={"type": "shell", "command": "c" * 65_537}), "action"),
        "shell cwd 4097": (task_body(action={"type": "shell", "command": "true", "cwd": "/" * 4097}), "action"),
        "unknown field with a 200k name": ({**task_body(), huge: 1}, None),
        "python callable 200k": (task_body(action={"type": "python", "callable": "m:" + "f" * 200_000 + "("}), "action"),
    }
    failures = Failures()
    for label, (body, field) in cases.items():
        for method, path in (("POST", "/api/tasks/"), ("PUT", "/api/tasks/3/")):
            response = call(client.open, path, method=method, data=raw_json(body), headers=JSON_HEADERS)
            ok = is_json_error(response, {422})
            if ok and field is not None:
                ok = field in response.get_json()["errors"]["json"]
            failures.check(ok, f"{method} {path} {label}", response)
    long_queries = {"/api/tasks/": {"q": "q" * 201}, "/api/logs/": {"cursor": "c" * 201},
                    "/api/schedule/preview/": {"cron_expression": "* " * 5000}}
    for path, query in long_queries.items():
        response = call(client.get, path, query_string=query)
        failures.check(is_json_error(response, {422}), f"GET {path} with {next(iter(query))} of {len(next(iter(query.values())))}", response)
    response = call(client.get, "/api/schedule/preview/", query_string={"cron_expression": "@daily", "timezone": "T" * 65})
    failures.check(is_json_error(response, {422}), "GET preview with a 65-char timezone", response)
    failures.check(task_count(app) == 3, f"tasks stored: {task_count(app)}")
    failures.assert_none()


def test_long_strings_in_fields_without_a_declared_limit_never_get_a_5xx(client, seeded):
    long = "a" * 300_000
    actions = {
        "http url": {"type": "http", "url": "http://example.com/" + long},
        "http url host": {"type": "http", "url": f"http://{long}.com/"},
        "http header value": {"type": "http", "url": "http://e.com/", "headers": {"X-Long": long}},
        "http body": {"type": "http", "url": "http://e.com/", "body": long},
        "shell env value": {"type": "shell", "command": "true", "env": {"LONG": long}},
        "python args": {"type": "python", "callable": "m:f", "args": [long]},
    }
    failures = Failures()
    for label, action in actions.items():
        response = call(client.post, "/api/tasks/", json=task_body(action=action))
        ok = not isinstance(response, str) and (response.status_code == 201 or is_json_error(response, {422}))
        if ok and response.status_code == 201:
            sent = response.get_json()["action"]
            response = call(client.get, f"/api/tasks/{response.get_json()['id']}/")
            ok = not isinstance(response, str) and response.status_code == 200 and response.get_json()["action"] == sent
        failures.check(ok, f"POST a 300k-char {label}", response)
    failures.assert_none()


# --- unicode ------------------------------------------------------------------------------------------


def test_unicode_is_stored_returned_and_searched_literally(app, client, seeded):
    names = ["日本語のタスク", "emoji \U0001F680\U0001F525", "rtl \u202eevil\u202c", "zero\u200bwidth", "e\u0301 vs \u00e9",
             "nonchar \uffff", "astral \U0001D518\U0001D52B", "\U0001F680" * 200, "tab\tnew\nline\rescape\x1b",
             "\u00a0nbsp\u3000ideographic space", "quote\" back\\ slash'"]
    failures = Failures()
    for name in names:
        response = call(client.post, "/api/tasks/", json=task_body(name=name, description=name * 3))
        ok = not isinstance(response, str) and response.status_code == 201
        failures.check(ok, f"create {name[:30]!r}", response)
        if ok:
            again = client.get(f"/api/tasks/{response.get_json()['id']}/").get_json()
            failures.check(again["name"] == name and again["description"] == name * 3, f"read back {name[:30]!r}", again)
    for q, expected in (("\U0001F680\U0001F525", ["emoji \U0001F680\U0001F525"]), ("日本語", ["日本語のタスク"]),
                        ("\u200b", ["zero\u200bwidth"]), ("\u202e", ["rtl \u202eevil\u202c"])):
        response = call(client.get, "/api/tasks/", query_string={"q": q})
        got = [item["name"] for item in response.get_json()["items"]] if not isinstance(response, str) else response
        failures.check(got == expected, f"q={q!r}: expected {expected}, got", got)
    # Look-alikes of valid values are not valid values.
    for label, body, field in (("fullwidth digit in cron", task_body(cron_expression="\uff15 * * * *"), "cron_expression"),
                               ("no-break spaces in cron", task_body(cron_expression="*\u00a0*\u00a0*\u00a0*\u00a0*"), "cron_expression"),
                               ("fullwidth solidus in zone", task_body(timezone="Europe\uff0fBerlin"), "timezone"),
                               ("Cyrillic in enum", task_body(concurrency_policy="f\u043erbid"), "concurrency_policy"),
                               ("trailing newline in callable", task_body(action={"type": "python", "callable": "m:f\n"}), "action")):
        response = call(client.post, "/api/tasks/", json=body)
        ok = is_json_error(response, {422}) and field in response.get_json()["errors"]["json"]
        failures.check(ok, label, response)
    failures.assert_none()


# --- methods ------------------------------------------------------------------------------------------


NOT_ALLOWED = [("DELETE", "/api/tasks/"), ("PUT", "/api/tasks/"), ("PATCH", "/api/tasks/"), ("POST", "/api/tasks/1/"),
                ("GET", "/api/tasks/1/toggle/"), ("PUT", "/api/tasks/1/toggle/"), ("DELETE", "/api/tasks/1/toggle/"),
                ("GET", "/api/tasks/1/run/"), ("DELETE", "/api/tasks/1/run/"), ("POST", "/api/logs/"),
                ("DELETE", "/api/logs/"), ("PUT", "/api/logs/1/"), ("DELETE", "/api/logs/1/"), ("POST", "/api/stats/"),
                ("POST", "/api/schedule/preview/"), ("POST", "/api/health"), ("DELETE", "/api/health"),
                ("POST", "/api/openapi.json"), ("TRACE", "/api/tasks/"), ("CONNECT", "/api/tasks/"),
                ("PROPFIND", "/api/tasks/1/"), ("FOO", "/api/tasks/"), ("QUERY", "/api/logs/")]


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
    expected = {"/api/tasks/": {"GET", "POST"}, "/api/tasks/1/": {"GET", "PUT", "PATCH", "DELETE"},
                "/api/tasks/1/toggle/": {"POST"}, "/api/tasks/1/run/": {"POST"}, "/api/logs/": {"GET"},
                "/api/logs/1/": {"GET"}, "/api/stats/": {"GET"}, "/api/schedule/preview/": {"GET"},
                "/api/health": {"GET"}, "/api/openapi.json": {"GET"}}
    failures = Failures()
    for method, path in NOT_ALLOWED:
        response = send_not_allowed(client, method, path)
        allow = {item.strip() for item in response.headers.get("Allow", "").split(",") if item.strip()} \
            if not isinstance(response, str) else set()
        failures.check(expected[path] <= allow, f"{method} {path}: Allow={sorted(allow)}, expected {sorted(expected[path])}",
                       response)
    failures.assert_none()
