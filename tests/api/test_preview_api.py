"""GET /api/schedule/preview/: description and next fire times, the first strictly after start.

The preview stores nothing, so these tests share one app (see api_helpers.shared_client)."""
from __future__ import annotations

from datetime import timedelta

import pytest

from tests.api.api_helpers import Failures, call, describe, error_at, field_errors, now, parse_time, shared_client


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    yield from shared_client(tmp_path_factory)


def preview(api, **params) -> dict:
    response = api.get("/api/schedule/preview/", query_string=params)
    assert response.status_code == 200, describe(response)
    body = response.get_json()
    assert set(body) == {"description", "next_runs"}
    for value in body["next_runs"]:
        parse_time(value)
    return body


def test_description_and_five_next_runs_by_default(api):
    body = preview(api, cron_expression="30 1 * * *", start="2026-01-01T00:00:00Z")
    assert body == {"description": "At 01:30 AM", "next_runs": [
        "2026-01-01T01:30:00+00:00", "2026-01-02T01:30:00+00:00", "2026-01-03T01:30:00+00:00",
        "2026-01-04T01:30:00+00:00", "2026-01-05T01:30:00+00:00",
    ]}


def test_the_first_run_is_strictly_after_start(api):
    body = preview(api, cron_expression="30 1 * * *", start="2026-01-01T01:30:00Z", count=2)
    assert body["next_runs"] == ["2026-01-02T01:30:00+00:00", "2026-01-03T01:30:00+00:00"]
    body = preview(api, cron_expression="*/15 * * * *", start="2026-01-01T01:29:59Z", count=3)
    assert body["next_runs"] == ["2026-01-01T01:30:00+00:00", "2026-01-01T01:45:00+00:00",
                                 "2026-01-01T02:00:00+00:00"]


def test_start_defaults_to_now(api):
    before = now()
    body = preview(api, cron_expression="* * * * *", count=3)
    first = parse_time(body["next_runs"][0])
    assert before < first <= before + timedelta(minutes=1, seconds=5)
    assert [parse_time(value) - first for value in body["next_runs"]] == [timedelta(minutes=m) for m in range(3)]


def test_count_is_1_to_100(api):
    assert len(preview(api, cron_expression="* * * * *", count=1)["next_runs"]) == 1
    runs = preview(api, cron_expression="* * * * *", count=100, start="2026-01-01T00:00:00Z")["next_runs"]
    assert len(runs) == 100 and runs[-1] == "2026-01-01T01:40:00+00:00"
    failures = Failures()
    for count in ("0", "101", "-1", "abc", str(10**20)):
        response = api.get("/api/schedule/preview/", query_string={"cron_expression": "* * * * *", "count": count})
        ok = response.status_code == 422 and error_at(response.get_json().get("errors", {}), "query.count")
        failures.check(bool(ok), f"count={count}", describe(response))
    failures.assert_none()


def test_start_with_an_offset_is_honoured(api):
    # 03:00+02:00 is 01:00Z: the 01:30Z run that day is still ahead.
    body = preview(api, cron_expression="30 1 * * *", start="2026-06-10T03:00:00+02:00", count=2)
    assert body["next_runs"] == ["2026-06-10T01:30:00+00:00", "2026-06-11T01:30:00+00:00"]
    # 03:31+02:00 is 01:31Z: it is not.
    body = preview(api, cron_expression="30 1 * * *", start="2026-06-10T03:31:00+02:00", count=1)
    assert body["next_runs"] == ["2026-06-11T01:30:00+00:00"]


def test_time_zone_and_new_york_fall_back(api):
    body = preview(api, cron_expression="30 1 * * *", timezone="America/New_York",
                   start="2026-10-31T00:00:00Z", count=3)
    # 01:30 EDT, then 01:30 once on the fall-back day (the first occurrence, still EDT), then 01:30 EST.
    assert body["next_runs"] == ["2026-10-31T05:30:00+00:00", "2026-11-01T05:30:00+00:00",
                                 "2026-11-02T06:30:00+00:00"]
    assert body["description"] == "At 01:30 AM"
    # Winter in New York: 02:30 EST is 07:30Z.
    body = preview(api, cron_expression="30 2 * * *", timezone="America/New_York",
                   start="2026-01-15T00:00:00Z", count=1)
    assert body["next_runs"] == ["2026-01-15T07:30:00+00:00"]


def test_six_field_and_alias_expressions(api):
    body = preview(api, cron_expression="0 0 * * * 30", start="2026-01-01T00:00:00Z", count=2)
    assert body["next_runs"] == ["2026-01-01T00:00:30+00:00", "2026-01-02T00:00:30+00:00"]
    body = preview(api, cron_expression="@daily", start="2026-01-01T12:00:00Z", count=1)
    assert body["next_runs"] == ["2026-01-02T00:00:00+00:00"]


def test_bad_input_is_422_naming_the_parameter(api):
    failures = Failures()
    for label, params, field in (
        ("missing cron_expression", {}, "cron_expression"),
        ("missing cron_expression with timezone", {"timezone": "UTC"}, "cron_expression"),
        ("bad cron_expression", {"cron_expression": "61 * * * *"}, "cron_expression"),
        ("4 fields", {"cron_expression": "* * * *"}, "cron_expression"),
        ("never matches", {"cron_expression": "0 0 31 2 *"}, "cron_expression"),
        ("unknown timezone", {"cron_expression": "* * * * *", "timezone": "Mars/Olympus_Mons"}, "timezone"),
        ("empty timezone", {"cron_expression": "* * * * *", "timezone": ""}, "timezone"),
        ("bad start", {"cron_expression": "* * * * *", "start": "tomorrow"}, "start"),
        ("NUL in cron_expression", {"cron_expression": "* * * * *\u0000"}, "cron_expression"),
    ):
        response = api.get("/api/schedule/preview/", query_string=params)
        if response.status_code != 422:
            failures.check(False, label, describe(response))
            continue
        failures.check(error_at(response.get_json()["errors"], f"query.{field}") is not None, label, describe(response))
    failures.assert_none()
    assert "timezone" in field_errors(api.get("/api/schedule/preview/", query_string={
        "cron_expression": "30 1 * * *", "timezone": "Nowhere/Land"}), location="query")


def test_starts_at_the_ends_of_time_are_not_a_server_error(api):
    failures = Failures()
    for start in ("0001-01-01T00:00:00+05:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:00Z",
                  "9999-12-31T23:59:00-05:00"):
        response = call(api.get, "/api/schedule/preview/", query_string={"cron_expression": "* * * * *",
                                                                          "start": start, "count": 2})
        if isinstance(response, str):
            failures.check(False, start, response)
        elif response.status_code == 422:
            failures.check(error_at(response.get_json()["errors"], "query.start") is not None, start,
                           describe(response))
        else:
            failures.check(response.status_code == 200, start, describe(response))
    failures.assert_none()
