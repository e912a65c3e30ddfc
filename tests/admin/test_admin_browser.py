"""The admin in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

The service is served for real (werkzeug, a free port, a SQLite file) with the
scheduler running in the same process, so "Run now" really runs. Every step
saves a screenshot under ``$ARTIFACTS_DIR/admin-browser/`` (default
``<repo>/test-artifacts/``); a failing test leaves one of the moment it failed.

Without Chromium or Playwright these tests are skipped on a developer's
machine, and fail in CI (``CI`` set), where a skip would hide a broken setup.
"""
from __future__ import annotations

import os
import re
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from werkzeug.serving import make_server

from tests.admin.admin_helpers import ADMIN_NAME, ADMIN_PASSWORD
from tests.appfactory import make_app, reset_database
from scheduler_service import services
from scheduler_service.admin.accounts import create_admin
from scheduler_service.extensions import db, scheduler
from scheduler_service.models import Run, Task
from scheduler_service.schemas import TaskSchema

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("ARTIFACTS_DIR") or REPO_ROOT / "test-artifacts") / "admin-browser"
UTC = timezone.utc

DAILY_FAR_FROM_NOW = f"30 {(datetime.now(timezone.utc).hour + 12) % 24} * * *"


# --- the service and the browser -------------------------------------------------------------------


def _missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the browser tests (see .ci/install-browser.sh)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The service on 127.0.0.1:<free port>, with the scheduler running and one admin account."""
    database = tmp_path_factory.mktemp("admin-browser") / "admin.db"
    app = make_app(f"sqlite:///{database}", SECRET_KEY="browser-tests", SCHEDULER_TICK_SECONDS=1,
                   RUN_LEASE_SECONDS=5, TESTING=False)
    reset_database(app)
    with app.app_context():
        create_admin(ADMIN_NAME, ADMIN_PASSWORD)
    scheduler.start(app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="admin-live-server", daemon=True)
    thread.start()
    yield SimpleNamespace(app=app, url=f"http://127.0.0.1:{server.server_port}")
    server.shutdown()
    thread.join(10)
    scheduler.stop(app)
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
def page(browser, live, request):
    """A fresh browser tab (no cookies) that records requests, failed sub-resources and console errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live.url)
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    tab.requested, tab.broken, tab.console_errors = [], [], []
    tab.on("request", lambda req: tab.requested.append(req.url))
    # Pages answer 401/409/422 on purpose (a refused login or form), and so does the schedule
    # preview for a bad expression; their files never should.
    tab.on("response", lambda response: response.status >= 400 and response.request.resource_type != "document"
           and "/admin/schedule-preview" not in response.url and tab.broken.append((response.status, response.url)))
    tab.on("console", lambda message: message.type == "error" and not message.text.startswith("Failed to load")
           and tab.console_errors.append(message.text))
    yield tab
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        shoot(tab, f"FAILED-{request.node.name}")
    context.close()


