"""Tasks as files (contract: Governance, "Tasks as files"): `flask tasks export` and `flask tasks apply`
through the CLI runner, on every test database; the pure rules of task_files without one."""
from __future__ import annotations

import os
import stat
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
import yaml

from scheduler_service.extensions import db
from scheduler_service.models import AuditEntry, Run, Task
from scheduler_service.task_files import InvalidDocument, Problem, check_graph, dump_yaml, load_yaml
from scheduler_service.task_files_store import Change, plan
from tests.api.api_helpers import make_task

READ_ONLY = {"id", "status", "retry_count", "last_run_at", "next_run_at", "created_at", "updated_at", "schedule_anchor",
             "pause_note", "paused_until", "paused_by", "consecutive_failures"}
SETTABLE = [
    "description", "cron_expression", "interval_seconds", "run_at", "timezone", "calendar", "jitter_seconds",
    "catchup", "enabled", "depends_on", "action", "timeout_seconds",
    "max_retries", "retry_delay_seconds", "retry_max_delay_seconds", "concurrency_policy",
    "misfire_grace_seconds", "notify", "pool", "pause_after_failures",
]
HOOK = "https://hooks.example.com/services/T000/B000/s3cret"
SECRET_HTTP = {"type": "http", "url": "http://etl.example.com/extract", "headers": {"Authorization": "Bearer tok-1"}}
SECRET_SHELL = {"type": "shell", "command": "load --all", "env": {"DB_PASSWORD": "hunter2"}}

PIPELINE = """\
tasks:
  load:
    depends_on: [transform]
    action: {type: shell, command: load --all, env: {DB_PASSWORD: hunter2}}
  transform:
    depends_on: [extract]
    action:
      type: shell
      command: |
        set -e
        transform --fast
  extract:
    cron_expression: "0 2 * * *"
    timezone: Europe/Berlin
    action:
      type: http
      url: http://etl.example.com/extract
      headers: {Authorization: Bearer tok-1}
    notify: {url: "https://hooks.example.com/services/T000/B000/s3cret", events: [failure]}
"""


# --- helpers ---------------------------------------------------------------------------


def run_cli(runner, *args: str, ok: bool = True):
    result = runner.invoke(args=["tasks", *args])
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0, result.output
        # A refusal is a one-line-per-problem message, never a traceback.
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert "Traceback" not in result.output
    return result


def apply_text(runner, tmp_path, text: str, *options: str, ok: bool = True):
    path = tmp_path / "tasks.yaml"
    path.write_text(text, encoding="utf-8")
    return run_cli(runner, "apply", str(path), *options, ok=ok)


def export(runner, *options: str) -> dict:
    return yaml.safe_load(run_cli(runner, "export", *options).stdout)


def tasks_in_db(app) -> dict[str, SimpleNamespace]:
    """The stored tasks by name: their columns, and their parents' names."""
    with app.app_context():
        return {
            task.name: SimpleNamespace(
                **{column.key: getattr(task, column.key) for column in Task.__table__.columns},
                parent_names=sorted(parent.name for parent in task.parents),
            )
            for task in db.session.scalars(sa.select(Task))
        }


def audit_entries(app) -> list[AuditEntry]:
    with app.app_context():
        return db.session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id)).all()


def database_state(app) -> list[tuple]:
    """Every column of every task, and the dependencies: what "changes nothing" compares."""
    with app.app_context():
        tasks = db.session.execute(sa.select(Task.__table__).order_by(Task.id)).all()
        edges = db.session.execute(sa.text("SELECT child_id, parent_id FROM task_dependency ORDER BY 1, 2")).all()
        audits = db.session.execute(sa.select(sa.func.count()).select_from(AuditEntry)).scalar_one()
        return [tuple(row) for row in tasks] + [tuple(row) for row in edges] + [("audit", audits)]


def problem_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("task ")]


# --- export ----------------------------------------------------------------------------


