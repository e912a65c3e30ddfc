"""Calendars in the admin: the list, the create and edit forms (the API's rules, errors beside their
fields), and delete with its confirmation (refused while a task uses the calendar)."""
from __future__ import annotations

import re
from datetime import date

import pytest

from werkzeug.datastructures import MultiDict

from tests.admin.admin_helpers import ADMIN_NAME, csrf_of, field_errors, task_form, text_of


def calendar_form(csrf: str, name: str | None = "holidays", *, description: str = "", dates: str = "",
                  weekdays: tuple[int, ...] = ()) -> MultiDict:
    """What a browser sends: one exclude_weekdays entry per ticked box; name None leaves it out (the edit form)."""
    data = [("csrf_token", csrf), ("description", description), ("exclude_dates", dates)]
    if name is not None:
        data.append(("name", name))
    data.extend(("exclude_weekdays", str(day)) for day in weekdays)
    return MultiDict(data)


def create_calendar(web, name: str = "holidays", **fields) -> None:
    response = web.post("/admin/calendars/new", data=calendar_form(csrf_of(web), name, **fields))
    assert response.status_code == 302, text_of(response.get_data(as_text=True))[:2000]


def create_task(web, name: str, **fields) -> int:
    response = web.post("/admin/tasks/new", data=task_form(name, csrf_of(web), **fields))
    assert response.status_code == 302, text_of(response.get_data(as_text=True))[:2000]
    return int(re.search(r"/admin/tasks/(\d+)/", response.location).group(1))


def test_create_a_calendar_and_see_it_listed(web, client):
    response = web.post("/admin/calendars/new", data=calendar_form(
        csrf_of(web), description="Office closed", dates="2026-12-26, 2026-12-25\r\n2027-01-01\r\n",
        weekdays=(7, 6),
    ))
    assert response.status_code == 302 and response.location == "/admin/calendars/"

    stored = client.get("/api/calendars/holidays/").get_json()
    assert stored["description"] == "Office closed"
    assert stored["exclude_dates"] == ["2026-12-25", "2026-12-26", "2027-01-01"]
    assert stored["exclude_weekdays"] == [6, 7]
    create_task(web, "report", calendar="holidays")

    listing = web.get("/admin/calendars/").get_data(as_text=True)
    row = text_of(re.search(r'<tr data-calendar="holidays">.*?</tr>', listing, re.S).group(0))
    assert "Office closed" in row and "Saturday, Sunday" in row and "3 dates" in row and "report" in row
    assert 'href="/admin/calendars/"' in web.get("/admin/").get_data(as_text=True)  # in the navigation

    trail = client.get("/api/audit/", query_string={"action": "create", "actor": f"admin:{ADMIN_NAME}"}).get_json()
    calendar_entries = [entry for entry in trail["items"] if entry["task_id"] is None]
    assert [entry["changes"]["calendar"] for entry in calendar_entries] == [[None, "holidays"]]


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"dates": "2026-12-25\n2026-02-30"}, "exclude_dates", "“2026-02-30”: Must be a date: YYYY-MM-DD."),
    ({"dates": "25/12/2026"}, "exclude_dates", "“25/12/2026”: Must be a date: YYYY-MM-DD."),
    ({"weekdays": (1, 2, 3, 4, 5, 6, 7)}, "exclude_weekdays", "A calendar may not exclude all seven weekdays"),
    ({"name": "no spaces"}, "name", "1..100 letters, digits, '-' or '_'."),
    ({"name": ""}, "name", "1..100 letters, digits, '-' or '_'."),
])
def test_a_bad_value_is_shown_beside_its_field_and_nothing_is_created(web, client, fields, field, message):
    fields = dict(fields)  # the parameters are shared by the SQLite and PostgreSQL runs
    name = fields.pop("name", "holidays")
    response = web.post("/admin/calendars/new", data=calendar_form(csrf_of(web), name, **fields))
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert any(message in error for error in field_errors(html, field)), field_errors(html, field)
    if "dates" in fields:
        assert "2026" in html and fields["dates"].split("\n")[-1] in html  # the input is kept, to correct
    assert client.get("/api/calendars/").get_json()["items"] == []


def test_the_form_refuses_what_the_api_refuses_with_the_same_words(web, client):
    api = client.post("/api/calendars/", json={"name": "x", "exclude_dates": ["2026-13-01"]})
    api_message = api.get_json()["errors"]["json"]["exclude_dates"]["0"][0]
    form = web.post("/admin/calendars/new", data=calendar_form(csrf_of(web), "x", dates="2026-13-01"))
    assert field_errors(form.get_data(as_text=True), "exclude_dates") == [f"“2026-13-01”: {api_message}"]


