"""Pools: at most ``slots`` runs of their tasks at once. Writes that the API and the admin share.

The limit itself is kept by the engine (engine/pool_seats.py): each claim takes a slot
with a conditional UPDATE. Here: the pools as people edit them. Lowering ``slots`` below
what runs now stops nothing; new runs wait until enough have finished.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from . import audit
from .extensions import db, scheduler
from .models import Pool, Run, Task
from .refusals import Conflict, NotFound

POOL_FIELDS = ("slots", "description")


def get_pool(name: str) -> Pool:
    pool = db.session.get(Pool, name)
    if pool is None:
        raise NotFound("pool", name)
    return pool


def list_pools() -> list[Pool]:
    return list(db.session.scalars(sa.select(Pool).order_by(Pool.name)))


def waiting_by_pool() -> dict[str, int]:
    """Pending runs of each pool's tasks: the runs waiting for a slot (or for their task)."""
    rows = db.session.execute(
        sa.select(Task.pool, sa.func.count(Run.id)).join(Run, Run.task_id == Task.id)
        .where(Task.pool.is_not(None), Run.status == "pending").group_by(Task.pool)
    )
    return {name: count for name, count in rows}


def _snapshot(pool: Pool | None) -> dict[str, Any] | None:
    if pool is None:
        return None
    return {"pool": pool.name, **{field: getattr(pool, field) for field in POOL_FIELDS}}


def create_pool(data: dict[str, Any]) -> Pool:
    if db.session.get(Pool, data["name"]) is not None:
        raise Conflict(f"a pool named {data['name']!r} already exists", {"name": ["Already taken."]})
    pool = Pool(**data, running=0)
    db.session.add(pool)
    audit.record("create", None, audit.diff(None, _snapshot(pool)))
    db.session.commit()
    return pool


def update_pool(pool: Pool, data: dict[str, Any]) -> Pool:
    before = _snapshot(pool)
    for field in POOL_FIELDS:
        if field in data:
            setattr(pool, field, data[field])
    changes = audit.diff(before, _snapshot(pool))
    if changes:
        changes["pool"] = [pool.name, pool.name]
        audit.record("update", None, changes)
    db.session.commit()
    scheduler.wake()  # more slots: waiting runs may start
    return pool


def delete_pool(pool: Pool) -> None:
    users = db.session.scalars(sa.select(Task.name).where(Task.pool == pool.name).order_by(Task.name)).all()
    if users:
        raise Conflict(f"pool {pool.name!r} is used by: {', '.join(users)}; change those tasks first")
    audit.record("delete", None, audit.diff(_snapshot(pool), None))
    db.session.delete(pool)
    db.session.commit()
