"""Schedules beyond cron in the admin: the task form's interval, one-off, calendar, jitter and catch-up
fields; the task page's schedule and next slots (the API's own); the dashboard's timeline; backfill
from the task page (a preview that writes nothing, then exactly the previewed slots queued)."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from html import unescape

import pytest
import sqlalchemy as sa
from werkzeug.datastructures import MultiDict

from tests.admin.admin_helpers import ADMIN_NAME, csrf_of, field_errors, task_form, text_of
from tests.api.api_helpers import add_run
from scheduler_service.admin import dashboard, views
from scheduler_service.admin.formatting import utc_time
from scheduler_service.extensions import db
from scheduler_service.models import Run, Task
from scheduler_service.task_schedules import task_schedule

UTC = timezone.utc


# --- helpers -----------------------------------------------------------------------------------


def create_task(web, name: str, **fields) -> int:
    response = web.post("/admin/tasks/new", data=task_form(name, csrf_of(web), **fields))
    assert response.status_code == 302, text_of(response.get_data(as_text=True))[:2000]
    return int(re.search(r"/admin/tasks/(\d+)/", response.location).group(1))


def create_calendar(web, name: str, weekdays: tuple[int, ...] = ()) -> None:
    data = MultiDict([("csrf_token", csrf_of(web)), ("name", name), ("description", ""), ("exclude_dates", "")])
    for day in weekdays:
        data.add("exclude_weekdays", str(day))
    assert web.post("/admin/calendars/new", data=data).status_code == 302


def listed_times(html: str, list_id: str) -> list[str]:
    """The times (as utc_time shows them) in the page's list with that id."""
    block = re.search(rf'<ol class="times" id="{list_id}">(.*?)</ol>', html, re.S)
    assert block, f"no list {list_id!r} in the page"
    return re.findall(r"<li>(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC)", block.group(1))


def runs_of(app, task_id: int) -> list[Run]:
    with app.app_context():
        runs = db.session.scalars(sa.select(Run).where(Run.task_id == task_id).order_by(Run.scheduled_for)).all()
        db.session.expunge_all()
        return list(runs)


def schedule_now(app, task_id: int, now: datetime, count: int = views.PREVIEW_COUNT) -> list[str]:
    """task_schedule's next runs (what GET /api/tasks/{id}/schedule/ answers), as the page shows times."""
    with app.app_context():
        return [utc_time(slot) for slot in task_schedule(db.session.get(Task, task_id), now, count)["next_runs"]]


@pytest.fixture
def frozen_now(monkeypatch) -> datetime:
    """The admin views' clock stopped at one instant, so that a page and task_schedule agree to the second."""
    now = datetime.now(UTC).replace(microsecond=0)
    monkeypatch.setattr(views, "utcnow", lambda: now)
    return now


# --- the task form -----------------------------------------------------------------------------


def test_an_interval_task_from_the_form(web, client):
    task_id = create_task(web, "every-90", cron_expression="", interval_seconds="90", jitter_seconds="30",
                          catchup="all")
    task = client.get(f"/api/tasks/{task_id}/").get_json()
    assert (task["cron_expression"], task["interval_seconds"], task["run_at"]) == (None, 90, None)
    assert (task["jitter_seconds"], task["catchup"], task["calendar"]) == (30, "all", None)


def test_a_one_off_task_from_the_form_reads_the_offset(web, client):
    task_id = create_task(web, "once", cron_expression="", run_at="2030-07-01T09:30:00+02:00")
    task = client.get(f"/api/tasks/{task_id}/").get_json()
    assert task["cron_expression"] is None and task["interval_seconds"] is None
    assert datetime.fromisoformat(task["run_at"]) == datetime(2030, 7, 1, 7, 30, tzinfo=UTC)
    assert datetime.fromisoformat(task["next_run_at"]) == datetime(2030, 7, 1, 7, 30, tzinfo=UTC)