def test_a_taken_name_is_shown_beside_the_name(web, client):
    create_calendar(web, description="first")
    response = web.post("/admin/calendars/new", data=calendar_form(csrf_of(web), description="second"))
    assert response.status_code == 422
    assert field_errors(response.get_data(as_text=True), "name") == ["Already taken."]
    assert client.get("/api/calendars/holidays/").get_json()["description"] == "first"


def test_edit_shows_the_calendar_and_saves_it_and_its_tasks_follow(web, client):
    create_calendar(web, dates="2026-12-25", weekdays=(7,))
    task_id = create_task(web, "noon", cron_expression="0 12 * * *", calendar="holidays")

    form = web.get("/admin/calendars/holidays/edit").get_data(as_text=True)
    assert "2026-12-25" in form
    assert re.search(r'name="exclude_weekdays" value="7" checked', form)
    assert not re.search(r'name="exclude_weekdays" value="1" checked', form)

    # Exclude every weekday but one: the task's next slots are all on that day at once.
    edit = calendar_form(csrf_of(web), None, description="only Wednesdays", weekdays=(1, 2, 4, 5, 6, 7))
    response = web.post("/admin/calendars/holidays/edit", data=edit)
    assert response.status_code == 302
    stored = client.get("/api/calendars/holidays/").get_json()
    assert (stored["description"], stored["exclude_dates"], stored["exclude_weekdays"]) == (
        "only Wednesdays", [], [1, 2, 4, 5, 6, 7])
    slots = client.get(f"/api/tasks/{task_id}/schedule/").get_json()["next_runs"]
    assert {date.fromisoformat(slot[:10]).isoweekday() for slot in slots} == {3}
    task = client.get(f"/api/tasks/{task_id}/").get_json()
    assert date.fromisoformat(task["next_run_at"][:10]).isoweekday() == 3


def test_edit_errors_are_shown_beside_the_field_and_nothing_changes(web, client):
    create_calendar(web, dates="2026-12-25")
    response = web.post("/admin/calendars/holidays/edit",
                        data=calendar_form(csrf_of(web), None, dates="2026-12-25,tomorrow"))
    assert response.status_code == 422
    assert field_errors(response.get_data(as_text=True), "exclude_dates") == [
        "“tomorrow”: Must be a date: YYYY-MM-DD."]
    assert client.get("/api/calendars/holidays/").get_json()["exclude_dates"] == ["2026-12-25"]


def test_delete_asks_first_then_deletes(web, client):
    create_calendar(web)
    confirm = web.get("/admin/calendars/holidays/delete").get_data(as_text=True)
    assert "Delete calendar “holidays”?" in confirm and "Delete calendar</button>" in confirm
    assert client.get("/api/calendars/holidays/").status_code == 200  # asking deletes nothing
    response = web.post("/admin/calendars/holidays/delete", data={"csrf_token": csrf_of(web)})
    assert response.status_code == 302
    assert client.get("/api/calendars/holidays/").status_code == 404


def test_a_calendar_in_use_is_not_deleted_and_the_page_says_why(web, client):
    create_calendar(web)
    create_task(web, "payroll", calendar="holidays")
    confirm = web.get("/admin/calendars/holidays/delete").get_data(as_text=True)
    assert "cannot be deleted" in text_of(confirm) and "payroll" in confirm
    assert "Delete calendar</button>" not in confirm

    response = web.post("/admin/calendars/holidays/delete", data={"csrf_token": csrf_of(web)})
    assert response.status_code == 409
    text = text_of(response.get_data(as_text=True))
    assert "Not deleted." in text and "is used by: payroll" in text
    assert client.get("/api/calendars/holidays/").status_code == 200


def test_calendar_forms_need_the_csrf_token(web, client):
    create_calendar(web)
    for url, data in [
        ("/admin/calendars/new", calendar_form("forged", "other")),
        ("/admin/calendars/holidays/edit", calendar_form("forged", None, description="changed")),
        ("/admin/calendars/holidays/delete", {"csrf_token": "forged"}),
    ]:
        response = web.post(url, data=data)
        assert response.status_code == 400 and "Form expired" in response.get_data(as_text=True), url
    assert [item["name"] for item in client.get("/api/calendars/").get_json()["items"]] == ["holidays"]
    assert client.get("/api/calendars/holidays/").get_json()["description"] == ""


def test_calendar_pages_need_a_login_and_an_unknown_one_is_a_404(app, web):
    response = app.test_client().get("/admin/calendars/")
    assert response.status_code == 302 and response.location.startswith("/admin/login")
    missing = web.get("/admin/calendars/nope/edit")
    assert missing.status_code == 404 and "Calendar “nope” does not exist." in missing.get_data(as_text=True)
