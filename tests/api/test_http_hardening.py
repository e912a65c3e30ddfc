"""HTTP hardening of the whole service, on SQLite and PostgreSQL: the headers every response and every HTML
page carries, an API docs page without inline script, and 413 for a chunked body over MAX_REQUEST_BYTES.

(The docs page in a real browser, under its Content-Security-Policy: test_api_docs_browser.py.)
"""
from __future__ import annotations

import http.client
import io
import json
import re
import threading
from html import unescape

import pytest
from werkzeug.serving import make_server

from tests.api.api_helpers import Failures, assert_json_error, count_rows, describe, task_payload
from tests.appfactory import make_app
from scheduler_service.extensions import db
from scheduler_service.models import Task

LIMIT = 2000


@pytest.fixture
def app_config() -> dict:
    # A SECRET_KEY, so that the admin pages requested here write no key file into the instance folder.
    return {"MAX_CONTENT_LENGTH": LIMIT, "SECRET_KEY": "http-hardening-tests"}


def csp_directives(response) -> dict[str, str]:
    policy = response.headers.get("Content-Security-Policy", "")
    return {part.split()[0]: part.strip() for part in policy.split(";") if part.strip()}


# --- headers -------------------------------------------------------------------------------------


def test_every_response_says_nosniff(app, client, anonymous):
    """API JSON, errors of every kind, the docs and their files, /metrics, the admin's pages and files."""
    failures = Failures()
    for label, sender, method, path, kwargs in (
        ("health", anonymous, "GET", "/api/health", {}),
        ("task list", client, "GET", "/api/tasks/", {}),
        ("a created task", client, "POST", "/api/tasks/", {"json": task_payload()}),
        ("invalid task (422)", client, "POST", "/api/tasks/", {"json": {}}),
        ("bad JSON (400)", client, "POST", "/api/tasks/", {"data": "{", "content_type": "application/json"}),
        ("no token (401)", anonymous, "GET", "/api/tasks/", {}),
        ("unknown task (404)", client, "GET", "/api/tasks/12345/", {}),
        ("unknown path (404)", anonymous, "GET", "/nothing-here", {}),
        ("wrong method (405)", client, "PUT", "/api/tasks/", {}),
        ("too large (413)", client, "POST", "/api/tasks/", {"json": task_payload(description="x" * LIMIT)}),
        ("OpenAPI document", anonymous, "GET", "/api/openapi.json", {}),
        ("docs page", anonymous, "GET", "/api/docs", {}),
        ("docs stylesheet", anonymous, "GET", "/api/docs/assets/swagger-ui.css", {}),
        ("docs script", anonymous, "GET", "/api/docs/assets/swagger-ui-bundle.js", {}),
        ("docs start script", anonymous, "GET", "/api/docs/static/api_docs/swagger-init.js", {}),
        ("unknown docs file", anonymous, "GET", "/api/docs/assets/nothing.js", {}),
        ("metrics", client, "GET", "/metrics", {}),
        ("metrics without token", anonymous, "GET", "/metrics", {}),
        ("admin login page", anonymous, "GET", "/admin/login", {}),
        ("admin page, logged out (302)", anonymous, "GET", "/admin/tasks/", {}),
        ("admin file", anonymous, "GET", "/admin/static/admin/admin.css", {}),
        ("admin bad link (400)", anonymous, "GET", "/admin/login?next=/admin/%0d%0a", {}),
        ("HEAD", anonymous, "HEAD", "/api/health", {}),
    ):
        response = sender.open(path, method=method, **kwargs)
        failures.check(response.headers.get("X-Content-Type-Options") == "nosniff", label,
                       f"{method} {path}: {response.status_code} {dict(response.headers)}")
    failures.assert_none()


def test_an_unexpected_error_says_nosniff_too(app):
    served = make_app(app.config["SQLALCHEMY_DATABASE_URI"], TESTING=False)  # errors answered, not raised

    def broken():
        raise RuntimeError("boom")

    served.add_url_rule("/broken", "broken", broken)
    try:
        response = served.test_client().get("/broken")
        assert_json_error(response, 500)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        with served.app_context():
            db.session.remove()
            db.engine.dispose()


