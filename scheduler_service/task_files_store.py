"""Tasks as files, the database side: the stored tasks as a document (export), the plan that makes
them match a document, and applying it, all or nothing, in one transaction.

``plan`` and ``changed_fields`` are pure (desired against stored values); ``apply_document`` is the
one function that writes, used by ``flask tasks apply`` and ``POST /api/apply/`` alike.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from . import audit
from .clock import utcnow
from .extensions import db, scheduler
from .masking import mask_action, mask_notify
from .models import Task
from .services import assign
from .task_schedules import anchor_at, reschedule
from .task_files import DOCUMENT_KEY, FILE_FIELDS, read_document

ChangeKind = Literal["create", "update", "delete"]
AUDIT_ACTION = "apply"


@dataclass(frozen=True)
class Change:
    """What applying does to one task; ``fields`` names what an update changes."""

    task: str
    change: ChangeKind
    fields: tuple[str, ...] = ()

    def line(self) -> str:
        fields = f": {', '.join(self.fields)}" if self.fields else ""
        return f"{self.change} {self.task!r}{fields}"


# --- the plan (pure) -------------------------------------------------------------------------


def _canonical(value: Any) -> str:
    # Compared as JSON text: Python's == takes true for 1 and 1.0 for 1, the stored JSON does not.
    return json.dumps(value, sort_keys=True, default=_iso)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):  # run_at: aware UTC on both sides
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} in a task's values")


def changed_fields(desired: Mapping[str, Any], stored: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(field for field in FILE_FIELDS if _canonical(desired[field]) != _canonical(stored[field]))


def plan(
    desired: Mapping[str, Mapping[str, Any]], stored: Mapping[str, Mapping[str, Any]], prune: bool
) -> list[Change]:
    """Creates, then updates, then (with ``prune``) deletes, each sorted by name; unchanged tasks are left out."""
    creates = [Change(name, "create") for name in sorted(desired) if name not in stored]
    updates = [
        Change(name, "update", fields)
        for name in sorted(desired) if name in stored
        for fields in [changed_fields(desired[name], stored[name])] if fields
    ]
    deletes = [Change(name, "delete") for name in sorted(stored) if prune and name not in desired]
    return creates + updates + deletes


# --- the stored tasks ------------------------------------------------------------------------


def stored_values(task: Task) -> dict[str, Any]:
    """A stored task as a file would say it: ``FILE_FIELDS``, parents by name, secrets in clear."""
    values = {field: getattr(task, field) for field in FILE_FIELDS}
    values["depends_on"] = sorted(parent.name for parent in task.parents)
    return values


def stored_tasks() -> dict[str, Task]:
    tasks = db.session.scalars(sa.select(Task).options(selectinload(Task.parents))).all()
    return {task.name: task for task in tasks}


def export_entry(values: Mapping[str, Any], with_secrets: bool) -> dict[str, Any]:
    """A task's entry in an exported file: its ``FILE_FIELDS``, secrets masked unless asked for."""
    entry = {field: values[field] for field in FILE_FIELDS}
    if entry["run_at"] is not None:  # as the API writes it, which a file read back parses the same
        entry["run_at"] = entry["run_at"].isoformat()
    if not with_secrets:
        entry["action"] = mask_action(entry["action"])
        entry["notify"] = mask_notify(entry["notify"])
    return entry


def export_stored(with_secrets: bool) -> dict[str, Any]:
    """The document of every stored task (``tasks export``), sorted by name so that an export is deterministic."""
    stored = {name: stored_values(task) for name, task in stored_tasks().items()}
    return {DOCUMENT_KEY: {name: export_entry(stored[name], with_secrets) for name in sorted(stored)}}


# --- applying --------------------------------------------------------------------------------


def apply_document(document: Any, *, dry_run: bool, prune: bool) -> list[Change]:
    """Make the stored tasks match ``document`` (unless ``dry_run``) and say what that changes.

    Raises task_files.InvalidDocument, having changed nothing, if any task of it is invalid.
    """
    tasks = stored_tasks()
    stored = {name: stored_values(task) for name, task in tasks.items()}
    desired = read_document(document, stored, prune)
    changes = plan(desired, stored, prune)
    if changes and not dry_run:
        _write(changes, desired, tasks)
    return changes


def _write(changes: list[Change], desired: Mapping[str, Mapping[str, Any]], tasks: dict[str, Task]) -> None:
    """Write the plan and one audit entry per changed task in one commit."""
    now = utcnow()
    before = {change.task: audit.task_snapshot(tasks[change.task]) for change in changes if change.change != "create"}
    deleted_ids = {change.task: tasks[change.task].id for change in changes if change.change == "delete"}
    # No flush until every task is whole: a new task has no action until its fields are set.
    with db.session.no_autoflush:
        for change in changes:
            if change.change == "create":
                tasks[change.task] = Task(name=change.task)
                db.session.add(tasks[change.task])
        # Parents are set once every new task exists, so that one file may create a whole chain.
        for change in changes:
            if change.change == "create":
                tasks[change.task].schedule_anchor = anchor_at(now)
                _set_fields(tasks[change.task], desired[change.task], FILE_FIELDS, tasks, now)
            elif change.change == "update":
                _set_fields(tasks[change.task], desired[change.task], change.fields, tasks, now)
        for change in changes:
            if change.change == "delete":
                db.session.delete(tasks[change.task])
    db.session.flush()  # the new tasks' ids: their audit entries', and the ones their jitter is drawn from
    for change in changes:
        if change.change == "create":
            reschedule(tasks[change.task], now)
    for change in changes:
        if change.change == "delete":
            audit.record(AUDIT_ACTION, deleted_ids[change.task], audit.diff(before[change.task], None))
        else:
            task = tasks[change.task]
            audit.record(AUDIT_ACTION, task.id, audit.diff(before.get(change.task), audit.task_snapshot(task)))
    db.session.commit()
    scheduler.wake()


def _set_fields(task: Task, values: Mapping[str, Any], fields: tuple[str, ...], tasks: Mapping[str, Task],
                now: datetime) -> None:
    """Set ``fields`` of ``values`` on ``task`` by the API's own rule (services.assign), parents by name."""
    if "depends_on" in fields:
        task.parents = [tasks[name] for name in values["depends_on"]]
    assign(task, {field: values[field] for field in fields if field != "depends_on"}, now)