def test_export_writes_every_settable_field_keyed_by_name_with_parents_by_name(client, runner):
    extract = make_task(client, name="extract", description="pull", timezone="Europe/Berlin")
    make_task(client, name="load", cron_expression=None, depends_on=[extract["id"]], max_retries=0)

    document = export(runner)
    assert list(document) == ["tasks"]
    assert list(document["tasks"]) == ["extract", "load"]
    load = document["tasks"]["load"]
    assert list(load) == SETTABLE
    assert not READ_ONLY & set(load)
    assert load["depends_on"] == ["extract"]
    assert load["cron_expression"] is None and load["max_retries"] == 0 and load["notify"] is None
    assert document["tasks"]["extract"]["timezone"] == "Europe/Berlin"
    assert document["tasks"]["extract"]["description"] == "pull"


def test_export_masks_secrets_unless_asked_and_is_deterministic(client, runner, tmp_path):
    make_task(client, name="extract", action=SECRET_HTTP, notify={"url": HOOK, "events": ["failure"]})
    make_task(client, name="load", action=SECRET_SHELL)

    masked = run_cli(runner, "export").stdout
    assert "tok-1" not in masked and "hunter2" not in masked and "s3cret" not in masked
    tasks = yaml.safe_load(masked)["tasks"]
    assert tasks["extract"]["action"]["headers"] == {"Authorization": "***"}
    assert tasks["extract"]["notify"]["url"] == "https://hooks.example.com/***"
    assert tasks["load"]["action"]["env"] == {"DB_PASSWORD": "***"}
    assert run_cli(runner, "export").stdout == masked

    clear = export(runner, "--with-secrets")["tasks"]
    assert clear["extract"]["action"]["headers"] == {"Authorization": "Bearer tok-1"}
    assert clear["extract"]["notify"]["url"] == HOOK
    assert clear["load"]["action"]["env"] == {"DB_PASSWORD": "hunter2"}

    path = tmp_path / "secrets.yaml"
    run_cli(runner, "export", str(path), "--with-secrets")
    assert yaml.safe_load(path.read_text())["tasks"] == clear
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # secrets: readable by the owner only


def test_export_of_no_tasks_is_an_empty_document(runner):
    assert export(runner) == {"tasks": {}}


# --- apply -----------------------------------------------------------------------------


def test_apply_creates_a_chain_by_name_in_one_file_and_audits_it(app, runner, tmp_path):
    result = apply_text(runner, tmp_path, PIPELINE)
    assert result.output.splitlines() == [
        "create 'extract'", "create 'load'", "create 'transform'", "applied: 3 created",
    ]
    tasks = tasks_in_db(app)
    assert tasks["load"].parent_names == ["transform"]
    assert tasks["transform"].parent_names == ["extract"]
    assert tasks["transform"].action["command"] == "set -e\ntransform --fast\n"
    assert tasks["load"].action["env"] == {"DB_PASSWORD": "hunter2"}
    assert tasks["extract"].notify["url"] == HOOK
    assert tasks["extract"].next_run_at is not None  # scheduled like a task made through the API
    assert tasks["load"].next_run_at is None  # dependency-only

    entries = audit_entries(app)
    assert [(entry.action, entry.actor) for entry in entries] == [("apply", "cli")] * 3
    assert {entry.task_id for entry in entries} == {task.id for task in tasks.values()}
    created = next(entry for entry in entries if entry.task_id == tasks["load"].id)
    assert created.changes["name"] == [None, "load"]
    assert created.changes["action"][1]["env"] == {"DB_PASSWORD": "***"}  # never in clear
    assert created.changes["depends_on"] == [None, [tasks["transform"].id]]