@pytest.mark.parametrize("path", ["/api/docs", "/admin/login", "/admin/login?next=/admin/%00"])
def test_html_pages_forbid_framing_and_run_only_our_own_files(anonymous, path):
    response = anonymous.get(path)
    assert response.mimetype == "text/html"
    assert response.headers["X-Frame-Options"] == "DENY"
    directives = csp_directives(response)
    assert directives["default-src"] == "default-src 'self'"
    assert directives["script-src"] == "script-src 'self'"  # no inline script, no eval, no other origin
    assert directives["frame-ancestors"] == "frame-ancestors 'none'"
    assert directives["object-src"] == "object-src 'none'"


def test_json_is_not_given_the_page_policy(client):
    response = client.get("/api/tasks/")
    assert response.mimetype == "application/json"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "Content-Security-Policy" not in response.headers


def test_the_docs_page_has_no_inline_script(anonymous):
    html = anonymous.get("/api/docs").get_data(as_text=True)
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts, html
    for attributes, body in scripts:
        assert 'src="/' in attributes and body.strip() == "", attributes
    assert not re.search(r"\son\w+\s*=", html), "inline event handler"
    start = anonymous.get("/api/docs/static/api_docs/swagger-init.js")
    assert start.status_code == 200 and start.mimetype in ("text/javascript", "application/javascript")
    assert "SwaggerUIBundle" in start.get_data(as_text=True)


def test_the_docs_page_passes_its_settings_as_data(app, anonymous):
    app.config["OPENAPI_SWAGGER_UI_CONFIG"] = {"deepLinking": True, "odd": "\"</script><b>"}
    html = anonymous.get("/api/docs").get_data(as_text=True)
    container = re.search(r'<div id="swagger-ui-container" data-spec-url="([^"]*)" data-config="([^"]*)"', html)
    assert container, html
    assert unescape(container.group(1)) == "/api/openapi.json"
    assert json.loads(unescape(container.group(2))) == {"deepLinking": True, "odd": "\"</script><b>"}
    assert "<b>" not in html


# --- chunked bodies ------------------------------------------------------------------------------


def body_of_size(size: int, **overrides) -> bytes:
    """A valid task's JSON, padded with spaces to exactly ``size`` bytes."""
    body = json.dumps(task_payload(**overrides)).encode()
    assert len(body) <= size
    return body[:-1] + b" " * (size - len(body)) + b"}"


def post_chunked(client, body: bytes):
    """A body with ``Transfer-Encoding: chunked`` and no Content-Length, as a server that de-chunks
    (werkzeug's, gunicorn) hands it on: a stream marked ``wsgi.input_terminated``."""
    return client.post(
        "/api/tasks/", input_stream=io.BytesIO(body), content_type="application/json",
        headers={"Transfer-Encoding": "chunked"}, environ_overrides={"wsgi.input_terminated": True},
    )


def test_a_chunked_body_over_the_limit_is_413(app, client):
    response = post_chunked(client, body_of_size(LIMIT + 1))
    assert_json_error(response, 413)
    assert_json_error(post_chunked(client, body_of_size(50 * LIMIT)), 413)
    assert count_rows(app, Task) == 0


def test_a_chunked_body_within_the_limit_reaches_the_view_whole(app, client):
    exactly = post_chunked(client, body_of_size(LIMIT, description="at the limit"))
    assert exactly.status_code == 201, describe(exactly)
    assert exactly.get_json()["description"] == "at the limit"
    small = post_chunked(client, json.dumps(task_payload(description="small")).encode())
    assert small.status_code == 201, describe(small)
    assert count_rows(app, Task) == 2


def test_chunked_bodies_through_a_real_server(app, token):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        def send(body: bytes) -> tuple[int, dict, dict]:
            connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
            pieces = [body[start:start + 500] for start in range(0, len(body), 500)]
            # An iterable body and no Content-Length: http.client sends it chunked.
            connection.request("POST", "/api/tasks/", body=iter(pieces), encode_chunked=True, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "application/json",
                "Transfer-Encoding": "chunked",
            })
            response = connection.getresponse()
            result = response.status, dict(response.getheaders()), json.loads(response.read())
            connection.close()
            return result

        status, headers, body = send(body_of_size(LIMIT + 1))
        assert (status, body["code"]) == (413, 413)
        assert headers["X-Content-Type-Options"] == "nosniff"
        status, _, body = send(body_of_size(LIMIT, description="via a real server"))
        assert status == 201, body
        assert body["description"] == "via a real server"
    finally:
        server.shutdown()
        thread.join(10)
    assert count_rows(app, Task) == 1
