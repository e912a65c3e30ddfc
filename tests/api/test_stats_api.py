"""GET /api/stats/: the documented shape, counts, success rate, average duration, next runs."""
from __future__ import annotations

import pytest

from tests.api.api_helpers import add_run, assert_json_error, describe, make_task, parse_time, set_task

EMPTY_STATS = {
    "tasks": {"total": 0, "enabled": 0,
              "by_status": {"pending": 0, "running": 0, "success": 0, "failed": 0, "retrying": 0}},
    "runs": {"total": 0, "by_status": {"pending": 0, "running": 0, "success": 0, "failed": 0, "skipped": 0},
             "success_rate": None, "avg_duration_seconds": None},
    "next_runs": [],
    "scheduler": {"last_tick_at": None},
}


def get_stats(client, **params) -> dict:
    response = client.get("/api/stats/", query_string=params)
    assert response.status_code == 200, describe(response)
    assert response.mimetype == "application/json"
    return response.get_json()


def shape(document):
    """The document's keys, nested (values replaced by None), to compare structure exactly."""
    if isinstance(document, dict):
        return {key: shape(value) for key, value in document.items()}
    if isinstance(document, list):
        return [shape(item) for item in document]
    return None


def test_stats_count_tasks_and_runs_by_status(app, client):
    assert get_stats(client) == EMPTY_STATS  # an empty system

    tasks = [make_task(client) for _ in range(5)]
    client.post(f"/api/tasks/{tasks[4]['id']}/toggle/")
    set_task(app, tasks[0]["id"], status="success")
    set_task(app, tasks[1]["id"], status="failed")
    set_task(app, tasks[2]["id"], status="retrying", retry_count=1)
    task_id = tasks[0]["id"]
    for duration in (10, 20, 30):
        add_run(app, task_id, "success", duration_seconds=duration)
    add_run(app, task_id, "failed", duration_seconds=60)
    for _ in range(5):
        add_run(app, task_id, "skipped")
    add_run(app, task_id, "running")
    add_run(app, task_id, "pending")

    stats = get_stats(client)
    assert shape(stats) == shape({**EMPTY_STATS, "next_runs": [{"task_id": 0, "name": 0, "next_run_at": 0}] * 4})
    assert stats["tasks"] == {"total": 5, "enabled": 4, "by_status": {
        "pending": 2, "running": 0, "success": 1, "failed": 1, "retrying": 1}}
    runs = stats["runs"]
    assert runs["by_status"] == {"pending": 1, "running": 1, "success": 3, "failed": 1, "skipped": 5}
    assert runs["total"] == 11
    assert runs["success_rate"] == pytest.approx(0.75)  # 3 / (3 + 1): skipped runs do not count
    assert runs["avg_duration_seconds"] == pytest.approx(30.0)  # (10 + 20 + 30 + 60) / 4 finished runs
    assert stats["scheduler"] == {"last_tick_at": None}


def test_success_rate_and_average_are_null_without_decided_or_finished_runs(app, client):
    task = make_task(client)
    add_run(app, task["id"], "pending")
    add_run(app, task["id"], "running")
    stats = get_stats(client)
    assert stats["runs"]["success_rate"] is None
    assert stats["runs"]["avg_duration_seconds"] is None
    add_run(app, task["id"], "skipped")
    assert get_stats(client)["runs"]["success_rate"] is None

    add_run(app, task["id"], "failed", duration_seconds=4)
    stats = get_stats(client)
    assert stats["runs"]["success_rate"] == 0
    add_run(app, task["id"], "success", duration_seconds=2)
    stats = get_stats(client)
    assert stats["runs"]["success_rate"] == pytest.approx(0.5)


def test_next_runs_lists_enabled_tasks_soonest_first_at_most_ten(client):
    scheduled = [make_task(client, name=f"daily-{hour:02d}", cron_expression=f"0 {hour} * * *") for hour in range(12)]
    make_task(client, name="frequent-but-disabled", cron_expression="* * * * *", enabled=False)
    toggled = make_task(client, name="toggled-off", cron_expression="* * * * *")
    client.post(f"/api/tasks/{toggled['id']}/toggle/")
    make_task(client, name="dependency-only", cron_expression=None, depends_on=[scheduled[0]["id"]])

    next_runs = get_stats(client)["next_runs"]
    expected = sorted(((parse_time(task["next_run_at"]), task["id"], task["name"]) for task in scheduled))[:10]
    assert [(item["task_id"], item["name"]) for item in next_runs] == [(id_, name) for _, id_, name in expected]
    assert [parse_time(item["next_run_at"]) for item in next_runs] == [at for at, _, _ in expected]
    assert all(set(item) == {"task_id", "name", "next_run_at"} for item in next_runs)


def test_stats_for_one_task(app, client):
    mine = make_task(client, name="mine")
    other = make_task(client, name="other", cron_expression="* * * * *")
    set_task(app, other["id"], status="failed")
    add_run(app, mine["id"], "success", duration_seconds=3)
    add_run(app, mine["id"], "skipped")
    add_run(app, other["id"], "failed", duration_seconds=100)
    add_run(app, other["id"], "running")

    stats = get_stats(client, task_id=mine["id"])
    assert shape(stats) == shape({**EMPTY_STATS, "next_runs": [{"task_id": 0, "name": 0, "next_run_at": 0}]})
    assert stats["tasks"] == {"total": 1, "enabled": 1, "by_status": {
        "pending": 1, "running": 0, "success": 0, "failed": 0, "retrying": 0}}
    assert stats["runs"] == {"total": 2, "by_status": {
        "pending": 0, "running": 0, "success": 1, "failed": 0, "skipped": 1},
        "success_rate": 1.0, "avg_duration_seconds": pytest.approx(3.0)}
    assert stats["next_runs"] == [{"task_id": mine["id"], "name": "mine", "next_run_at": mine["next_run_at"]}]

    client.post(f"/api/tasks/{mine['id']}/toggle/")
    assert get_stats(client, task_id=mine["id"])["next_runs"] == []
    assert get_stats(client, task_id=mine["id"])["tasks"]["enabled"] == 0


def test_stats_for_an_unknown_task_is_404(app, client):
    assert_json_error(client.get("/api/stats/", query_string={"task_id": 4242}), 404)
