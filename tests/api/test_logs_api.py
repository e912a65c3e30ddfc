"""The execution log: one run in full, lists (shortened output, newest first) and their filters."""
from __future__ import annotations

from datetime import datetime, timedelta

from tests.api.api_helpers import (
    HUGE_ID, RUN_FIELDS, UTC, Failures, add_run, call, assert_json_error, describe, error_at, field_errors, make_task,
    parse_time,
)

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def test_one_run_has_every_field_and_its_whole_output(app, client):
    task = make_task(client, name="etl")
    output = "".join(f"line {index:05d}\n" for index in range(3000)) + "THE END"
    run_id = add_run(app, task["id"], "failed", trigger="retry", attempt=2, started_at=T0,
                     finished_at=T0 + timedelta(seconds=12.5), duration_seconds=12.5, output=output,
                     message="timed out after 5s", exit_code=-9)

    response = client.get(f"/api/logs/{run_id}/")
    assert response.status_code == 200, describe(response)
    run = response.get_json()
    assert set(run) == RUN_FIELDS
    assert {key: run[key] for key in RUN_FIELDS - {"scheduled_for", "started_at", "finished_at"}} == {
        "id": run_id, "task_id": task["id"], "task_name": "etl", "attempt": 2, "trigger": "retry",
        "status": "failed", "duration_seconds": 12.5, "exit_code": -9, "http_status": None,
        "output": output, "message": "timed out after 5s",
    }
    assert parse_time(run["started_at"]) == T0
    assert parse_time(run["finished_at"]) == T0 + timedelta(seconds=12.5)
    parse_time(run["scheduled_for"])

    # In a list the output may be shortened, but it keeps the tail.
    listed = client.get("/api/logs/").get_json()["items"]
    assert len(listed) == 1
    item = listed[0]
    assert set(item) == RUN_FIELDS
    assert output.endswith(item["output"]) and item["output"].endswith("THE END")
    assert {key: item[key] for key in RUN_FIELDS - {"output"}} == {key: run[key] for key in RUN_FIELDS - {"output"}}

    # The detail still has all of it after being listed.
    assert client.get(f"/api/logs/{run_id}/").get_json()["output"] == output

    # Unknown runs are 404, however large the id.
    for unknown in (run_id + 1000, HUGE_ID):
        assert_json_error(client.get(f"/api/logs/{unknown}/"), 404)


def test_logs_filter_by_status_and_trigger(app, client):
    task = make_task(client)
    runs = {
        "ok": add_run(app, task["id"], "success", trigger="schedule"),
        "bad": add_run(app, task["id"], "failed", trigger="schedule"),
        "retry": add_run(app, task["id"], "success", trigger="retry", attempt=2),
        "skip": add_run(app, task["id"], "skipped", trigger="dependency"),
        "manual": add_run(app, task["id"], "pending", trigger="manual"),
    }

    def ids_for(**params):
        response = client.get("/api/logs/", query_string=params)
        assert response.status_code == 200, describe(response)
        return [item["id"] for item in response.get_json()["items"]]

    assert ids_for() == sorted(runs.values(), reverse=True)
    assert ids_for(status="success") == [runs["retry"], runs["ok"]]
    assert ids_for(status="skipped") == [runs["skip"]]
    assert ids_for(trigger="schedule") == [runs["bad"], runs["ok"]]
    assert ids_for(trigger="manual") == [runs["manual"]]
    assert ids_for(status="success", trigger="retry") == [runs["retry"]]
    assert ids_for(status="running") == []

    for params, field in (({"status": "done"}, "status"), ({"trigger": "cron"}, "trigger"),
                          ({"since": "yesterday"}, "since"), ({"until": "2026-13-01T00:00:00Z"}, "until"),
                          ({"task_id": "abc"}, "task_id")):
        assert field in field_errors(client.get("/api/logs/", query_string=params), location="query")


def test_logs_filter_by_task_id(app, client):
    first = make_task(client)
    second = make_task(client)
    mine = [add_run(app, first["id"]), add_run(app, first["id"], "failed")]
    add_run(app, second["id"])

    response = client.get("/api/logs/", query_string={"task_id": first["id"]})
    assert response.status_code == 200, describe(response)
    assert [item["id"] for item in response.get_json()["items"]] == mine[::-1]
    response = client.get("/api/logs/", query_string={"task_id": first["id"], "status": "failed"})
    assert response.status_code == 200, describe(response)
    assert [item["id"] for item in response.get_json()["items"]] == [mine[1]]
    response = client.get("/api/logs/", query_string={"task_id": 4242})
    assert response.status_code in (200, 404), describe(response)
    if response.status_code == 200:
        assert response.get_json()["items"] == []


def test_since_and_until_bound_started_at_inclusively_and_honour_offsets(app, client):
    task = make_task(client)
    started = [T0 + timedelta(hours=hours) for hours in range(4)]  # 10:00, 11:00, 12:00, 13:00 UTC
    ids = [add_run(app, task["id"], "success", started_at=moment, duration_seconds=1) for moment in started]
    add_run(app, task["id"], "pending")  # not started: no started_at to bound

    def ids_for(**params):
        response = client.get("/api/logs/", query_string=params)
        assert response.status_code == 200, describe(response)
        return [item["id"] for item in response.get_json()["items"]]

    assert ids_for(since="2026-03-01T11:00:00Z") == [ids[3], ids[2], ids[1]]
    assert ids_for(until="2026-03-01T11:00:00Z") == [ids[1], ids[0]]
    assert ids_for(since="2026-03-01T11:00:00+00:00", until="2026-03-01T12:00:00+00:00") == [ids[2], ids[1]]
    assert ids_for(since="2026-03-01T11:00:00.000001Z", until="2026-03-01T11:59:59Z") == []
    # The same instants written with other offsets.
    assert ids_for(since="2026-03-01T16:00:00+05:00", until="2026-03-01T07:00:00-05:00") == [ids[2], ids[1]]
    assert ids_for(since="2026-03-01T12:00:00+02:00") == [ids[3], ids[2], ids[1], ids[0]]
    assert ids_for(until="2026-03-01T09:00:00-01:00") == [ids[0]]
    assert ids_for(since="2026-03-01T13:00:00Z", until="2026-03-01T10:00:00Z") == []


def test_extreme_since_and_until_are_not_a_server_error(app, client):
    task = make_task(client)
    add_run(app, task["id"], "success")
    failures = Failures()
    for params in ({"since": "0001-01-01T00:00:00+05:00"}, {"until": "9999-12-31T23:59:59-05:00"},
                   {"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59Z"}):
        response = call(client.get, "/api/logs/", query_string=params)
        if isinstance(response, str):
            failures.check(False, repr(params), response)
        elif response.status_code == 422:
            named = any(error_at(response.get_json()["errors"], f"query.{key}") is not None for key in params)
            failures.check(named, repr(params), describe(response))
        else:
            failures.check(response.status_code == 200, repr(params), describe(response))
    failures.assert_none()