def shoot(tab, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    return path


def log_in(tab) -> None:
    tab.goto("/admin/")
    tab.fill("#name", ADMIN_NAME)
    tab.fill("#password", ADMIN_PASSWORD)
    tab.click("button:has-text('Log in')")
    tab.wait_for_selector("h1:has-text('Dashboard')")


def assert_only_own_assets(tab, live) -> None:
    """Nothing was fetched from another origin, and nothing was refused or broken (CSP, 404, script errors)."""
    foreign = [url for url in tab.requested if not url.startswith((live.url, "data:"))]
    assert foreign == []
    assert tab.broken == []
    assert tab.console_errors == []


def create_task_directly(app, **fields) -> int:
    with app.app_context():
        return services.create_task(TaskSchema().load(fields)).id


# --- the walk through ----------------------------------------------------------------------------------


def test_log_in_with_a_wrong_then_the_right_password(page, live):
    page.goto("/admin/tasks/")
    assert "/admin/login" in page.url
    shoot(page, "01-login")
    page.fill("#name", ADMIN_NAME)
    page.fill("#password", "not the password")
    page.click("button:has-text('Log in')")
    assert page.locator(".flash-error").inner_text() == "Wrong name or password."
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_selector("h1:has-text('Tasks')")  # back where the visitor was going
    cookie = next(c for c in page.context.cookies() if c["name"] == "session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert_only_own_assets(page, live)


def test_create_a_task_see_an_error_toggle_it_run_it_and_read_its_output(page, live):
    log_in(page)
    page.click("nav >> text=Tasks")
    page.click("text=New task")

    page.fill("#name", "nightly-report")
    page.fill("#cron_expression", "61 * * * *")
    page.select_option("#action_type", "shell")
    assert page.is_hidden("#http_url")  # only the chosen action's fields show
    page.fill("#shell_command", "printf 'report ready\\n'; echo second line")
    page.wait_for_selector("#schedule-preview .preview-error")  # the live preview already objects
    page.click("button:has-text('Create task')")

    error = page.locator("#field-cron_expression .field-error")
    assert "61" in error.inner_text()
    assert page.locator("#form-errors").is_visible()
    assert page.input_value("#shell_command") == "printf 'report ready\\n'; echo second line"  # input kept
    shoot(page, "02-validation-error")

    # Daily, twelve hours from now: it shows on the dashboard's timeline but cannot fire
    # during the test, so the one run below is the manual one.
    page.fill("#cron_expression", DAILY_FAR_FROM_NOW)
    page.wait_for_selector("#schedule-preview:has-text('At ')")
    page.click("button:has-text('Create task')")
    page.wait_for_selector("h1:has-text('nightly-report')")
    assert "created" in page.locator(".flash-success").inner_text()
    shoot(page, "03-task-created")

    page.click("nav >> text=Tasks")
    row = page.locator("tr[data-task='nightly-report']")
    assert row.locator(".badge-enabled").is_visible()
    row.locator("button:has-text('Disable')").click()
    assert "disabled" in page.locator(".flash-success").inner_text()
    assert row.locator(".badge-disabled").is_visible()
    shoot(page, "04-task-disabled")
    row.locator("button:has-text('Enable')").click()
    assert row.locator(".badge-enabled").is_visible()

    row.locator("button:has-text('Run now')").click()
    assert "queued" in page.locator(".flash-success").inner_text()

    page.click("nav >> text=Runs")
    page.select_option("#task_id", label="nightly-report")
    page.click("button:has-text('Filter')")
    first_row = page.locator("tr[data-run]").first
    deadline = time.monotonic() + 20
    while first_row.locator(".badge-success").count() == 0:
        assert time.monotonic() < deadline, first_row.inner_text()
        time.sleep(0.3)
        page.reload()
    assert "manual" in first_row.inner_text()
    shoot(page, "05-run-log")

    first_row.locator("a.strong").click()
    output = page.locator("#run-output")
    assert output.inner_text() == "report ready\nsecond line\n"
    assert page.locator("h1 .badge-success").is_visible()
    shoot(page, "06-run-output")

    page.click("h1 a:has-text('nightly-report')")  # the task's own page: its schedule, stats and runs
    assert page.locator("tr[data-run] .badge-success").count() == 1
    assert DAILY_FAR_FROM_NOW in page.locator("main").inner_text()
    shoot(page, "07-task-page")

    page.click("nav >> text=Dashboard")
    assert page.locator("#hourly-chart rect.fill-success").count() >= 1
    assert page.locator("#timeline-chart circle.mark").count() >= 1
    shoot(page, "08-dashboard-after-a-run")
    assert_only_own_assets(page, live)


def test_delete_is_refused_for_a_parent_and_confirmed_for_a_leaf(page, live):
    parent = create_task_directly(live.app, name="extract-orders", cron_expression="0 3 * * *",
                                  action={"type": "shell", "command": "true"})
    create_task_directly(live.app, name="load-orders", depends_on=[parent],
                         action={"type": "shell", "command": "true"})
    log_in(page)
    page.goto(f"/admin/tasks/{parent}/")
    page.click("text=Delete…")
    refusal = page.locator("#delete-refused")
    assert "other tasks depend on it" in refusal.inner_text()
    assert page.locator("button:has-text('Delete task and runs')").count() == 0
    assert page.locator("main li:has-text('load-orders')").is_visible()
    shoot(page, "09-delete-refused")

    page.click("main li >> text=load-orders")  # to the child's edit form
    page.click("a:has-text('Cancel')")
    page.click("text=Delete…")
    page.click("button:has-text('Delete task and runs')")
    assert "deleted" in page.locator(".flash-success").inner_text()
    assert page.locator("tr[data-task='load-orders']").count() == 0
    assert page.locator("tr[data-task='extract-orders']").count() == 1
    assert_only_own_assets(page, live)


def test_the_dashboard_draws_a_day_of_history_and_the_dependency_graph(page, live):
    _seed_history(live.app)
    log_in(page)
    graph = page.locator("#dependency-graph")
    assert graph.is_visible()
    names = {"ingest", "clean", "enrich", "aggregate", "report-daily", "export-csv", "notify"}
    for name in names:
        assert node_label(graph, name).count() == 1, name
    assert graph.locator("path.edge").count() >= 7
    assert page.locator("#hourly-chart rect.fill-failed").count() >= 3
    assert page.locator("#duration-chart rect.fill-duration").count() >= 5
    assert page.locator(".donut").is_visible()
    shoot(page, "10-dashboard")

    node_label(graph, "aggregate").click()  # nodes link to their tasks
    page.wait_for_selector("h1:has-text('aggregate')")
    assert_only_own_assets(page, live)


def node_label(graph, name: str):
    return graph.locator("g.node > text", has_text=re.compile(rf"^{re.escape(name)}$"))


def _seed_history(app) -> None:
    """A small pipeline with a day of runs: the dashboard of a service in use."""
    shell = {"type": "shell", "command": "true"}
    ids: dict[str, int] = {}
    for name, cron_expression, parents in [
        ("ingest", "0 * * * *", []),
        ("clean", None, ["ingest"]),
        ("enrich", None, ["clean"]),
        ("aggregate", "30 2 * * *", ["clean", "enrich"]),
        ("report-daily", "0 6 * * *", ["aggregate"]),
        ("export-csv", "*/15 * * * *", ["aggregate"]),
        ("notify", None, ["report-daily", "export-csv"]),
    ]:
        ids[name] = create_task_directly(app, name=name, cron_expression=cron_expression, action=shell,
                                         depends_on=[ids[parent] for parent in parents])
    now = datetime.now(UTC)
    statuses = ["success"] * 7 + ["failed", "success", "skipped"]
    durations = {"ingest": 2.5, "clean": 14, "enrich": 48, "aggregate": 95, "report-daily": 7, "export-csv": 3}
    with app.app_context():
        for hour in range(24):
            for index, (name, seconds) in enumerate(durations.items()):
                if (hour + index) % 3:
                    continue
                status = statuses[(hour * 7 + index) % len(statuses)]
                started = now - timedelta(hours=hour, minutes=7 * index + 1)
                db.session.add(Run(
                    task_id=ids[name], trigger="schedule", status=status, attempt=1,
                    scheduled_for=started, started_at=started, finished_at=started + timedelta(seconds=seconds),
                    duration_seconds=seconds * (1.2 if status == "failed" else 1.0),
                    output="ok\n", message="exit status 1" if status == "failed" else "",
                ))
        for name, status in [("ingest", "success"), ("clean", "success"), ("enrich", "failed"),
                             ("aggregate", "retrying"), ("export-csv", "running")]:
            db.session.execute(sa.update(Task).where(Task.id == ids[name]).values(status=status))
        db.session.execute(sa.update(Task).where(Task.id == ids["report-daily"]).values(enabled=False, next_run_at=None, due_at=None))
        db.session.commit()