def test_round_trip_export_apply_changes_nothing_and_says_so(app, client, runner, tmp_path):
    extract = make_task(client, name="extract", action=SECRET_HTTP, notify={"url": HOOK, "events": ["failure"]})
    make_task(client, name="load", cron_expression=None, depends_on=[extract["id"]], action=SECRET_SHELL,
              enabled=False, timeout_seconds=None, concurrency_policy="allow")
    make_task(client, name="multi", action={"type": "shell", "command": "a\nb  \n\tc"}, description="ünï \"q\"")
    assert client.post("/api/calendars/", json={"name": "uk", "exclude_weekdays": [7]}).status_code == 201
    make_task(client, name="every-90s", cron_expression=None, interval_seconds=90, calendar="uk", jitter_seconds=5,
              catchup="all")
    make_task(client, name="once", cron_expression=None, run_at="2099-12-04T17:00:00+01:00", catchup="none")
    before = database_state(app)

    for options in ((), ("--with-secrets",)):
        exported = run_cli(runner, "export", *options).stdout
        result = apply_text(runner, tmp_path, exported, "--prune")
        assert result.output.strip() == "no changes"
        assert database_state(app) == before


def test_applying_the_same_file_twice_changes_nothing_the_second_time(app, runner, tmp_path):
    apply_text(runner, tmp_path, PIPELINE)
    before = database_state(app)
    assert apply_text(runner, tmp_path, PIPELINE).output.strip() == "no changes"
    assert database_state(app) == before


def test_dry_run_says_what_would_change_and_changes_nothing(app, client, runner, tmp_path):
    make_task(client, name="old")
    before = database_state(app)
    result = apply_text(runner, tmp_path, PIPELINE, "--dry-run", "--prune")
    assert result.output.splitlines() == [
        "create 'extract'", "create 'load'", "create 'transform'", "delete 'old'",
        "dry run: 3 to create, 1 to delete; nothing was changed",
    ]
    assert database_state(app) == before


def test_a_change_names_its_fields_and_reschedules_only_on_a_schedule_change(app, runner, tmp_path):
    apply_text(runner, tmp_path, PIPELINE)
    due = tasks_in_db(app)["extract"].next_run_at
    described = PIPELINE.replace("    timezone: Europe/Berlin\n", "    timezone: Europe/Berlin\n    description: x\n")
    result = apply_text(runner, tmp_path, described.replace("[transform]", "[transform, extract]"))
    assert result.output.splitlines() == [
        "update 'extract': description", "update 'load': depends_on", "applied: 2 updated",
    ]
    tasks = tasks_in_db(app)
    assert tasks["extract"].next_run_at == due
    assert tasks["load"].parent_names == ["extract", "transform"]

    result = apply_text(runner, tmp_path, described.replace('"0 2 * * *"', '"*/1 * * * *"'))
    assert result.output.splitlines()[:2] == ["update 'extract': cron_expression", "update 'load': depends_on"]
    assert tasks_in_db(app)["extract"].next_run_at != due

    updates = [entry for entry in audit_entries(app) if entry.task_id == tasks["extract"].id][1:]
    assert [entry.changes for entry in updates] == [
        {"description": ["", "x"]}, {"cron_expression": ["0 2 * * *", "*/1 * * * *"]},
    ]
    assert {entry.action for entry in updates} == {"apply"}


def test_without_prune_missing_tasks_are_kept_and_with_prune_deleted_with_their_runs(app, client, runner, tmp_path):
    old = make_task(client, name="old")
    with app.app_context():
        db.session.add(Run(task_id=old["id"], trigger="manual", status="success",
                           scheduled_for=datetime.now(timezone.utc)))
        db.session.commit()
    apply_text(runner, tmp_path, PIPELINE)
    assert "old" in tasks_in_db(app)

    result = apply_text(runner, tmp_path, PIPELINE, "--prune")
    assert result.output.splitlines() == ["delete 'old'", "applied: 1 deleted"]
    assert set(tasks_in_db(app)) == {"extract", "load", "transform"}
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Run)) == 0
    deleted = [entry for entry in audit_entries(app) if entry.task_id == old["id"]][-1]
    assert (deleted.action, deleted.actor) == ("apply", "cli")
    assert deleted.changes["name"] == ["old", None]


