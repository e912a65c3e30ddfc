"""A pool's slots, taken and given back inside the transactions that claim and record runs.

Taking is one conditional UPDATE (``running < slots``): on PostgreSQL the pool's row lock
makes concurrent claims wait for each other and re-check, on SQLite one writer at a time
does; either way no claim can take a slot another claim took. The run remembers its pool
(``run.pool``), and whatever finishes it gives the slot back: recording, lease recovery,
a task deleted while it runs.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import sqlalchemy as sa

from ..database import db
from ..models import Run
from . import statements as sql


def take(pool: str) -> bool:
    """Take one slot of ``pool`` in the session's transaction; False if none is free."""
    return bool(sql.execute(sql.ACQUIRE_POOL_SLOT, {"b_pool": pool}).rowcount)


def give_back(counts: Mapping[str, int]) -> None:
    """Give back ``counts[pool]`` slots of each pool, in name order (one lock order for every process)."""
    params = [{"b_pool": name, "b_count": count} for name, count in sorted(counts.items()) if count]
    if params:
        sql.execute(sql.RELEASE_POOL_SLOTS, params)


def held_by(pools: Iterable[str | None]) -> Counter[str]:
    """How many slots of each pool these runs' ``pool`` values hold."""
    return Counter(pool for pool in pools if pool is not None)


def give_back_for_task(task_id: int) -> None:
    """Before a task's runs are deleted with it: give back the slots its running runs hold."""
    rows = db.session.execute(
        sa.select(Run.pool).where(Run.task_id == task_id, Run.status == "running", Run.pool.is_not(None))
    ).scalars()
    give_back(held_by(rows))