def test_a_time_without_offset_is_read_as_utc(web, client):
    task_id = create_task(web, "once", cron_expression="", run_at="2030-07-01T09:30")
    assert datetime.fromisoformat(client.get(f"/api/tasks/{task_id}/").get_json()["run_at"]) == datetime(
        2030, 7, 1, 9, 30, tzinfo=UTC)


def test_the_form_offers_the_calendars_and_a_task_gets_one(web, client):
    create_calendar(web, "weekdays", weekdays=(6, 7))
    form = web.get("/admin/tasks/new").get_data(as_text=True)
    select = re.search(r'<select id="calendar".*?</select>', form, re.S).group(0)
    assert re.findall(r'<option value="([^"]*)"', select) == ["", "weekdays"]
    assert re.search(r'<option value="latest" selected', form)  # catch-up's default

    task_id = create_task(web, "noon", cron_expression="0 12 * * *", calendar="weekdays")
    assert client.get(f"/api/tasks/{task_id}/").get_json()["calendar"] == "weekdays"


def test_the_edit_form_shows_the_schedule_back_and_saving_it_changes_nothing(web, client):
    create_calendar(web, "weekdays", weekdays=(6, 7))
    fields = dict(cron_expression="", run_at="2030-07-01T07:30:00+00:00", calendar="weekdays",
                  jitter_seconds="45", catchup="none")
    task_id = create_task(web, "launch", **fields)
    html = web.get(f"/admin/tasks/{task_id}/edit").get_data(as_text=True)
    assert 'value="2030-07-01T07:30:00+00:00"' in html and 'id="jitter_seconds" name="jitter_seconds" value="45"' in html
    assert re.search(r'<option value="weekdays" selected', html) and re.search(r'<option value="none" selected', html)

    response = web.post(f"/admin/tasks/{task_id}/edit", data=task_form("launch", csrf_of(web), **fields))
    assert response.status_code == 302
    trail = client.get("/api/audit/", query_string={"task_id": task_id}).get_json()["items"]
    assert [entry["action"] for entry in trail] == ["create"]  # a save that changes nothing is no change


BAD_SCHEDULES = [
    ({"interval_seconds": "60"}, "interval_seconds", "at most one of cron_expression, interval_seconds and run_at"),
    ({"run_at": "2030-01-01T00:00:00Z"}, "run_at", "at most one of cron_expression, interval_seconds and run_at"),
    ({"cron_expression": "", "interval_seconds": "60", "run_at": "2030-01-01T00:00:00Z"}, "run_at", "at most one"),
    ({"cron_expression": "", "run_at": "2001-01-01T00:00:00Z"}, "run_at", "Must be in the future."),
    ({"cron_expression": "", "run_at": "tomorrow"}, "run_at", "Not a valid datetime."),
    ({"cron_expression": "", "interval_seconds": "0"}, "interval_seconds", "greater than or equal to 1"),
    ({"cron_expression": "", "interval_seconds": "often"}, "interval_seconds", "Not a valid integer."),
    ({"calendar": "nope"}, "calendar", "Unknown calendar 'nope'."),
    ({"jitter_seconds": "5000"}, "jitter_seconds", "less than or equal to 3600"),
    ({"catchup": "sometimes"}, "catchup", "Must be one of: latest, all, none."),
]


def test_a_bad_schedule_is_shown_beside_its_field_and_nothing_is_saved(app, web):
    problems = []
    for fields, field, message in BAD_SCHEDULES:
        response = web.post("/admin/tasks/new", data=task_form("rejected", csrf_of(web), **fields))
        html = response.get_data(as_text=True)
        errors = field_errors(html, field) if response.status_code == 422 else []
        if not any(message in error for error in errors):
            problems.append((fields, response.status_code, field, errors))
        # The input is kept, to correct rather than retype (a select can only send its own options).
        kept = [value for key, value in fields.items() if key != "catchup" and value and value not in unescape(html)]
        if kept:
            problems.append((fields, "input not shown again", kept))
    assert problems == []
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(Task)).scalar_one() == 0


# --- the task page and the dashboard ----------------------------------------------------------------


