"""depends_on: unknown ids, the task itself and cycles are 422; dependency-only tasks have no next run."""
from __future__ import annotations

from tests.api.api_helpers import add_run, count_rows, error_at, field_errors, make_task, task_payload
from scheduler_service.models import Task


def test_dependency_only_task_has_no_next_run(client):
    extract = make_task(client, name="extract")
    transform = make_task(client, name="transform")
    load = make_task(client, name="load", cron_expression=None, depends_on=[extract["id"], transform["id"]])
    assert load["cron_expression"] is None
    assert load["next_run_at"] is None
    assert sorted(load["depends_on"]) == sorted([extract["id"], transform["id"]])
    assert client.get(f"/api/tasks/{load['id']}/").get_json() == load

    # Toggling it off and on keeps it schedule-less.
    client.post(f"/api/tasks/{load['id']}/toggle/")
    enabled = client.post(f"/api/tasks/{load['id']}/toggle/").get_json()
    assert enabled["enabled"] is True and enabled["next_run_at"] is None

    # A cron expression may be combined with parents; then it is scheduled.
    both = make_task(client, cron_expression="*/5 * * * *", depends_on=[load["id"]])
    assert both["next_run_at"] is not None and both["depends_on"] == [load["id"]]

    # Giving it a cron expression schedules it; dropping every parent needs one.
    patched = client.patch(f"/api/tasks/{load['id']}/", json={"cron_expression": "0 3 * * *"}).get_json()
    assert patched["next_run_at"] is not None
    patched = client.patch(f"/api/tasks/{load['id']}/", json={"depends_on": []}).get_json()
    assert patched["depends_on"] == [] and patched["cron_expression"] == "0 3 * * *"


def test_unknown_parent_or_itself_is_422_naming_depends_on(app, client):
    task = make_task(client, name="solo")
    errors = field_errors(client.post("/api/tasks/", json=task_payload(depends_on=[task["id"], 4242])))
    assert error_at(errors, "depends_on") is not None
    assert "4242" in str(errors)
    errors = field_errors(client.post("/api/tasks/", json=task_payload(cron_expression=None, depends_on=[4242])))
    assert error_at(errors, "depends_on") is not None

    errors = field_errors(client.patch(f"/api/tasks/{task['id']}/", json={"depends_on": [task["id"]]}))
    assert error_at(errors, "depends_on") is not None
    errors = field_errors(client.put(f"/api/tasks/{task['id']}/",
                                     json=task_payload(name="solo", depends_on=[task["id"]])))
    assert error_at(errors, "depends_on") is not None

    assert client.get(f"/api/tasks/{task['id']}/").get_json() == task
    assert count_rows(app, Task) == 1


def test_a_cycle_is_422_with_the_cycle_named(app, client):
    a = make_task(client, name="alpha")
    b = make_task(client, name="beta", depends_on=[a["id"]])
    c = make_task(client, name="gamma", cron_expression=None, depends_on=[b["id"]])
    add_run(app, a["id"], "success")

    # a -> b: making a depend on b closes a two-task cycle.
    errors = field_errors(client.patch(f"/api/tasks/{a['id']}/", json={"depends_on": [b["id"]]}))
    message = str(error_at(errors, "depends_on"))
    assert "alpha" in message and "beta" in message, message

    # a -> b -> c: a longer one, by PUT.
    errors = field_errors(client.put(f"/api/tasks/{a['id']}/", json=task_payload(name="alpha", depends_on=[c["id"]])))
    message = str(error_at(errors, "depends_on"))
    assert all(name in message for name in ("alpha", "beta", "gamma")), message

    # Nothing changed.
    assert client.get(f"/api/tasks/{a['id']}/").get_json() == a
    assert client.get(f"/api/tasks/{b['id']}/").get_json()["depends_on"] == [a["id"]]

    # A diamond is not a cycle.
    d = make_task(client, name="delta", depends_on=[b["id"], c["id"]])
    assert sorted(d["depends_on"]) == sorted([b["id"], c["id"]])