def test_prune_deletes_a_parent_and_its_children_together(app, runner, tmp_path):
    apply_text(runner, tmp_path, PIPELINE)
    result = apply_text(runner, tmp_path, "tasks: {}\n", "--prune")
    assert result.output.splitlines()[-1] == "applied: 3 deleted"
    assert tasks_in_db(app) == {}


def test_pruning_a_parent_that_a_kept_task_still_needs_is_refused(app, runner, tmp_path):
    apply_text(runner, tmp_path, PIPELINE)
    before = database_state(app)
    without_extract = PIPELINE[: PIPELINE.index("  extract:")]
    result = apply_text(runner, tmp_path, without_extract, "--prune", ok=False)
    assert problem_lines(result) == ["task 'transform': depends_on: Deleted by prune (not in the file): 'extract'."]
    assert database_state(app) == before
    # Without --prune the parent is kept, so the same file is fine.
    assert apply_text(runner, tmp_path, without_extract).output.strip() == "no changes"


def test_a_file_with_any_invalid_task_changes_nothing_and_names_each_task_and_field(app, client, runner, tmp_path):
    make_task(client, name="kept")
    before = database_state(app)
    text = PIPELINE + """\
  broken:
    cron_expression: "61 * * * *"
    max_retries: -1
    action: {type: http, url: not-a-url}
  orphan:
    depends_on: [ghost]
    action: {type: shell, command: x}
  lonely:
    action: {type: shell, command: x}
    colour: blue
"""
    result = apply_text(runner, tmp_path, text, "--prune", ok=False)
    assert "nothing was changed" in result.output
    lines = problem_lines(result)
    assert any(line.startswith("task 'broken': action.url: ") for line in lines), lines
    assert any(line.startswith("task 'broken': cron_expression: ") for line in lines), lines
    assert any(line.startswith("task 'broken': max_retries: ") for line in lines), lines
    assert "task 'lonely': colour: Unknown field." in lines
    assert "task 'orphan': depends_on: Unknown tasks (in neither the file nor the database): 'ghost'." in lines
    assert database_state(app) == before


def test_a_task_without_cron_or_parents_and_a_self_dependency_are_refused(runner, tmp_path):
    text = """\
tasks:
  a: {action: {type: shell, command: x}}
  b: {depends_on: [b], action: {type: shell, command: x}}
"""
    lines = problem_lines(apply_text(runner, tmp_path, text, ok=False))
    assert lines == [
        "task 'a': cron_expression: Required unless the task has interval_seconds, run_at or depends_on.",
        "task 'b': depends_on: A task cannot depend on itself.",
    ]


def test_a_cycle_is_refused_in_the_file_and_across_file_and_database(app, runner, tmp_path):
    cycle = """\
tasks:
  a: {depends_on: [c], action: {type: shell, command: x}}
  b: {depends_on: [a], action: {type: shell, command: x}}
  c: {depends_on: [b], action: {type: shell, command: x}}
"""
    lines = problem_lines(apply_text(runner, tmp_path, cycle, ok=False))
    assert lines == ["task 'a': depends_on: Would create a cycle: 'a' -> 'c' -> 'b' -> 'a'."]
    assert tasks_in_db(app) == {}

    apply_text(runner, tmp_path, PIPELINE)
    # extract is kept from the database (no --prune) and would now depend on its own grandchild.
    closing = "tasks:\n  extract: {depends_on: [load], action: {type: shell, command: x}}\n"
    lines = problem_lines(apply_text(runner, tmp_path, closing, ok=False))
    assert lines == [
        "task 'extract': depends_on: Would create a cycle: 'extract' -> 'load' -> 'transform' -> 'extract'.",
    ]