def test_the_task_page_lists_the_same_next_runs_as_task_schedule(app, web, frozen_now):
    create_calendar(web, "weekdays", weekdays=(6, 7))
    cases = {
        create_task(web, "cron-weekdays", cron_expression="0 12 * * *", timezone="Europe/Paris",
                    calendar="weekdays"): "cron 0 12 * * * (Europe/Paris)",
        create_task(web, "every-90", cron_expression="", interval_seconds="90"): "every 90 seconds (1 min 30 s)",
        create_task(web, "once", cron_expression="", run_at="2030-07-01T07:30:00Z"): "once, at 2030-07-01 07:30:00 UTC",
    }
    for task_id, kind in cases.items():
        html = web.get(f"/admin/tasks/{task_id}/").get_data(as_text=True)
        assert kind in text_of(re.search(r'<dd id="schedule-kind">.*?</dd>', html, re.S).group(0)), task_id
        shown = listed_times(html, "next-slots")
        assert shown == schedule_now(app, task_id, frozen_now) and shown, task_id
    weekday_slots = listed_times(web.get(f"/admin/tasks/{list(cases)[0]}/").get_data(as_text=True), "next-slots")
    assert all(datetime.strptime(slot[:10], "%Y-%m-%d").isoweekday() < 6 for slot in weekday_slots)
    assert len(listed_times(web.get(f"/admin/tasks/{list(cases)[2]}/").get_data(as_text=True), "next-slots")) == 1


def test_the_task_page_shows_calendar_jitter_and_catchup(web):
    create_calendar(web, "weekdays", weekdays=(6, 7))
    task_id = create_task(web, "spread", calendar="weekdays", jitter_seconds="120", catchup="all")
    html = web.get(f"/admin/tasks/{task_id}/").get_data(as_text=True)
    assert 'href="/admin/calendars/weekdays/edit"' in re.search(r'<dd id="schedule-calendar">.*?</dd>', html, re.S).group(0)
    assert "up to 120 s after each slot" in text_of(html)
    assert "a run for each missed slot, oldest first (all)" in text_of(html)


def test_the_task_list_says_each_kind_of_schedule(web):
    create_calendar(web, "weekdays", weekdays=(6, 7))
    create_task(web, "every-90", cron_expression="", interval_seconds="90", calendar="weekdays")
    create_task(web, "once", cron_expression="", run_at="2030-07-01T07:30:00Z")
    html = web.get("/admin/tasks/").get_data(as_text=True)

    def row(name: str) -> str:
        return text_of(re.search(rf'<tr data-task="{name}".*?</tr>', html, re.S).group(0))

    assert "every 1 min 30 s · weekdays" in row("every-90")
    assert "once, in" in row("once")


def test_a_disabled_task_lists_no_next_slots(web):
    task_id = create_task(web, "off", enabled=None)
    html = web.get(f"/admin/tasks/{task_id}/").get_data(as_text=True)
    assert "No slot ahead while the task is disabled." in text_of(html)


def test_the_dashboard_timeline_draws_interval_and_one_off_tasks(app, web, client):
    every = create_task(web, "every-10-min", cron_expression="", interval_seconds="600")
    once = create_task(web, "once", cron_expression="", run_at="2030-07-01T07:30:00Z")
    firsts = {task_id: datetime.fromisoformat(client.get(f"/api/tasks/{task_id}/").get_json()["next_run_at"])
              for task_id in (every, once)}
    now = datetime.now(UTC)
    with app.test_request_context():
        lanes = {lane[0]: lane[2] for lane in dashboard.upcoming_runs(
            now, [{"task_id": task_id, "next_run_at": first} for task_id, first in firsts.items()])}
    # The one-off is years away: the window is the widest, 7 days, and the 10-minute lane,
    # sampled (at most one mark per 1/200 of the window), still reaches its end.
    marks = lanes[every]
    assert marks[0] == firsts[every] and len(marks) > 100
    assert all((mark - firsts[every]) % timedelta(seconds=600) == timedelta(0) for mark in marks)
    assert timedelta(days=7) - (marks[-1] - now) < timedelta(hours=1)
    assert lanes[once] == [firsts[once]]
    html = web.get("/admin/").get_data(as_text=True)
    timeline = re.search(r'<svg class="chart" id="timeline-chart".*?</svg>', html, re.S).group(0)
    assert f'href="/admin/tasks/{every}/"' in timeline and f'href="/admin/tasks/{once}/"' in timeline


