"""The audit trail: who changed what, each field before and after, secrets masked.

A change and its entry are written in one transaction: ``record`` adds the entry to the
session and the caller's commit writes both, so there is no change without its author
and no entry for a change that was rolled back.

The actor is whoever the request was authenticated as (``auth`` sets ``token:NAME``, the
admin sets ``admin:USER``); outside a request, the CLI: ``cli``.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import g, has_app_context

from .database import db
from .masking import mask_action, mask_notify
from .models import AuditEntry, Task

CLI_ACTOR = "cli"

#: The task fields a person sets, in the API's order: what a diff compares.
TASK_FIELDS = (
    "name", "description", "cron_expression", "interval_seconds", "run_at", "timezone", "calendar",
    "jitter_seconds", "catchup", "enabled", "depends_on", "action",
    "timeout_seconds", "max_retries", "retry_delay_seconds", "retry_max_delay_seconds",
    "concurrency_policy", "misfire_grace_seconds", "notify", "pool", "pause_after_failures",
)


def set_actor(actor: str) -> None:
    """Name who makes this request's changes (``token:NAME``, ``admin:USER``)."""
    g.audit_actor = actor


def current_actor() -> str:
    return g.get("audit_actor", CLI_ACTOR) if has_app_context() else CLI_ACTOR


#: How each field that can hold a secret is shown in an entry.
_MASKED = {"action": mask_action, "notify": mask_notify}


def task_snapshot(task: Task) -> dict[str, Any]:
    """The fields of ``task`` a diff compares, secrets in clear: ``diff`` masks what it records."""
    return {field: json_value(getattr(task, field)) for field in TASK_FIELDS}


def json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def diff(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, list[Any]]:
    """``field -> [before, after]`` for each field that differs, secrets masked; a missing side is null throughout.

    Compared in clear, so a changed secret is recorded as a change of its field, "***" on both sides.
    """
    before = before or {}
    after = after or {}
    fields = list(dict.fromkeys([*before, *after]))
    return {
        field: [_shown(field, before.get(field)), _shown(field, after.get(field))]
        for field in fields
        if before.get(field) != after.get(field)
    }


def _shown(field: str, value: Any) -> Any:
    mask = _MASKED.get(field)
    return value if mask is None or value is None else mask(value)


def record(action: str, task_id: int | None, changes: dict[str, list[Any]] | None = None,
           actor: str | None = None) -> AuditEntry:
    """Add an entry to the session; the caller's commit writes it with the change itself."""
    entry = AuditEntry(actor=actor or current_actor(), action=action, task_id=task_id, changes=changes or {})
    db.session.add(entry)
    return entry