def test_masked_secrets_keep_the_stored_values(app, runner, tmp_path):
    apply_text(runner, tmp_path, PIPELINE)
    masked = run_cli(runner, "export").stdout
    changed = masked.replace("command: load --all", "command: load --some")
    result = apply_text(runner, tmp_path, changed)
    assert result.output.splitlines() == ["update 'load': action", "applied: 1 updated"]
    tasks = tasks_in_db(app)
    assert tasks["load"].action == {"type": "shell", "command": "load --some", "env": {"DB_PASSWORD": "hunter2"},
                                    "cwd": None}
    assert tasks["extract"].action["headers"] == {"Authorization": "Bearer tok-1"}
    assert tasks["extract"].notify["url"] == HOOK

    # A new secret value replaces the stored one; the audit entry says so without either value.
    apply_text(runner, tmp_path, changed.replace("DB_PASSWORD: '***'", "DB_PASSWORD: swordfish"))
    assert tasks_in_db(app)["load"].action["env"] == {"DB_PASSWORD": "swordfish"}
    last = audit_entries(app)[-1]
    assert set(last.changes) == {"action"}
    assert "hunter2" not in str(last.changes) and "swordfish" not in str(last.changes)


def test_a_new_task_given_the_mask_makes_the_file_invalid(app, runner, tmp_path):
    text = """\
tasks:
  fresh:
    cron_expression: "@daily"
    action: {type: http, url: "http://x.example.com/", headers: {Authorization: "***"}}
    notify: {url: "https://hooks.example.com/***"}
"""
    lines = problem_lines(apply_text(runner, tmp_path, text, ok=False))
    assert [line.split(": ")[:2] for line in lines] == [
        ["task 'fresh'", "action.headers.Authorization"], ["task 'fresh'", "notify.url"],
    ]
    assert tasks_in_db(app) == {}


@pytest.mark.parametrize(("text", "expected"), [
    ("", "The document must be a mapping with a 'tasks' key; it is empty."),
    ("- a\n- b\n", "The document must be a mapping with a 'tasks' key; it is a list."),
    ("just text\n", "The document must be a mapping with a 'tasks' key; it is a str."),
    ("tasks: {}\nextra: 1\n", "extra: Unknown field: the document has only 'tasks'."),
    ("{}\n", "tasks: Missing: a mapping of task names to tasks (it may be empty: {})."),
    ("tasks: [a]\n", "tasks: Must be a mapping of task names to tasks."),
    ("tasks:\n  123: {}\n", "tasks: Task names must be strings; 123 is not (quote it)."),
    ("tasks:\n  a: 5\n", "task 'a': Must be a mapping of the task's fields."),
    ("tasks: {a: {}}\ntasks: {}\n", "found duplicate key 'tasks' (line 2, column 1)."),
    ("tasks: [\n", "Not valid YAML: "),
    ("tasks:\n  a: {cron_expression: '@daily', action: {type: python, callable: 'm:f', args: [2026-01-01]}}\n",
     "task 'a': action.args.0: A date is not a JSON value; quote it to make it a string."),
    ("tasks:\n  a: {cron_expression: '@daily', action: {type: python, callable: 'm:f', args: [.inf]}}\n",
     "task 'a': action.args.0: Must be a finite number."),
    ("tasks:\n  a: {action: &x {type: python, callable: 'm:f', args: [*x]}}\n",
     "task 'a': Nested more than 64 levels deep."),
    ("tasks:\n  a: {depends_on: [1], cron_expression: '@daily', action: {type: shell, command: x}}\n",
     "task 'a': depends_on.0: Must be a task name (a string)."),
    ("tasks:\n  a: {name: b, cron_expression: '@daily', action: {type: shell, command: x}}\n",
     "task 'a': name: The task's key is its name: leave this out or make it the same."),
])
def test_documents_of_the_wrong_shape_get_a_clear_error(app, runner, tmp_path, text, expected):
    result = apply_text(runner, tmp_path, text, ok=False)
    assert expected in result.output
    assert tasks_in_db(app) == {}


