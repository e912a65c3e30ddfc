"""The filtered lists the API and the admin pages both show: tasks and the execution log."""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import joinedload, selectinload

from .models import Run, Task


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def task_query(filters: dict[str, Any]) -> sa.Select:
    """Tasks matching ``enabled``, ``status`` and ``q`` (name contains, % and _ taken literally)."""
    # depends_on comes from the parents: load them for the whole page in one query.
    query = sa.select(Task).options(selectinload(Task.parents))
    if "enabled" in filters:
        query = query.where(Task.enabled == filters["enabled"])
    if "status" in filters:
        query = query.where(Task.status == filters["status"])
    if filters.get("q"):
        query = query.where(Task.name.ilike(f"%{_escape_like(filters['q'])}%", escape="\\"))
    return query


def run_query(filters: dict[str, Any]) -> sa.Select:
    """Runs matching ``task_id``, ``status``, ``trigger``; ``since``/``until`` bound started_at, inclusive."""
    query = sa.select(Run).options(joinedload(Run.task))
    for name in ("task_id", "status", "trigger"):
        if name in filters:
            query = query.where(getattr(Run, name) == filters[name])
    if "since" in filters:
        query = query.where(Run.started_at >= filters["since"])
    if "until" in filters:
        query = query.where(Run.started_at <= filters["until"])
    return query