# --- backfill ------------------------------------------------------------------------------------------


def hourly_range(hours: int = 5) -> tuple[datetime, datetime, list[datetime]]:
    """A past range of whole hours (clear of the next hour, so that the clock moving on changes nothing)."""
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    start = end - timedelta(hours=hours - 1)
    return start, end, [start + timedelta(hours=step) for step in range(hours)]


def backfill(web, task_id: int, **fields):
    data = {"csrf_token": csrf_of(web), "reprocess": "missing", **fields}
    return web.post(f"/admin/tasks/{task_id}/backfill", data={key: value for key, value in data.items()
                                                               if value is not None})


def confirm_fields(html: str) -> dict[str, str]:
    """The hidden fields of the preview's "Run these N slots" form."""
    preview = re.search(r'<div id="backfill-preview">.*?</form>', html, re.S)
    assert preview, "no confirm form in the page"
    return {name: unescape(value) for name, value in
            re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', preview.group(0))}


def test_backfill_preview_lists_the_slots_and_writes_nothing_then_confirm_queues_exactly_them(app, web, client):
    task_id = create_task(web, "hourly", cron_expression="0 * * * *")
    start, end, slots = hourly_range()
    plus_two = timezone(timedelta(hours=2))
    preview = backfill(web, task_id, start=start.astimezone(plus_two).isoformat(), end=end.isoformat(),
                       dry_run="true")
    assert preview.status_code == 200
    html = preview.get_data(as_text=True)
    assert listed_times(html, "backfill-slots") == [utc_time(slot) for slot in slots]
    assert "5 slots would run" in text_of(html) and "Run these 5 slots" in html
    assert runs_of(app, task_id) == []
    assert client.get("/api/audit/", query_string={"action": "backfill"}).get_json()["items"] == []

    hidden = confirm_fields(html)
    assert "dry_run" not in hidden and hidden["reprocess"] == "missing"
    confirmed = web.post(f"/admin/tasks/{task_id}/backfill", data={**hidden, "csrf_token": csrf_of(web)})
    assert confirmed.status_code == 302 and confirmed.location == f"/admin/tasks/{task_id}/"
    runs = runs_of(app, task_id)
    assert [(run.scheduled_for, run.trigger, run.status) for run in runs] == [
        (slot, "backfill", "pending") for slot in slots]

    page = web.get(confirmed.location).get_data(as_text=True)
    assert "5 backfill runs of “hourly” queued" in text_of(page)
    assert f'href="/admin/runs/?task_id={task_id}&amp;trigger=backfill"' in page
    (entry,) = client.get("/api/audit/", query_string={"action": "backfill"}).get_json()["items"]
    assert entry["actor"] == f"admin:{ADMIN_NAME}" and entry["changes"]["slots"] == [None, 5]


def test_backfill_reprocess_chooses_the_slots(app, web):
    task_id = create_task(web, "hourly", cron_expression="0 * * * *")
    start, end, slots = hourly_range()
    add_run(app, task_id, "success", scheduled_for=slots[0])
    add_run(app, task_id, "failed", scheduled_for=slots[1])
    expected = {"missing": slots[2:], "failed": slots[1:], "all": slots}
    for reprocess, kept in expected.items():
        html = backfill(web, task_id, start=start.isoformat(), end=end.isoformat(), reprocess=reprocess,
                        dry_run="true").get_data(as_text=True)
        assert listed_times(html, "backfill-slots") == [utc_time(slot) for slot in kept], reprocess
    assert len(runs_of(app, task_id)) == 2


def test_a_range_with_nothing_to_run_offers_no_confirm_button(app, web):
    task_id = create_task(web, "hourly", cron_expression="0 * * * *")
    start, end, slots = hourly_range(1)
    add_run(app, task_id, "success", scheduled_for=slots[0])
    html = backfill(web, task_id, start=start.isoformat(), end=end.isoformat(), dry_run="true").get_data(as_text=True)
    assert "No slot in this range needs a run" in text_of(html) and "Run these" not in html


def test_a_confirmation_of_slots_that_changed_since_the_preview_runs_nothing(app, web):
    task_id = create_task(web, "hourly", cron_expression="0 * * * *")
    start, end, slots = hourly_range()
    html = backfill(web, task_id, start=start.isoformat(), end=end.isoformat(), dry_run="true").get_data(as_text=True)
    add_run(app, task_id, "success", scheduled_for=slots[2])  # someone ran one of them meanwhile

    stale = web.post(f"/admin/tasks/{task_id}/backfill", data={**confirm_fields(html), "csrf_token": csrf_of(web)})
    assert stale.status_code == 409
    again = stale.get_data(as_text=True)
    assert "changed since the preview" in text_of(again)
    assert listed_times(again, "backfill-slots") == [utc_time(slot) for slot in slots if slot != slots[2]]
    assert [run.trigger for run in runs_of(app, task_id)] == ["schedule"]


def test_backfill_errors_are_shown_beside_their_fields_and_nothing_is_written(app, web):
    task_id = create_task(web, "hourly", cron_expression="0 * * * *")
    start, end, _ = hourly_range()
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    cases = [
        (dict(start=start.isoformat(), end=future), "end", "May not be in the future."),
        (dict(start=end.isoformat(), end=start.isoformat()), "start", "May not be after end."),
        (dict(start=None, end=end.isoformat()), "start", "Missing data for required field."),
        (dict(start="yesterday", end=end.isoformat()), "start", "Not a valid datetime."),
        (dict(start=start.isoformat(), end=end.isoformat(), reprocess="some"), "reprocess", "Must be one of"),
        (dict(start=(end - timedelta(hours=1001)).isoformat(), end=end.isoformat()), "end", "more than 1000 slots"),
    ]
    problems = []
    for fields, field, message in cases:
        for dry_run in ("true", None):  # the preview and a confirmation refuse alike
            response = backfill(web, task_id, dry_run=dry_run, **fields)
            html = response.get_data(as_text=True)
            errors = field_errors(html, field) if response.status_code == 422 else []
            if not any(message in error for error in errors) or 'id="backfill-preview"' in html:
                problems.append((fields, dry_run, response.status_code, errors))
    assert problems == []
    assert runs_of(app, task_id) == []


def test_a_dependency_only_task_has_no_backfill_form(app, web):
    parent = create_task(web, "parent")
    child = create_task(web, "child", cron_expression="", depends_on=str(parent))
    html = web.get(f"/admin/tasks/{child}/").get_data(as_text=True)
    assert 'id="backfill-none"' in html and f'action="/admin/tasks/{child}/backfill"' not in html
    assert f'action="/admin/tasks/{parent}/backfill"' in web.get(f"/admin/tasks/{parent}/").get_data(as_text=True)

    start, end, _ = hourly_range()
    refused = backfill(web, child, start=start.isoformat(), end=end.isoformat(), dry_run="true")
    assert refused.status_code == 422
    assert "no slots of its own to backfill" in text_of(refused.get_data(as_text=True))
    assert runs_of(app, child) == []


def test_backfill_is_guarded_like_run_now(app, web):
    task_id = create_task(web, "hourly", cron_expression="0 * * * *")
    start, end, _ = hourly_range()
    forged = backfill(web, task_id, start=start.isoformat(), end=end.isoformat(), csrf_token="forged")
    assert forged.status_code == 400 and "Form expired" in forged.get_data(as_text=True)
    stranger = app.test_client()
    stranger.get("/admin/login")  # a session with a CSRF token, but no login
    logged_out = backfill(stranger, task_id, start=start.isoformat(), end=end.isoformat())
    assert logged_out.status_code == 302 and logged_out.location.startswith("/admin/login")
    assert runs_of(app, task_id) == []
