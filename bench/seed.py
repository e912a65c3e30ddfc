"""Seeding our tables straight through SQLAlchemy Core (never the API), in a forked child.

Task shapes:
- ``burst``: every task due at ``t0`` (the cron fires once a year otherwise);
- ``spread``: task i due at ``t0 + floor(i * span / n)`` seconds, each on its own once-a-year 6-field cron;
- ``idle``: every task enabled and due next New Year (none due during the run).

Run control variants (bench/run_control.py): ``policy`` sets every task's concurrency_policy
(default ``forbid``, what every workload used so far); ``pool_slots`` creates the pool
``BENCH_POOL`` with that many slots and puts every task in it.
"""
from __future__ import annotations

import math
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from .common import FAR_FUTURE_CRON, utc

PYTHON_NOOP = {"type": "python", "callable": "bench.actions:noop"}
SHELL_TRUE = {"type": "shell", "command": "true"}
INSERT_CHUNK = 5000
BENCH_POOL = "bench"


def make_app(url: str, **overrides: Any):
    from scheduler_service import create_app

    config = {"SQLALCHEMY_DATABASE_URI": url, "SCHEDULER_ENABLED": False}
    config.update(overrides)
    return create_app(config)


def next_new_year(now: datetime) -> datetime:
    return datetime(now.year + 1, 1, 1, tzinfo=timezone.utc)


def action_for(kind: str) -> dict[str, Any]:
    return {"python": PYTHON_NOOP, "shell": SHELL_TRUE}[kind]


def task_row(index: int, cron: str, next_run_at: datetime, action: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "name": f"bench-{index:07d}", "description": "", "cron_expression": cron, "timezone": "UTC",
        "enabled": True, "action": action, "timeout_seconds": 3600, "max_retries": 3,
        "retry_delay_seconds": 60, "retry_max_delay_seconds": 3600, "concurrency_policy": "forbid",
        # Generous, on both sides: a slow burst must run late, not be skipped as misfired.
        "misfire_grace_seconds": 3600, "status": "pending", "retry_count": 0, "active_runs": 0,
        # due_at: when the slot comes due (the slot plus its jitter; none here), what the tick reads.
        "next_run_at": next_run_at, "due_at": next_run_at, "created_at": now, "updated_at": now,
    }


def spread_slot(t0: float, index: int, n: int, span: float) -> float:
    return t0 + math.floor(index * span / n)


def seed_tasks(url: str, shape: str, n: int, *, action: str = "python", margin: float = 3.0,
               span: float = 0.0, start_delay: float = 0.0, with_token: bool = False,
               policy: str = "forbid", pool_slots: int | None = None) -> dict[str, Any]:
    """Create the schema and ``n`` tasks; returns ``{"t0": epoch, "token": ...}``.

    For ``burst`` and ``spread``, ``t0`` is a whole second at least ``margin`` seconds after
    seeding ends, so the measuring process starts its engine before anything is due.
    ``policy`` is every task's concurrency_policy; with ``pool_slots`` every task is in the
    pool ``BENCH_POOL`` of that many slots.
    """
    import sqlalchemy as sa

    from scheduler_service.auth import issue_token
    from scheduler_service.database import db
    from scheduler_service.models import Pool, Task

    app = make_app(url)
    result: dict[str, Any] = {}
    with app.app_context():
        db.create_all()
        now = datetime.now(timezone.utc)
        placeholder = next_new_year(now)
        table = Task.__table__
        base_action = action_for(action)
        run_control = {"concurrency_policy": policy, **({"pool": BENCH_POOL} if pool_slots else {})}
        with db.engine.begin() as connection:
            if pool_slots:
                connection.execute(Pool.__table__.insert(), [{
                    "name": BENCH_POOL, "slots": pool_slots, "description": "bench.run_control", "running": 0,
                    "created_at": now, "updated_at": now,
                }])
            for start in range(0, n, INSERT_CHUNK):
                rows = []
                for index in range(start, min(n, start + INSERT_CHUNK)):
                    row_action = dict(base_action)
                    if shape == "spread":
                        row_action["kwargs"] = {"due": 0.0}  # set below, once t0 is known
                    rows.append({**task_row(index, FAR_FUTURE_CRON, placeholder, row_action, now), **run_control})
                connection.execute(table.insert(), rows)
        if with_token:
            result["token"] = issue_token("bench")
        t0 = math.ceil(time.time() + margin + start_delay)
        if shape == "burst":
            with db.engine.begin() as connection:
                connection.execute(sa.update(table).values(next_run_at=utc(t0), due_at=utc(t0)))
        elif shape == "spread":
            with db.engine.begin() as connection:
                # One UPDATE per task: each gets its own second, cron and due kwarg.
                for start in range(0, n, INSERT_CHUNK):
                    params = []
                    for index in range(start, min(n, start + INSERT_CHUNK)):
                        due = spread_slot(t0, index, n, span)
                        moment = utc(due)
                        cron = f"{moment.minute} {moment.hour} {moment.day} {moment.month} * {moment.second}"
                        params.append({"b_id": index + 1, "b_next": moment, "b_cron": cron,
                                       "b_action": {**base_action, "kwargs": {"due": due}}})
                    connection.execute(
                        sa.update(table).where(table.c.id == sa.bindparam("b_id")).values(
                            next_run_at=sa.bindparam("b_next"), due_at=sa.bindparam("b_next"),
                            cron_expression=sa.bindparam("b_cron"),
                            action=sa.bindparam("b_action", type_=table.c.action.type)),
                        params,
                    )
        result["t0"] = t0
        db.session.remove()
        db.engine.dispose()
    return result


def new_year_epoch() -> float:
    return next_new_year(datetime.now(timezone.utc)).timestamp()


def wait_margin(n: int) -> float:
    return 1.5 + n / 5000


def timedelta_s(delta: timedelta) -> float:
    return delta.total_seconds()