def test_yaml_merge_keys_may_override_what_they_merge(app, runner, tmp_path):
    # The document has only `tasks`, so anchors live inside it.
    text = """\
tasks:
  a: &base {cron_expression: "@daily", action: {type: shell, command: x}}
  b: {<<: *base, cron_expression: "@hourly"}
"""
    apply_text(runner, tmp_path, text)
    assert tasks_in_db(app)["b"].cron_expression == "@hourly"


def test_apply_reads_stdin(app, runner, tmp_path):
    result = runner.invoke(args=["tasks", "apply", "-"], input=PIPELINE)
    assert result.exit_code == 0, result.output
    assert set(tasks_in_db(app)) == {"extract", "load", "transform"}


# --- the pure rules ----------------------------------------------------------------------


def values(**fields) -> dict:
    base = {field: None for field in SETTABLE}
    base.update(depends_on=[], cron_expression="@daily", action={"type": "shell", "command": "x"})
    base.update(fields)
    return base


def test_plan_orders_creates_updates_deletes_and_leaves_out_the_unchanged():
    stored = {"same": values(), "changed": values(max_retries=1), "gone": values()}
    desired = {"same": values(), "changed": values(max_retries=2, enabled=True), "new": values()}
    assert plan(desired, stored, prune=False) == [
        Change("new", "create"), Change("changed", "update", ("enabled", "max_retries")),
    ]
    assert plan(desired, stored, prune=True)[-1] == Change("gone", "delete")


def test_plan_tells_true_from_one_in_free_form_json():
    stored = {"a": values(action={"type": "python", "callable": "m:f", "args": [1]})}
    desired = {"a": values(action={"type": "python", "callable": "m:f", "args": [True]})}
    assert plan(desired, stored, prune=False) == [Change("a", "update", ("action",))]


def test_check_graph_keeps_database_parents_unless_pruned():
    desired = {"child": values(depends_on=["parent"])}
    assert check_graph(desired, {"child"}, {"parent": []}, prune=False) == []
    assert check_graph(desired, {"child"}, {"parent": []}, prune=True) == [
        Problem(("tasks", "child", "depends_on"), "Deleted by prune (not in the file): 'parent'."),
    ]


def test_yaml_round_trips_strings_a_person_can_read():
    document = {"tasks": {"a": {"action": {"command": "one\ntwo\n", "odd": "trailing  \n", "plain": "x"}}}}
    text = dump_yaml(document)
    assert "command: |\n" in text
    assert load_yaml(text) == document


def test_load_yaml_refuses_duplicate_keys_without_a_traceback():
    with pytest.raises(InvalidDocument) as raised:
        load_yaml("tasks:\n  a: {}\n  a: {}\n")
    assert raised.value.problems[0].line() == (
        "Not valid YAML: while constructing a mapping: found duplicate key 'a' (line 3, column 3)."
    )


def test_problems_nest_like_marshmallow_errors_for_the_api():
    problems = [
        Problem(("tasks",), "Task names must be strings; 1 is not (quote it)."),
        Problem(("tasks", "a", "_schema"), "Must be a mapping of the task's fields."),
        Problem(("tasks", "b", "action", "url"), "Not a valid URL."),
        Problem(("tasks", "b", "depends_on"), "one"),
        Problem(("tasks", "b", "depends_on"), "two"),
    ]
    assert InvalidDocument(problems).errors() == {"tasks": {
        "_schema": ["Task names must be strings; 1 is not (quote it)."],
        "a": {"_schema": ["Must be a mapping of the task's fields."]},
        "b": {"action": {"url": ["Not a valid URL."]}, "depends_on": ["one", "two"]},
    }}
    assert InvalidDocument([Problem((), "Not valid YAML.")]).errors() == {"_schema": ["Not valid YAML."]}
