"""The API docs page (/api/docs) in headless Chromium, under the Content-Security-Policy every HTML page carries.

Swagger UI must render every operation of the OpenAPI document and call the API,
with nothing refused by the policy, no script error and nothing fetched from
another origin. Driven as tests/admin/test_admin_browser.py drives the admin:
Playwright with Debian's chromium, skipped without them on a developer's machine,
failed in CI.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from werkzeug.serving import make_server

from tests.appfactory import make_app, reset_database
from scheduler_service.extensions import db

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}

# Every refusal of the page's policy, recorded in the page itself (the console does not report them all).
RECORD_CSP_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(event.violatedDirective + " " + (event.blockedURI || "inline"));
});
"""


def _missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the browser tests (see .ci/install-browser.sh)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    database = tmp_path_factory.mktemp("docs-browser") / "docs.db"
    app = make_app(f"sqlite:///{database}", TESTING=False)
    reset_database(app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="docs-live-server", daemon=True)
    thread.start()
    yield SimpleNamespace(app=app, url=f"http://127.0.0.1:{server.server_port}")
    server.shutdown()
    thread.join(10)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        _missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def tab(browser, live):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live.url)
    context.add_init_script(RECORD_CSP_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.requested, page.console_errors = [], []
    page.on("request", lambda request: page.requested.append(request.url))
    # The browser asks for /favicon.ico on its own; that 404 is no fault of the page.
    page.on("console", lambda message: message.type == "error" and not message.text.startswith("Failed to load")
            and page.console_errors.append(message.text))
    yield page
    context.close()


def operation_count(app) -> int:
    document = app.test_client().get("/api/openapi.json").get_json()
    return sum(1 for operations in document["paths"].values() for method in operations if method in HTTP_METHODS)


def test_the_docs_page_renders_every_operation_under_its_policy(tab, live):
    response = tab.goto("/api/docs")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    tab.wait_for_selector(".opblock")
    assert tab.locator(".opblock").count() == operation_count(live.app)
    assert tab.locator(".info .title").first.inner_text().startswith(live.app.config["API_TITLE"])

    # Try one out: Swagger UI calls the API from the page (connect-src 'self').
    health = tab.locator(".opblock-summary-path[data-path='/api/health']").first
    health.click()
    tab.click(".opblock.is-open >> text=Try it out")
    tab.click(".opblock.is-open >> text=Execute")
    status = tab.locator(".opblock.is-open .live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip() == "200"

    assert tab.evaluate("window.cspViolations") == []
    assert tab.console_errors == []
    assert [url for url in tab.requested if not url.startswith(live.url)] == []
