"""Schedules beyond cron, over HTTP: interval and one-off tasks, jitter, catch-up and calendar fields,
one task's schedule, the calendars API, backfill, and the scopes and audit entries of those writes.

Real database, real requests; slots are checked against hand-computed times and against
``engine.schedules.Schedule`` computed directly (what the tick uses)."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from tests.api.api_helpers import (
    HUGE_ID, UTC, add_run, assert_json_error, count_rows, describe, field_errors, make_task, now, parse_time,
    set_task, task_payload,
)
from scheduler_service.auth import issue_token
from scheduler_service.engine.schedules import Calendar, Schedule, jitter_offset
from scheduler_service.extensions import db
from scheduler_service.models import AuditEntry, Calendar as CalendarRow, Run, Task

SCHEDULE_FIELDS = ("cron_expression", "interval_seconds", "run_at")
FUTURE_RUN_AT = "2030-01-01T00:00:00+00:00"
# A past day whose hourly slots the backfill tests use (a Monday, UTC).
PAST_DAY = datetime(2026, 1, 5, tzinfo=UTC)


# --- helpers -------------------------------------------------------------------------


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def floor_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def get_task(client, task_id: int) -> dict:
    response = client.get(f"/api/tasks/{task_id}/")
    assert response.status_code == 200, describe(response)
    return response.get_json()


def client_with_scope(app, scope: str):
    with app.app_context():
        secret = issue_token(f"{scope}-token", scope=scope)
    scoped = app.test_client()
    scoped.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {secret}"
    return scoped


def assert_forbidden(response, needed: str) -> None:
    body = assert_json_error(response, 403)
    assert needed in body.get("message", ""), body


def audit_entries(client, **filters) -> list[dict]:
    response = client.get("/api/audit/", query_string={"limit": 500, **filters})
    assert response.status_code == 200, describe(response)
    return response.get_json()["items"]


def make_calendar(client, name: str, dates=(), weekdays=(), description: str = "") -> dict:
    response = client.post("/api/calendars/", json={
        "name": name, "description": description, "exclude_dates": list(dates), "exclude_weekdays": list(weekdays),
    })
    assert response.status_code == 201, describe(response)
    return response.get_json()


def schedule_of(client, task_id: int, **query) -> dict:
    response = client.get(f"/api/tasks/{task_id}/schedule/", query_string=query)
    assert response.status_code == 200, describe(response)
    return response.get_json()


def direct_schedule(task: dict, calendar: dict | None = None) -> Schedule:
    """The task's Schedule built from its JSON (and its calendar's JSON), as the engine would."""
    return Schedule(
        cron_expression=task["cron_expression"], interval_seconds=task["interval_seconds"],
        anchor=parse_time(task["schedule_anchor"]),
        run_at=parse_time(task["run_at"]) if task["run_at"] else None,
        timezone=task["timezone"],
        calendar=Calendar.from_lists(calendar["exclude_dates"], calendar["exclude_weekdays"]) if calendar else None,
    )


def backfill(client, task_id: int, start: datetime, end: datetime, **extra):
    return client.post(f"/api/tasks/{task_id}/backfill/", json={"start": iso(start), "end": iso(end), **extra})


def runs_of(app, task_id: int) -> list[Run]:
    with app.app_context():
        runs = db.session.scalars(sa.select(Run).where(Run.task_id == task_id).order_by(Run.id)).all()
        db.session.expunge_all()
        return list(runs)


def due_at_of(app, task_id: int) -> datetime | None:
    with app.app_context():
        return db.session.get(Task, task_id).due_at


def hourly(index: int) -> datetime:
    return PAST_DAY + timedelta(hours=index)


# --- task fields ---------------------------------------------------------------------


def test_an_interval_task_falls_on_its_anchor_plus_multiples_of_the_interval(client):
    before = now()
    task = make_task(client, cron_expression=None, interval_seconds=90)
    after = now()
    anchor = parse_time(task["schedule_anchor"])
    assert floor_second(before) <= anchor <= after and anchor.microsecond == 0
    assert task["interval_seconds"] == 90 and task["cron_expression"] is None and task["run_at"] is None
    assert parse_time(task["next_run_at"]) == anchor + timedelta(seconds=90)
    slots = schedule_of(client, task["id"], count=4, start=iso(anchor))["next_runs"]
    assert slots == [iso(anchor + timedelta(seconds=90 * k)) for k in range(1, 5)]


def test_a_one_off_task_is_due_at_its_run_at(client):
    task = make_task(client, cron_expression=None, run_at="2030-01-01T05:30:00+05:30")
    assert task["run_at"] == "2030-01-01T00:00:00+00:00"  # stored and answered in UTC
    assert task["next_run_at"] == "2030-01-01T00:00:00+00:00"
    assert task["cron_expression"] is None and task["interval_seconds"] is None


def test_new_fields_default_to_no_jitter_latest_catchup_no_calendar(client):
    task = make_task(client)
    assert (task["jitter_seconds"], task["catchup"], task["calendar"]) == (0, "latest", None)
    assert task["interval_seconds"] is None and task["run_at"] is None
    parse_time(task["schedule_anchor"])


def test_the_new_fields_are_stored_as_given(client):
    make_calendar(client, "holidays")
    task = make_task(client, jitter_seconds=3600, catchup="all", calendar="holidays")
    assert (task["jitter_seconds"], task["catchup"], task["calendar"]) == (3600, "all", "holidays")
    assert get_task(client, task["id"])["catchup"] == "all"
    none = make_task(client, catchup="none", jitter_seconds=0)
    assert none["catchup"] == "none"


@pytest.mark.parametrize("pair", [
    ("cron_expression", "interval_seconds"), ("cron_expression", "run_at"), ("interval_seconds", "run_at"),
])
def test_two_kinds_of_schedule_at_once_are_refused(app, client, pair):
    values = {"cron_expression": "0 * * * *", "interval_seconds": 60, "run_at": FUTURE_RUN_AT}
    body = task_payload(**{field: values[field] if field in pair else None for field in SCHEDULE_FIELDS})
    errors = field_errors(client.post("/api/tasks/", json=body))
    assert set(errors) & set(pair) and set(errors) <= set(pair), errors
    assert count_rows(app, Task) == 0

    # and by PATCH: a cron task given an interval (or run_at) without clearing its cron expression
    task = make_task(client, **{field: values[field] if field == pair[0] else None for field in SCHEDULE_FIELDS})
    errors = field_errors(client.patch(f"/api/tasks/{task['id']}/", json={pair[1]: values[pair[1]]}))
    assert set(errors) & set(pair) and set(errors) <= set(pair), errors
    assert get_task(client, task["id"]) == task


def test_a_task_with_no_schedule_and_no_parents_is_refused(app, client):
    errors = field_errors(client.post("/api/tasks/", json=task_payload(cron_expression=None)))
    assert set(errors) & set(SCHEDULE_FIELDS), errors
    assert count_rows(app, Task) == 0
    task = make_task(client, cron_expression=None, interval_seconds=60)
    errors = field_errors(client.patch(f"/api/tasks/{task['id']}/", json={"interval_seconds": None}))
    assert set(errors) & set(SCHEDULE_FIELDS), errors
    assert get_task(client, task["id"]) == task


def test_a_patch_may_swap_one_kind_of_schedule_for_another(client):
    task = make_task(client, cron_expression="0 * * * *")
    response = client.patch(f"/api/tasks/{task['id']}/", json={"cron_expression": None, "interval_seconds": 120})
    assert response.status_code == 200, describe(response)
    changed = response.get_json()
    assert (changed["cron_expression"], changed["interval_seconds"]) == (None, 120)
    assert parse_time(changed["next_run_at"]) == parse_time(changed["schedule_anchor"]) + timedelta(seconds=120)


@pytest.mark.parametrize("field, value", [
    ("run_at", "2020-01-01T00:00:00+00:00"),
    ("calendar", "no-such-calendar"),
    ("jitter_seconds", -1),
    ("jitter_seconds", 3601),
    ("catchup", "sometimes"),
    ("interval_seconds", 0),
    ("interval_seconds", -5),
])
def test_bad_schedule_values_are_refused_naming_the_field(app, client, field, value):
    overrides = {field: value}
    if field in SCHEDULE_FIELDS:
        overrides["cron_expression"] = None
    errors = field_errors(client.post("/api/tasks/", json=task_payload(**overrides)))
    assert field in errors, errors
    assert count_rows(app, Task) == 0


def test_a_run_at_of_now_is_already_past(app, client):
    errors = field_errors(client.post("/api/tasks/", json=task_payload(cron_expression=None, run_at=iso(now()))))
    assert "run_at" in errors
    assert count_rows(app, Task) == 0


def test_jitter_boundaries_are_accepted(client):
    assert make_task(client, jitter_seconds=0)["jitter_seconds"] == 0
    assert make_task(client, jitter_seconds=3600)["jitter_seconds"] == 3600


def test_changing_the_interval_moves_the_anchor_and_the_next_slot(app, client):
    task = make_task(client, cron_expression=None, interval_seconds=600)
    old_anchor = datetime(2026, 1, 1, tzinfo=UTC)
    old_next = Schedule(interval_seconds=600, anchor=old_anchor).next_after(now())
    set_task(app, task["id"], schedule_anchor=old_anchor, next_run_at=old_next)

    # a change of anything else keeps both
    kept = client.patch(f"/api/tasks/{task['id']}/", json={"description": "just words"}).get_json()
    assert kept["schedule_anchor"] == iso(old_anchor) and kept["next_run_at"] == iso(old_next)
    # so does a write of the interval it already has
    kept = client.patch(f"/api/tasks/{task['id']}/", json={"interval_seconds": 600}).get_json()
    assert kept["schedule_anchor"] == iso(old_anchor) and kept["next_run_at"] == iso(old_next)

    before = now()
    response = client.patch(f"/api/tasks/{task['id']}/", json={"interval_seconds": 900})
    after = now()
    assert response.status_code == 200, describe(response)
    changed = response.get_json()
    anchor = parse_time(changed["schedule_anchor"])
    assert floor_second(before) <= anchor <= after and anchor.microsecond == 0
    assert parse_time(changed["next_run_at"]) == anchor + timedelta(seconds=900)


def test_changing_the_timezone_moves_the_anchor(app, client):
    task = make_task(client, cron_expression="0 9 * * *")
    old_anchor = datetime(2026, 1, 1, tzinfo=UTC)
    set_task(app, task["id"], schedule_anchor=old_anchor)
    before = now()
    changed = client.patch(f"/api/tasks/{task['id']}/", json={"timezone": "Asia/Kolkata"}).get_json()
    after = now()
    assert floor_second(before) <= parse_time(changed["schedule_anchor"]) <= after
    assert changed["next_run_at"] == iso(Schedule(cron_expression="0 9 * * *", timezone="Asia/Kolkata")
                                         .next_after(parse_time(changed["schedule_anchor"])))
    assert parse_time(changed["next_run_at"]).astimezone(ZoneInfo("Asia/Kolkata")).hour == 9


def test_a_put_of_a_past_one_off_task_that_keeps_its_run_at_is_accepted(app, client):
    task = make_task(client, cron_expression=None, run_at=FUTURE_RUN_AT)
    past = floor_second(now()) - timedelta(days=2)
    set_task(app, task["id"], run_at=past, next_run_at=None)  # it has run
    stored = get_task(client, task["id"])
    assert stored["run_at"] == iso(past)

    body = {**stored, "description": "renamed after the fact"}  # read-only fields are ignored
    response = client.put(f"/api/tasks/{task['id']}/", json=body)
    assert response.status_code == 200, describe(response)
    replaced = response.get_json()
    assert replaced["description"] == "renamed after the fact"
    assert replaced["run_at"] == iso(past) and replaced["next_run_at"] is None

    # the same run_at written another way (another offset) is the same time
    other_offset = past.astimezone(ZoneInfo("Asia/Kolkata")).isoformat()
    response = client.patch(f"/api/tasks/{task['id']}/", json={"run_at": other_offset, "description": "again"})
    assert response.status_code == 200, describe(response)

    # but moving it to another past time is not
    errors = field_errors(client.put(f"/api/tasks/{task['id']}/", json={**body, "run_at": iso(past - timedelta(hours=1))}))
    assert "run_at" in errors
    assert get_task(client, task["id"])["run_at"] == iso(past)

    # a new run_at in the future arms it again
    rearmed = client.patch(f"/api/tasks/{task['id']}/", json={"run_at": FUTURE_RUN_AT}).get_json()
    assert rearmed["run_at"] == FUTURE_RUN_AT and rearmed["next_run_at"] == FUTURE_RUN_AT


def test_a_refused_write_leaves_the_task_and_the_audit_trail_as_they_were(app, client):
    make_calendar(client, "weekends", weekdays=[6, 7])
    task = make_task(client, cron_expression="0 * * * *", calendar="weekends", jitter_seconds=5)
    entries = count_rows(app, AuditEntry)
    due_at = due_at_of(app, task["id"])
    refused = [
        {"description": "changed", "interval_seconds": 60},
        {"description": "changed", "calendar": "nope"},
        {"description": "changed", "cron_expression": None, "run_at": "2020-01-01T00:00:00+00:00"},
        {"description": "changed", "jitter_seconds": 4000},
        {"description": "changed", "catchup": "sometimes", "timezone": "Asia/Kolkata"},
    ]
    for body in refused:
        assert client.patch(f"/api/tasks/{task['id']}/", json=body).status_code == 422, body
        assert client.put(f"/api/tasks/{task['id']}/", json={**task_payload(name=task["name"]), **body}).status_code == 422
    assert get_task(client, task["id"]) == task
    assert due_at_of(app, task["id"]) == due_at
    assert count_rows(app, AuditEntry) == entries


def test_jitter_delays_the_due_time_within_bounds_and_keeps_the_slot(app, client):
    task = make_task(client, cron_expression="0 * * * *", jitter_seconds=3600)
    slot = parse_time(task["next_run_at"])
    assert slot.minute == 0 and slot.second == 0  # next_run_at stays the slot
    due_at = due_at_of(app, task["id"])
    assert due_at == slot + jitter_offset(task["id"], slot, 3600)
    assert slot <= due_at <= slot + timedelta(seconds=3600)

    # a change of the jitter redraws the delay for the same slot
    changed = client.patch(f"/api/tasks/{task['id']}/", json={"jitter_seconds": 0}).get_json()
    assert changed["next_run_at"] == task["next_run_at"]
    assert due_at_of(app, task["id"]) == slot


# --- GET /api/tasks/{id}/schedule/ ---------------------------------------------------


def test_the_schedule_of_a_cron_task_in_a_zone_follows_its_dst(client):
    # St John's springs forward on 2026-03-08 at 02:00 (-03:30 -> -02:30): 02:30 does not exist
    # that day and runs right after the gap, at 03:00 NDT.
    task = make_task(client, cron_expression="30 2 * * *", timezone="America/St_Johns")
    start = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)
    body = schedule_of(client, task["id"], count=4, start=iso(start))
    assert body["next_runs"] == [
        "2026-03-07T06:00:00+00:00",  # 02:30 NST
        "2026-03-08T05:30:00+00:00",  # 03:00 NDT, right after the gap
        "2026-03-09T05:00:00+00:00",  # 02:30 NDT
        "2026-03-10T05:00:00+00:00",
    ]
    assert body["next_runs"] == [iso(slot) for slot in direct_schedule(task).upcoming(start, 4)]
    assert "St_Johns" in body["description"]


def test_the_schedule_starts_strictly_after_start_and_defaults_to_five_from_now(client):
    task = make_task(client, cron_expression="0 * * * *")
    body = schedule_of(client, task["id"], start="2026-05-01T10:00:00+00:00", count=2)
    assert body["next_runs"] == ["2026-05-01T11:00:00+00:00", "2026-05-01T12:00:00+00:00"]
    # start with another offset: the same instant
    assert schedule_of(client, task["id"], start="2026-05-01T15:30:00+05:30", count=2) == body
    before = now()
    default = schedule_of(client, task["id"])["next_runs"]
    after = now()
    assert len(default) == 5
    assert default[0] in {iso(Schedule(cron_expression="0 * * * *").next_after(moment)) for moment in (before, after)}


def test_the_schedule_of_an_interval_task(client):
    task = make_task(client, cron_expression=None, interval_seconds=3600, timezone="Pacific/Chatham")
    anchor = parse_time(task["schedule_anchor"])
    start = anchor + timedelta(hours=2, minutes=30)
    body = schedule_of(client, task["id"], count=3, start=iso(start))
    assert body["next_runs"] == [iso(anchor + timedelta(hours=h)) for h in (3, 4, 5)]
    assert body["next_runs"] == [iso(slot) for slot in direct_schedule(task).upcoming(start, 3)]
    # a slot itself as start: the next one
    assert schedule_of(client, task["id"], count=1, start=iso(anchor + timedelta(hours=3)))["next_runs"] == [
        iso(anchor + timedelta(hours=4))]
    # long before the anchor: the first slot is anchor + interval, never the anchor itself
    assert schedule_of(client, task["id"], count=1, start="2026-01-01T00:00:00+00:00")["next_runs"] == [
        iso(anchor + timedelta(hours=1))]


def test_the_schedule_of_a_one_off_task_is_one_slot_then_none(client):
    task = make_task(client, cron_expression=None, run_at=FUTURE_RUN_AT)
    assert schedule_of(client, task["id"], count=5)["next_runs"] == [FUTURE_RUN_AT]
    just_before = iso(parse_time(FUTURE_RUN_AT) - timedelta(microseconds=1))
    assert schedule_of(client, task["id"], count=5, start=just_before)["next_runs"] == [FUTURE_RUN_AT]
    assert schedule_of(client, task["id"], count=5, start=FUTURE_RUN_AT)["next_runs"] == []


def test_the_schedule_leaves_out_the_calendars_days_in_the_tasks_zone(client):
    calendar = make_calendar(client, "office", dates=["2027-01-01"], weekdays=[6, 7])
    # 09:00 in Kolkata is 03:30 UTC; 2027-01-01 is a Friday.
    task = make_task(client, cron_expression="0 9 * * *", timezone="Asia/Kolkata", calendar="office")
    start = datetime(2026, 12, 30, tzinfo=UTC)
    body = schedule_of(client, task["id"], count=4, start=iso(start))
    assert body["next_runs"] == [
        "2026-12-30T03:30:00+00:00", "2026-12-31T03:30:00+00:00",  # Wed, Thu
        "2027-01-04T03:30:00+00:00", "2027-01-05T03:30:00+00:00",  # Fri excluded, then the weekend
    ]
    assert body["next_runs"] == [iso(slot) for slot in direct_schedule(task, calendar).upcoming(start, 4)]
    assert "calendar" in body["description"]


def test_the_calendar_date_is_the_local_date_not_the_utc_date(client):
    # 00:30 in Chatham is 11:45 UTC the day before (+12:45 standard time, June)
    make_calendar(client, "one-day", dates=["2026-06-10"])
    task = make_task(client, cron_expression="30 0 * * *", timezone="Pacific/Chatham", calendar="one-day")
    runs = schedule_of(client, task["id"], count=2, start="2026-06-08T12:00:00+00:00")["next_runs"]
    # local 06-09 00:30 = 06-08 11:45 UTC is past start; local 06-10 is excluded (UTC date 06-09)
    assert runs == ["2026-06-10T11:45:00+00:00", "2026-06-11T11:45:00+00:00"]


def test_the_schedule_of_a_disabled_or_dependency_only_task_is_empty(client):
    disabled = make_task(client, cron_expression="* * * * *", enabled=False)
    body = schedule_of(client, disabled["id"], count=5)
    assert body["next_runs"] == []
    parent = make_task(client)
    child = make_task(client, cron_expression=None, depends_on=[parent["id"]])
    body = schedule_of(client, child["id"], count=5, start="2026-01-01T00:00:00+00:00")
    assert body["next_runs"] == [] and body["description"]


def test_the_schedule_of_an_unknown_task_is_404(client):
    assert_json_error(client.get("/api/tasks/987654/schedule/"), 404)
    response = client.get(f"/api/tasks/{HUGE_ID}/schedule/")
    assert response.status_code in (404, 422), describe(response)


@pytest.mark.parametrize("fields", [
    {"cron_expression": None, "interval_seconds": 630720000},  # twenty years
    {"cron_expression": "0 0 29 2 *", "calendar": "sundays-only"},  # Feb 29 on a Sunday: every ~28 years
])
def test_a_schedule_listed_up_to_the_end_of_time_is_not_a_server_error(client, fields):
    make_calendar(client, "sundays-only", weekdays=[1, 2, 3, 4, 5, 6])
    task = make_task(client, **fields)
    response = client.get(f"/api/tasks/{task['id']}/schedule/", query_string={
        "start": "8999-12-31T00:00:00+00:00", "count": 100})  # both inside their documented ranges
    assert response.status_code == 200, describe(response)
    slots = response.get_json()["next_runs"]
    assert len(slots) < 100 and all(slot < "9999-12-31T23:59:59" for slot in slots)


@pytest.mark.parametrize("query, field", [
    ({"count": 0}, "count"), ({"count": 101}, "count"), ({"count": "many"}, "count"),
    ({"start": "yesterday"}, "start"), ({"start": "2026-13-01T00:00:00+00:00"}, "start"),
])
def test_bad_schedule_arguments_are_422(client, query, field):
    task = make_task(client)
    errors = field_errors(client.get(f"/api/tasks/{task['id']}/schedule/", query_string=query), "query")
    assert field in errors, errors


def test_count_bounds_are_inclusive(client):
    task = make_task(client, cron_expression="* * * * *")
    assert len(schedule_of(client, task["id"], count=1)["next_runs"]) == 1
    assert len(schedule_of(client, task["id"], count=100)["next_runs"]) == 100


# --- /api/calendars/ -----------------------------------------------------------------


def test_calendar_create_list_get_put_delete(app, client):
    created = client.post("/api/calendars/", json={
        "name": "uk-holidays", "description": "bank holidays",
        "exclude_dates": ["2026-12-28", "2026-12-25", "2026-12-25"], "exclude_weekdays": [7, 6],
    })
    assert created.status_code == 201, describe(created)
    body = created.get_json()
    assert {key: body[key] for key in ("name", "description", "exclude_dates", "exclude_weekdays")} == {
        "name": "uk-holidays", "description": "bank holidays",
        "exclude_dates": ["2026-12-25", "2026-12-28"], "exclude_weekdays": [6, 7],
    }
    make_calendar(client, "a-first")
    listed = client.get("/api/calendars/").get_json()["items"]
    assert [item["name"] for item in listed] == ["a-first", "uk-holidays"]
    assert client.get("/api/calendars/uk-holidays/").get_json()["exclude_dates"] == ["2026-12-25", "2026-12-28"]

    # PUT: the name may be repeated or left out, and everything else is replaced
    for body in ({"name": "uk-holidays", "exclude_dates": ["2027-01-01"]}, {"exclude_dates": ["2027-01-01"]}):
        response = client.put("/api/calendars/uk-holidays/", json=body)
        assert response.status_code == 200, describe(response)
        replaced = response.get_json()
        assert (replaced["name"], replaced["exclude_dates"], replaced["exclude_weekdays"], replaced["description"]) == (
            "uk-holidays", ["2027-01-01"], [], "")

    assert client.delete("/api/calendars/uk-holidays/").status_code == 204
    assert_json_error(client.get("/api/calendars/uk-holidays/"), 404)
    assert count_rows(app, CalendarRow) == 1


def test_calendars_are_listed_a_page_at_a_time_in_name_order(client):
    for name in ("c", "a", "e", "b"):
        make_calendar(client, name)
    first = client.get("/api/calendars/", query_string={"limit": 2}).get_json()
    assert [item["name"] for item in first["items"]] == ["a", "b"] and first["next_cursor"]
    make_calendar(client, "d")  # added between the pages: after the cursor, so on the next page
    second = client.get("/api/calendars/", query_string={"limit": 2, "cursor": first["next_cursor"]}).get_json()
    assert [item["name"] for item in second["items"]] == ["c", "d"] and second["next_cursor"]
    last = client.get("/api/calendars/", query_string={"limit": 2, "cursor": second["next_cursor"]}).get_json()
    assert [item["name"] for item in last["items"]] == ["e"] and last["next_cursor"] is None
    assert "cursor" in field_errors(client.get("/api/calendars/", query_string={"cursor": "bm90LWEtbmFtZQ"}), "query")


def test_put_with_another_name_is_refused_and_changes_nothing(app, client):
    original = make_calendar(client, "weekends", weekdays=[6, 7])
    errors = field_errors(client.put("/api/calendars/weekends/", json={"name": "other", "exclude_weekdays": [1]}))
    assert "name" in errors
    assert client.get("/api/calendars/weekends/").get_json() == original
    assert_json_error(client.get("/api/calendars/other/"), 404)


def test_a_duplicate_calendar_name_is_409(app, client):
    make_calendar(client, "dup", dates=["2026-01-01"])
    assert_json_error(client.post("/api/calendars/", json={"name": "dup", "exclude_weekdays": [1]}), 409)
    assert count_rows(app, CalendarRow) == 1
    assert client.get("/api/calendars/dup/").get_json()["exclude_weekdays"] == []


@pytest.mark.parametrize("body, field", [
    ({"name": "all-week", "exclude_weekdays": [1, 2, 3, 4, 5, 6, 7]}, "exclude_weekdays"),
    ({"name": "all-week", "exclude_weekdays": [7, 6, 5, 4, 3, 2, 1, 1]}, "exclude_weekdays"),
    ({"name": "bad-date", "exclude_dates": ["2026-02-30"]}, "exclude_dates"),
    ({"name": "bad-date", "exclude_dates": ["2026-1-5"]}, "exclude_dates"),
    ({"name": "bad-weekday", "exclude_weekdays": [0]}, "exclude_weekdays"),
    ({"name": "bad-weekday", "exclude_weekdays": [8]}, "exclude_weekdays"),
    ({"name": "a b"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"name": "a/b"}, "name"),
    ({}, "name"),
    ({"name": "extra", "colour": "red"}, "colour"),
])
def test_bad_calendars_are_422_naming_the_field(app, client, body, field):
    errors = field_errors(client.post("/api/calendars/", json=body))
    assert field in errors, errors
    assert count_rows(app, CalendarRow) == 0


def test_six_weekdays_and_long_names_are_allowed(client):
    make_calendar(client, "x" * 100, weekdays=[1, 2, 3, 4, 5, 6])
    make_calendar(client, "Aa_0-9")


def test_a_put_of_all_seven_weekdays_is_refused(client):
    original = make_calendar(client, "weekdays", weekdays=[1, 2, 3, 4, 5])
    errors = field_errors(client.put("/api/calendars/weekdays/", json={"exclude_weekdays": [1, 2, 3, 4, 5, 6, 7]}))
    assert "exclude_weekdays" in errors
    assert client.get("/api/calendars/weekdays/").get_json() == original


def test_unknown_calendars_are_404(client):
    assert_json_error(client.get("/api/calendars/nope/"), 404)
    assert_json_error(client.put("/api/calendars/nope/", json={"exclude_weekdays": [1]}), 404)
    assert_json_error(client.delete("/api/calendars/nope/"), 404)


def test_a_calendar_in_use_cannot_be_deleted(app, client):
    make_calendar(client, "busy", dates=["2026-12-25"])
    task = make_task(client, calendar="busy")
    assert_json_error(client.delete("/api/calendars/busy/"), 409)
    assert client.get("/api/calendars/busy/").status_code == 200
    assert get_task(client, task["id"])["calendar"] == "busy"
    # also a disabled task's use counts
    client.patch(f"/api/tasks/{task['id']}/", json={"enabled": False})
    assert_json_error(client.delete("/api/calendars/busy/"), 409)
    # free once no task names it
    assert client.patch(f"/api/tasks/{task['id']}/", json={"calendar": None}).status_code == 200
    assert client.delete("/api/calendars/busy/").status_code == 204
    assert count_rows(app, CalendarRow) == 0


def test_changing_a_calendar_moves_its_tasks_next_slot_at_once(app, client):
    calendar = make_calendar(client, "moving")
    # 01:30 in Chatham is the day before in UTC: the calendar must read the task's local date.
    task = make_task(client, cron_expression="30 1 * * *", timezone="Pacific/Chatham", calendar="moving")
    other = make_task(client, cron_expression="30 1 * * *", timezone="Pacific/Chatham")
    zone = ZoneInfo("Pacific/Chatham")
    first = parse_time(task["next_run_at"])
    local_day = first.astimezone(zone).date()
    assert first.date() != local_day  # the test is about the local date

    response = client.put("/api/calendars/moving/", json={**calendar, "exclude_dates": [local_day.isoformat()]})
    assert response.status_code == 200, describe(response)
    moved = parse_time(get_task(client, task["id"])["next_run_at"])
    assert moved == Schedule(cron_expression="30 1 * * *", timezone="Pacific/Chatham").next_after(first)
    assert moved.astimezone(zone).date() == local_day + timedelta(days=1)
    assert get_task(client, other["id"])["next_run_at"] == other["next_run_at"]  # not its calendar

    # excluding the day's weekday instead keeps it off too; clearing the calendar brings it back
    response = client.put("/api/calendars/moving/", json={"exclude_weekdays": [local_day.isoweekday()]})
    assert response.status_code == 200, describe(response)
    assert parse_time(get_task(client, task["id"])["next_run_at"]) == moved
    assert client.put("/api/calendars/moving/", json={}).status_code == 200
    assert get_task(client, task["id"])["next_run_at"] == task["next_run_at"]


def test_giving_a_task_a_calendar_moves_its_next_slot(client):
    task = make_task(client, cron_expression="0 12 * * *")
    first = parse_time(task["next_run_at"])
    make_calendar(client, "skip-first", dates=[first.date().isoformat()])
    changed = client.patch(f"/api/tasks/{task['id']}/", json={"calendar": "skip-first"}).get_json()
    assert parse_time(changed["next_run_at"]) == first + timedelta(days=1)


@pytest.mark.parametrize("fields", [
    {"cron_expression": "0 9 * * 1"},  # Mondays only
    {"cron_expression": None, "interval_seconds": 7 * 86400},  # weekly, from today
])
def test_a_calendar_that_leaves_a_schedule_no_slot_is_422_and_nothing_is_written(app, client, fields):
    today = datetime.now(timezone.utc).isoweekday()
    make_calendar(client, "no-mondays", weekdays=[1])
    make_calendar(client, "not-today", weekdays=[today])
    calendar = "no-mondays" if fields.get("cron_expression") else "not-today"
    errors = field_errors(client.post("/api/tasks/", json=task_payload(**fields, calendar=calendar)))
    assert "excludes every slot" in str(errors["calendar"])
    assert client.get("/api/tasks/").get_json()["items"] == []
    task = make_task(client, **fields)
    errors = field_errors(client.patch(f"/api/tasks/{task['id']}/", json={"calendar": calendar}))
    assert "calendar" in errors and get_task(client, task["id"])["calendar"] is None


def test_a_disabled_task_stays_without_a_next_slot_when_its_calendar_changes(client):
    make_calendar(client, "quiet")
    task = make_task(client, cron_expression="0 12 * * *", calendar="quiet", enabled=False)
    assert task["next_run_at"] is None
    assert client.put("/api/calendars/quiet/", json={"exclude_weekdays": [1]}).status_code == 200
    assert get_task(client, task["id"])["next_run_at"] is None


# --- scopes and audit ----------------------------------------------------------------


def test_a_read_token_reads_calendars_and_schedules_but_writes_nothing(app, client):
    make_calendar(client, "cal")
    task = make_task(client, cron_expression="0 * * * *")
    reader = client_with_scope(app, "read")
    assert reader.get("/api/calendars/").status_code == 200
    assert reader.get("/api/calendars/cal/").status_code == 200
    assert reader.get(f"/api/tasks/{task['id']}/schedule/").status_code == 200
    assert_forbidden(reader.post("/api/calendars/", json={"name": "new"}), "write")
    assert_forbidden(reader.put("/api/calendars/cal/", json={"exclude_weekdays": [1]}), "write")
    assert_forbidden(reader.delete("/api/calendars/cal/"), "write")
    assert_forbidden(backfill(reader, task["id"], hourly(0), hourly(2)), "run")
    assert count_rows(app, CalendarRow) == 1 and count_rows(app, Run) == 0
    assert client.get("/api/calendars/cal/").get_json()["exclude_weekdays"] == []


def test_a_run_token_backfills_but_does_not_write_calendars(app, client):
    make_calendar(client, "cal")
    task = make_task(client, cron_expression="0 * * * *")
    runner = client_with_scope(app, "run")
    response = backfill(runner, task["id"], hourly(0), hourly(2))
    assert response.status_code == 202, describe(response)
    assert len(response.get_json()["runs"]) == 3
    assert_forbidden(runner.post("/api/calendars/", json={"name": "new"}), "write")
    assert_forbidden(runner.put("/api/calendars/cal/", json={"exclude_weekdays": [1]}), "write")
    assert_forbidden(runner.delete("/api/calendars/cal/"), "write")
    assert count_rows(app, CalendarRow) == 1


def test_a_write_token_writes_calendars(app):
    writer = client_with_scope(app, "write")
    assert writer.post("/api/calendars/", json={"name": "w", "exclude_weekdays": [7]}).status_code == 201
    assert writer.put("/api/calendars/w/", json={"exclude_weekdays": [6]}).status_code == 200
    assert writer.delete("/api/calendars/w/").status_code == 204


def test_calendar_writes_are_audited(app, client):
    writer = client_with_scope(app, "write")
    writer.post("/api/calendars/", json={"name": "audited", "exclude_dates": ["2026-12-25"]})
    writer.put("/api/calendars/audited/", json={"exclude_dates": ["2026-12-25", "2026-12-26"], "description": "x"})
    writer.put("/api/calendars/audited/", json={"exclude_dates": ["2026-12-25", "2026-12-26"], "description": "x"})
    writer.delete("/api/calendars/audited/")
    trail = audit_entries(client, actor="token:write-token")
    assert [entry["action"] for entry in trail] == ["delete", "update", "create"]  # the no-op PUT is no change
    delete, update, create = trail
    assert create["changes"]["exclude_dates"] == [None, ["2026-12-25"]]
    assert "audited" in str(create["changes"])
    assert update["changes"]["exclude_dates"] == [["2026-12-25"], ["2026-12-25", "2026-12-26"]]
    assert update["changes"]["description"] == ["", "x"]
    assert "audited" in str(update["changes"]) and "audited" in str(delete["changes"])
    assert delete["changes"]["exclude_dates"] == [["2026-12-25", "2026-12-26"], None]


def test_refused_calendar_writes_are_not_audited(app, client):
    make_calendar(client, "used")
    make_task(client, calendar="used")
    entries = count_rows(app, AuditEntry)
    client.post("/api/calendars/", json={"name": "used"})
    client.put("/api/calendars/used/", json={"name": "renamed"})
    client.delete("/api/calendars/used/")
    assert count_rows(app, AuditEntry) == entries


def test_a_backfill_is_audited_and_a_dry_run_is_not(app, client):
    task = make_task(client, cron_expression="0 * * * *")
    runner = client_with_scope(app, "run")
    assert backfill(runner, task["id"], hourly(0), hourly(3), dry_run=True).status_code == 202
    assert audit_entries(client, action="backfill") == []
    assert backfill(runner, task["id"], hourly(0), hourly(3), reprocess="all").status_code == 202
    [entry] = audit_entries(client, action="backfill")
    assert entry["task_id"] == task["id"] and entry["actor"] == "token:run-token"
    assert entry["changes"]["slots"] == [None, 4]
    assert entry["changes"]["reprocess"] == [None, "all"]
    assert parse_time(entry["changes"]["start"][1].replace("Z", "+00:00")) == hourly(0)


# --- POST /api/tasks/{id}/backfill/ --------------------------------------------------


def test_a_dry_run_lists_the_slots_and_writes_nothing(app, client):
    task = make_task(client, cron_expression="0 * * * *")
    add_run(app, task["id"], "success", scheduled_for=hourly(1))
    runs_before = count_rows(app, Run)
    response = backfill(client, task["id"], hourly(0), hourly(3), dry_run=True)
    assert response.status_code == 202, describe(response)
    assert response.get_json() == {"slots": [iso(hourly(h)) for h in (0, 2, 3)], "runs": []}
    assert count_rows(app, Run) == runs_before
    assert get_task(client, task["id"]) == task


def test_a_backfill_queues_one_pending_run_per_slot_oldest_first(app, client):
    task = make_task(client, cron_expression="0 * * * *", timezone="Asia/Kolkata")
    # both ends inclusive; in between times that are not slots
    start, end = hourly(0), hourly(3)
    response = backfill(client, task["id"], start, end)
    assert response.status_code == 202, describe(response)
    body = response.get_json()
    # hourly at :00 in Kolkata (+05:30) is :30 UTC
    expected = [iso(hourly(h) + timedelta(minutes=30)) for h in (0, 1, 2)]
    assert body["slots"] == expected
    assert [run["scheduled_for"] for run in body["runs"]] == expected
    assert {(run["trigger"], run["status"], run["attempt"], run["task_id"]) for run in body["runs"]} == {
        ("backfill", "pending", 1, task["id"])}
    stored = runs_of(app, task["id"])
    assert [(run.scheduled_for, run.trigger, run.status) for run in stored] == [
        (parse_time(slot), "backfill", "pending") for slot in expected]
    assert [run["id"] for run in body["runs"]] == [run.id for run in stored]
    # the same request again: every slot has its run now
    again = backfill(client, task["id"], start, end).get_json()
    assert again == {"slots": [], "runs": []}
    assert count_rows(app, Run) == 3


def test_backfill_slots_include_both_ends_and_follow_the_calendar(app, client):
    make_calendar(client, "no-mondays", weekdays=[1])  # PAST_DAY is a Monday
    task = make_task(client, cron_expression="0 */6 * * *", calendar="no-mondays")
    body = backfill(client, task["id"], PAST_DAY - timedelta(hours=6), PAST_DAY + timedelta(days=1), dry_run=True)
    assert body.get_json()["slots"] == [iso(PAST_DAY - timedelta(hours=6)), iso(PAST_DAY + timedelta(days=1))]


def test_backfill_of_an_interval_task_counts_from_its_anchor(app, client):
    task = make_task(client, cron_expression=None, interval_seconds=1200)
    set_task(app, task["id"], schedule_anchor=PAST_DAY)
    body = backfill(client, task["id"], PAST_DAY, PAST_DAY + timedelta(hours=1)).get_json()
    # the anchor itself is not a slot (k >= 1)
    assert body["slots"] == [iso(PAST_DAY + timedelta(minutes=m)) for m in (20, 40, 60)]
    assert len(body["runs"]) == 3


def test_backfill_of_a_one_off_task_is_its_run_at(app, client):
    task = make_task(client, cron_expression=None, run_at=FUTURE_RUN_AT)
    set_task(app, task["id"], run_at=hourly(5), next_run_at=None)
    body = backfill(client, task["id"], hourly(0), hourly(10)).get_json()
    assert body["slots"] == [iso(hourly(5))]
    assert backfill(client, task["id"], hourly(6), hourly(10)).get_json()["slots"] == []


def _slot_history(app, task_id: int) -> None:
    """Runs for hourly(0..5):
    0 success | 1 failed | 2 failed, then a backfill run succeeded | 3 success, then a backfill run skipped
    (attempt 2 written first: the latest is the highest attempt, not the newest row) | 4 none | 5 none;
    and a manual run on no slot at all (hourly(4) + 1 minute)."""
    add_run(app, task_id, "success", scheduled_for=hourly(0))
    add_run(app, task_id, "failed", scheduled_for=hourly(1))
    add_run(app, task_id, "failed", scheduled_for=hourly(2), attempt=1)
    add_run(app, task_id, "success", scheduled_for=hourly(2), attempt=2, trigger="backfill")
    add_run(app, task_id, "skipped", scheduled_for=hourly(3), attempt=2, trigger="backfill")
    add_run(app, task_id, "success", scheduled_for=hourly(3), attempt=1)
    add_run(app, task_id, "success", scheduled_for=hourly(4) + timedelta(minutes=1), trigger="manual")


@pytest.mark.parametrize("reprocess, kept", [
    ("missing", [4, 5]),
    ("failed", [1, 3, 4, 5]),
    ("all", [0, 1, 2, 3, 4, 5]),
])
def test_reprocess_chooses_the_slots(app, client, reprocess, kept):
    task = make_task(client, cron_expression="0 * * * *")
    _slot_history(app, task["id"])
    dry = backfill(client, task["id"], hourly(0), hourly(5), reprocess=reprocess, dry_run=True).get_json()
    assert dry == {"slots": [iso(hourly(h)) for h in kept], "runs": []}


def test_reprocess_defaults_to_missing(app, client):
    task = make_task(client, cron_expression="0 * * * *")
    _slot_history(app, task["id"])
    body = backfill(client, task["id"], hourly(0), hourly(5), dry_run=True).get_json()
    assert body["slots"] == [iso(hourly(4)), iso(hourly(5))]


def test_a_reprocessed_slot_takes_the_next_attempt(app, client):
    task = make_task(client, cron_expression="0 * * * *")
    _slot_history(app, task["id"])
    before = count_rows(app, Run)
    body = backfill(client, task["id"], hourly(0), hourly(5), reprocess="all").get_json()
    assert [(run["scheduled_for"], run["attempt"]) for run in body["runs"]] == [
        (iso(hourly(0)), 2), (iso(hourly(1)), 2), (iso(hourly(2)), 3), (iso(hourly(3)), 3),
        (iso(hourly(4)), 1), (iso(hourly(5)), 1),
    ]
    assert {run["trigger"] for run in body["runs"]} == {"backfill"}
    assert count_rows(app, Run) == before + 6
    # now each slot's latest run is a pending backfill run: "failed" keeps none of them
    assert backfill(client, task["id"], hourly(0), hourly(5), reprocess="failed").get_json()["slots"] == []


def test_failed_reprocess_writes_runs_for_the_failed_slots(app, client):
    task = make_task(client, cron_expression="0 * * * *")
    _slot_history(app, task["id"])
    body = backfill(client, task["id"], hourly(0), hourly(5), reprocess="failed").get_json()
    assert [(run["scheduled_for"], run["attempt"]) for run in body["runs"]] == [
        (iso(hourly(1)), 2), (iso(hourly(3)), 3), (iso(hourly(4)), 1), (iso(hourly(5)), 1)]


def test_backfill_refusals(app, client):
    task = make_task(client, cron_expression="* * * * *")
    the_future = now() + timedelta(hours=1)
    cases = [
        # a few slots only: refused for being in the future, not for their number
        (backfill(client, task["id"], now() - timedelta(minutes=5), the_future), "end"),
        (backfill(client, task["id"], the_future, the_future + timedelta(minutes=1)), "end"),
        (backfill(client, task["id"], hourly(2), hourly(1)), "start"),
        (backfill(client, task["id"], PAST_DAY, PAST_DAY + timedelta(minutes=1000)), "end"),  # 1,001 slots
        (client.post(f"/api/tasks/{task['id']}/backfill/", json={"end": iso(hourly(1))}), "start"),
        (client.post(f"/api/tasks/{task['id']}/backfill/", json={"start": iso(hourly(0)), "end": iso(hourly(1)),
                                                                "reprocess": "some"}), "reprocess"),
        (client.post(f"/api/tasks/{task['id']}/backfill/", json={"start": iso(hourly(0)), "end": iso(hourly(1)),
                                                                "extra": 1}), "extra"),
    ]
    for response, field in cases:
        assert field in field_errors(response), (field, describe(response))
    assert count_rows(app, Run) == 0
    assert audit_entries(client, action="backfill") == []


def test_a_thousand_slots_are_allowed(app, client):
    task = make_task(client, cron_expression="* * * * *")
    response = backfill(client, task["id"], PAST_DAY, PAST_DAY + timedelta(minutes=999))
    assert response.status_code == 202, describe(response)
    assert len(response.get_json()["slots"]) == 1000 and count_rows(app, Run) == 1000


def test_start_equal_to_end_is_one_slot_or_none(client):
    task = make_task(client, cron_expression="0 * * * *")
    assert backfill(client, task["id"], hourly(1), hourly(1), dry_run=True).get_json()["slots"] == [iso(hourly(1))]
    half = hourly(1) + timedelta(minutes=30)
    assert backfill(client, task["id"], half, half, dry_run=True).get_json()["slots"] == []


def test_backfill_of_a_dependency_only_task_is_refused(app, client):
    parent = make_task(client)
    child = make_task(client, cron_expression=None, depends_on=[parent["id"]])
    assert_json_error(backfill(client, child["id"], hourly(0), hourly(5)), 422)
    assert count_rows(app, Run) == 0


def test_backfill_works_on_a_disabled_task(app, client):
    task = make_task(client, cron_expression="0 * * * *", enabled=False)
    response = backfill(client, task["id"], hourly(0), hourly(1))
    assert response.status_code == 202, describe(response)
    assert [run["scheduled_for"] for run in response.get_json()["runs"]] == [iso(hourly(0)), iso(hourly(1))]
    assert get_task(client, task["id"])["enabled"] is False


def test_backfill_leaves_the_slots_from_an_overdue_next_slot_to_catch_up(app, client):
    """README: while the schedulers are down, slots from the task's next_run_at on are the engine's."""
    task = make_task(client, cron_expression="0 * * * *")
    set_task(app, task["id"], next_run_at=hourly(3))
    body = backfill(client, task["id"], hourly(0), hourly(5), dry_run=True).get_json()
    assert body["slots"] == [iso(hourly(h)) for h in (0, 1, 2)]
    # a disabled task has no engine slot: all of them
    client.post(f"/api/tasks/{task['id']}/toggle/")
    body = backfill(client, task["id"], hourly(0), hourly(5), dry_run=True).get_json()
    assert body["slots"] == [iso(hourly(h)) for h in range(6)]


def test_backfill_of_an_unknown_task_is_404(app, client):
    assert_json_error(backfill(client, 987654, hourly(0), hourly(1)), 404)
    assert count_rows(app, Run) == 0


def test_backfill_ends_in_the_past_right_up_to_now(app, client):
    """`end` may be now (not in the future): slots up to the task's next one are backfilled."""
    task = make_task(client, cron_expression="0 * * * *")
    end = now() - timedelta(seconds=1)
    response = backfill(client, task["id"], end - timedelta(hours=3), end, dry_run=True)
    assert response.status_code == 202, describe(response)
    slots = [parse_time(slot) for slot in response.get_json()["slots"]]
    assert slots == Schedule(cron_expression="0 * * * *").between(end - timedelta(hours=3), end, 1000)
    assert len(slots) in (3, 4)  # 4 only if `end` falls exactly on the hour


