"""Bearer-token auth on every /api/ path but the public ones; health, OpenAPI, docs; JSON errors."""
from __future__ import annotations

import json
import re

import pytest

from tests.api.api_helpers import Failures, assert_json_error, count_rows, describe, make_task, shared_client, task_payload
from scheduler_service import create_app
from scheduler_service.auth import issue_token, revoke_token
from scheduler_service.models import Task

PUBLIC_PREFIXES = ("/api/health", "/api/openapi.json", "/api/docs")


def protected_requests(app) -> list[tuple[str, str]]:
    """(method, path) for every method of every /api/ route that needs a token, from the URL map."""
    requests = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:int:)?[^>]+>", "1", rule.rule)
        if not path.startswith("/api/") or path.startswith(PUBLIC_PREFIXES):
            continue
        requests += [(method, path) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return requests


def assert_unauthorized(response, label: str, failures: Failures) -> None:
    ok = (response.status_code == 401 and response.mimetype == "application/json"
          and (response.get_json() or {}).get("code") == 401
          and response.headers.get("WWW-Authenticate", "").lower().startswith("bearer"))
    failures.check(ok, label, f"{describe(response)} WWW-Authenticate={response.headers.get('WWW-Authenticate')!r}")


def test_every_protected_path_needs_a_valid_bearer_token(app, client, anonymous, token):
    task = make_task(client, name="guarded")
    requests = protected_requests(app)
    expected = {("GET", "/api/tasks/"), ("POST", "/api/tasks/"), ("GET", "/api/tasks/1/"), ("PUT", "/api/tasks/1/"),
                ("PATCH", "/api/tasks/1/"), ("DELETE", "/api/tasks/1/"), ("POST", "/api/tasks/1/toggle/"),
                ("POST", "/api/tasks/1/run/"), ("GET", "/api/logs/"), ("GET", "/api/logs/1/"),
                ("GET", "/api/stats/"), ("GET", "/api/schedule/preview/")}
    assert expected <= set(requests)

    failures = Failures()
    bad_headers = {
        "no header": {},
        "wrong scheme": {"Authorization": f"Basic {token}"},
        "token without scheme": {"Authorization": token},
        "empty bearer": {"Authorization": "Bearer "},
        "wrong token": {"Authorization": "Bearer not-the-token"},
        "token with extra characters": {"Authorization": f"Bearer {token}x"},
    }
    for method, path in requests + [("GET", "/api/no-such-thing/")]:
        kwargs = {"json": task_payload(name="sneaky")} if method in ("POST", "PUT") else \
            {"json": {"description": "sneaky"}} if method == "PATCH" else {}
        for label, headers in bad_headers.items():
            response = anonymous.open(path, method=method, headers=headers, **kwargs)
            assert_unauthorized(response, f"{method} {path} ({label})", failures)
    failures.assert_none()

    # Nothing was created, changed, run or deleted.
    assert client.get(f"/api/tasks/{task['id']}/").get_json() == task
    assert count_rows(app, Task) == 1
    assert client.get("/api/logs/").get_json()["items"] == []

    # The right token (the scheme in any case) is accepted.
    assert anonymous.get("/api/tasks/", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert anonymous.get("/api/tasks/", headers={"Authorization": f"bearer {token}"}).status_code == 200


def test_a_revoked_token_is_refused(app, client, token):
    assert client.get("/api/tasks/").status_code == 200
    with app.app_context():
        other = issue_token("other")
        assert revoke_token("tests") is True
    failures = Failures()
    assert_unauthorized(client.get("/api/tasks/"), "revoked token GET", failures)
    assert_unauthorized(client.post("/api/tasks/", json=task_payload()), "revoked token POST", failures)
    failures.assert_none()
    assert count_rows(app, Task) == 0
    # Other tokens keep working.
    assert app.test_client().get("/api/stats/", headers={"Authorization": f"Bearer {other}"}).status_code == 200


def test_public_paths_need_no_token(app, anonymous):
    response = anonymous.get("/api/health")
    assert response.status_code == 200, describe(response)
    assert response.mimetype == "application/json"
    assert response.get_json()["status"] == "ok"
    assert anonymous.get("/api/openapi.json").status_code == 200
    assert anonymous.get("/api/docs").status_code == 200


def test_health_is_503_when_the_database_does_not_answer(tmp_path):
    app = create_app({"TESTING": True, "SCHEDULER_ENABLED": False,
                      "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'missing-dir' / 'nothing.db'}"})
    response = app.test_client().get("/api/health")
    assert response.status_code == 503, describe(response)
    assert response.mimetype == "application/json"
    assert response.get_json()["status"] != "ok"


# --- documents and routing errors (nothing stored: one shared app) ----------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    yield from shared_client(tmp_path_factory)


def test_openapi_document_describes_every_endpoint(api):
    response = api.get("/api/openapi.json", headers={"Authorization": ""})
    assert response.status_code == 200
    document = json.loads(response.get_data(as_text=True))
    assert str(document["openapi"]).startswith("3.")
    assert document["info"]["title"]
    paths = {re.sub(r"\{[^}]+\}", "{id}", path): {method.lower() for method in operations}
             for path, operations in document["paths"].items()}
    expected = {
        "/api/tasks/": {"get", "post"},
        "/api/tasks/{id}/": {"get", "put", "patch", "delete"},
        "/api/tasks/{id}/toggle/": {"post"},
        "/api/tasks/{id}/run/": {"post"},
        "/api/logs/": {"get"},
        "/api/logs/{id}/": {"get"},
        "/api/stats/": {"get"},
        "/api/schedule/preview/": {"get"},
        "/api/health": {"get"},
    }
    missing = {path: methods - paths.get(path, set()) for path, methods in expected.items()
               if not methods <= paths.get(path, set())}
    assert not missing, f"undocumented: {missing}"


def test_docs_page_serves_swagger_ui_from_the_service_itself(api):
    anonymous = api.application.test_client()
    response = anonymous.get("/api/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assets = re.findall(r'(?:href|src)="([^"]+)"', html)
    assert any(url.endswith(".css") for url in assets) and any(url.endswith(".js") for url in assets), assets
    for url in assets:
        assert url.startswith("/"), f"{url} is not served by the service (closed networks)"
        asset = anonymous.get(url)
        assert asset.status_code == 200, url
        # Swagger UI's files are the real bundle, not stubs; the page's own start script is small.
        assert len(asset.get_data()) > (1000 if "/api/docs/assets/" in url else 100), url
    assert "/api/openapi.json" in html


def test_routing_errors_are_json_never_html(api):
    failures = Failures()
    for label, method, path, status in (
        ("unknown /api/ path", "GET", "/api/nothing-here/", 404),
        ("unknown nested path", "GET", "/api/tasks/1/nothing/", 404),
        ("non-numeric id", "GET", "/api/tasks/abc/", 404),
        ("unknown path outside /api/", "GET", "/nothing-here", 404),
        ("unknown docs asset", "GET", "/api/docs/assets/nothing.js", 404),
        ("wrong method on the collection", "PUT", "/api/tasks/", 405),
        ("wrong method on toggle", "GET", "/api/tasks/1/toggle/", 405),
        ("wrong method on run", "DELETE", "/api/tasks/1/run/", 405),
        ("wrong method on logs", "POST", "/api/logs/", 405),
        ("wrong method on stats", "DELETE", "/api/stats/", 405),
        ("wrong method on preview", "POST", "/api/schedule/preview/", 405),
    ):
        response = api.open(path, method=method)
        ok = (response.status_code == status and response.mimetype == "application/json"
              and (response.get_json() or {}).get("code") == status)
        failures.check(ok, label, f"{describe(response)} ({response.headers.get('Content-Type')})")
    failures.assert_none()


def test_client_errors_are_json_with_the_error_shape(api):
    assert_json_error(api.post("/api/tasks/", data="{not json", content_type="application/json"), 400)
    body = assert_json_error(api.post("/api/tasks/", json={}), 422)
    assert body["status"] and isinstance(body["errors"], dict)
    body = assert_json_error(api.get("/api/tasks/4242/"), 404)
    assert body["status"]
