"""What the API does to tasks, apart from the HTTP: the rules that need the database.

Views and the admin call these; each either completes and commits, or raises a
``refusals.Refused`` before anything is written, so a refused change leaves nothing
half-written. What a refusal looks like over HTTP is errors.py's business.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from . import audit
from .clock import utcnow
from .engine import pool_seats
from .engine.active_runs import EXCLUSIVE_POLICIES, active_run_clause
from .engine.dependencies import find_cycle
from .extensions import db, scheduler
from .masking import MaskError, restore_action, restore_notify
from .models import Pool, Run, Task, task_dependencies
from .pausing import clear_pause, drop_queued_slots
from .refusals import Conflict, Invalid
from .run_rows import NewRuns
from .task_schedules import anchor_at, reschedule, schedule_problems, set_next_slot

# A change of one of these sets the schedule again from now, and moves its anchor.
ANCHOR_FIELDS = ("cron_expression", "interval_seconds", "run_at", "timezone")
# A change of one of these starts the schedule again from now (missed slots are not run).
SCHEDULE_FIELDS = (*ANCHOR_FIELDS, "calendar", "enabled")


def _check_name_free(name: str, task_id: int | None) -> None:
    query = sa.select(Task.id).where(Task.name == name)
    if task_id is not None:
        query = query.where(Task.id != task_id)
    if db.session.execute(query).first() is not None:
        raise Conflict(f"a task named {name!r} already exists", {"name": ["Already taken."]})


def _resolve_parents(task_id: int | None, parent_ids: list[int]) -> list[Task]:
    """Load the parents, refusing unknown ids, the task itself, or a cycle."""
    wanted = list(dict.fromkeys(parent_ids))
    if task_id is not None and task_id in wanted:
        raise Invalid("depends_on", "A task cannot depend on itself.")
    parents = db.session.scalars(sa.select(Task).where(Task.id.in_(wanted))).all() if wanted else []
    missing = sorted(set(wanted) - {parent.id for parent in parents})
    if missing:
        raise Invalid("depends_on", f"Unknown task ids: {missing}.")
    if task_id is not None and wanted:
        parents_of: dict[int, list[int]] = defaultdict(list)
        for child_id, parent_id in db.session.execute(sa.select(task_dependencies)):
            parents_of[child_id].append(parent_id)
        cycle = find_cycle(task_id, wanted, parents_of)
        if cycle:
            names = dict(db.session.execute(sa.select(Task.id, Task.name).where(Task.id.in_(cycle))).all())
            path = " -> ".join(repr(names.get(node, node)) for node in cycle)
            raise Invalid("depends_on", f"Would create a cycle: {path}.")
    by_id = {parent.id: parent for parent in parents}
    return [by_id[parent_id] for parent_id in wanted]


def _check_schedule(task: Task | None, data: dict[str, Any], parents: list[Task], now: datetime) -> None:
    """Refuse a schedule that is not one (see ``schedule_problems``) before anything is written."""
    def value(field: str) -> Any:
        return data[field] if field in data else getattr(task, field, None)

    values = {field: value(field) for field in (*ANCHOR_FIELDS, "calendar")}
    anchor_moves = task is None or any(field in data and data[field] != getattr(task, field) for field in ANCHOR_FIELDS)
    values["schedule_anchor"] = anchor_at(now) if anchor_moves else task.schedule_anchor
    run_at_changed = "run_at" in data and (task is None or data["run_at"] != task.run_at)
    problems = schedule_problems(values, has_parents=bool(parents), run_at_changed=run_at_changed, now=now)
    if problems:
        raise Invalid(*problems[0])
    pool = data.get("pool")
    if pool is not None and db.session.get(Pool, pool) is None:
        raise Invalid("pool", f"Unknown pool {pool!r}.")


def assign(task: Task, values: dict[str, Any], now: datetime) -> None:
    """Set ``values`` on ``task``; a change of its schedule starts it again from ``now``
    (missed slots are not run), any other change keeps the slot it is due at."""
    def changed(fields: tuple[str, ...]) -> bool:
        return any(field in values and values[field] != getattr(task, field) for field in fields)

    anchor_moved, schedule_changed = changed(ANCHOR_FIELDS), changed(SCHEDULE_FIELDS)
    changed_enabled = changed(("enabled",))
    jitter_changed = changed(("jitter_seconds",))
    for field, value in values.items():
        setattr(task, field, value)
    if not task.enabled:
        drop_queued_slots(task, now)
    elif changed_enabled:
        clear_pause(task)  # enabled by an edit: no longer paused
    if anchor_moved:
        task.schedule_anchor = anchor_at(now)
    if schedule_changed:
        reschedule(task, now)
    elif jitter_changed:
        set_next_slot(task, task.next_run_at)  # the same slot, with a delay drawn from the new jitter


def restore_secrets(data: dict[str, Any], stored: Task | None) -> None:
    """Put the stored secret values back where ``data`` sends the mask ("***") that reads show."""
    try:
        if "action" in data:
            data["action"] = restore_action(data["action"], stored.action if stored else None)
        if data.get("notify") is not None:
            data["notify"] = restore_notify(data["notify"], stored.notify if stored else None)
    except MaskError as exc:
        raise Invalid(exc.path, str(exc)) from exc


def create_task(data: dict[str, Any]) -> Task:
    _check_name_free(data["name"], None)
    restore_secrets(data, None)
    parents = _resolve_parents(None, data.pop("depends_on"))
    now = utcnow()
    _check_schedule(None, data, parents, now)
    task = Task(**data, parents=parents, schedule_anchor=anchor_at(now))
    db.session.add(task)
    db.session.flush()  # the id: the audit entry's, and the one the jitter is drawn from
    reschedule(task, now)
    audit.record("create", task.id, audit.diff(None, audit.task_snapshot(task)))
    db.session.commit()
    scheduler.wake()
    return task


def update_task(task: Task, data: dict[str, Any]) -> Task:
    """Apply the given fields (all of them for PUT, some for PATCH)."""
    if "name" in data:
        _check_name_free(data["name"], task.id)
    restore_secrets(data, task)
    parents = _resolve_parents(task.id, data.pop("depends_on")) if "depends_on" in data else task.parents
    now = utcnow()
    _check_schedule(task, data, parents, now)
    before = audit.task_snapshot(task)
    assign(task, data, now)
    task.parents = parents
    changes = audit.diff(before, audit.task_snapshot(task))
    if changes:  # a write that changes nothing is not a change
        audit.record("update", task.id, changes)
    db.session.commit()
    scheduler.wake()
    return task


def toggle_task(task: Task) -> Task:
    task.enabled = not task.enabled
    now = utcnow()
    if not task.enabled:
        drop_queued_slots(task, now)
    else:
        clear_pause(task)
    # Enabling computes the next slot from now: missed slots are not run.
    reschedule(task, now)
    audit.record("toggle", task.id, {"enabled": [not task.enabled, task.enabled]})
    db.session.commit()
    scheduler.wake()
    return task


def delete_task(task: Task) -> None:
    children = [child.name for child in task.children]
    if children:
        raise Conflict(f"task {task.name!r} is a parent of: {', '.join(children)}; remove those dependencies first")
    audit.record("delete", task.id, audit.diff(audit.task_snapshot(task), None))
    pool_seats.give_back_for_task(task.id)  # its running runs go with it
    db.session.delete(task)
    db.session.commit()


def request_run(task: Task) -> Run:
    """Queue a manual run; the scheduler claims and executes it."""
    now = utcnow()
    # One conditional UPDATE decides `forbid` atomically, however many
    # processes answer API calls at the same moment.
    claimed = db.session.execute(
        sa.update(Task)
        .where(
            Task.id == task.id,
            sa.or_(Task.concurrency_policy.not_in(EXCLUSIVE_POLICIES), sa.not_(active_run_clause(Task))),
        )
        .values(active_runs=Task.active_runs + 1)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not claimed:
        db.session.rollback()
        raise Conflict(f"task {task.name!r} has an active run or retry (concurrency_policy is {task.concurrency_policy})")
    with NewRuns(db.session.connection()) as runs:
        [run_id] = runs.add([{"task_id": task.id, "trigger": "manual", "status": "pending", "attempt": 1,
                              "scheduled_for": now, "created_at": now}])
    audit.record("run", task.id, {"run_id": [None, run_id]})
    db.session.commit()
    scheduler.wake()
    return db.session.get(Run, run_id)