def test_schedule_and_backfill_agree_on_the_slots(app, client):
    calendar = make_calendar(client, "agree", dates=["2026-03-08"], weekdays=[3])
    task = make_task(client, cron_expression="15 */5 * * *", timezone="America/St_Johns", calendar="agree")
    start, end = datetime(2026, 3, 5, tzinfo=UTC), datetime(2026, 3, 13, tzinfo=UTC)
    slots = backfill(client, task["id"], start, end, dry_run=True).get_json()["slots"]
    upcoming = schedule_of(client, task["id"], start=iso(start - timedelta(microseconds=1)), count=100)["next_runs"]
    assert slots == [slot for slot in upcoming if parse_time(slot) <= end]
    assert slots == [iso(slot) for slot in direct_schedule(task, calendar).between(start, end, 1000)]
    zone = ZoneInfo("America/St_Johns")
    days = {parse_time(slot).astimezone(zone).date() for slot in slots}
    assert date(2026, 3, 8) not in days and not any(day.isoweekday() == 3 for day in days)
    assert len(slots) > 10


def test_a_task_paused_until_a_time_lists_its_slots_from_then(client):
    task = make_task(client, cron_expression="0 * * * *")
    until = (datetime.now(timezone.utc) + timedelta(hours=5)).replace(minute=0, second=0, microsecond=0)
    assert client.post(f"/api/tasks/{task['id']}/pause/", json={"note": "freeze", "until": until.isoformat()}
                       ).status_code == 200
    listed = schedule_of(client, task["id"], count=3)
    assert [parse_time(slot) for slot in listed["next_runs"]] == [until + timedelta(hours=n) for n in range(3)]
    assert listed["description"].startswith("Paused until")
    assert client.post(f"/api/tasks/{task['id']}/pause/", json={"note": "indefinitely"}).status_code == 200
    assert schedule_of(client, task["id"])["next_runs"] == []
