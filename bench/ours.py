"""Our engine under each workload, one measurement per process.

    python -m bench.ours w1 --db sqlite --n 10000 --action python --workers 10
    python -m bench.ours w2 --db sqlite --n 1000 --span 300
    python -m bench.ours w3tick --db sqlite --n 100000
    python -m bench.ours w3rss --db sqlite --n 100000
    python -m bench.ours w3wait --db sqlite --n 10000

(w3wait is not one of the issue's workloads: it prices the tick while ``n`` due tasks
wait on a running parent, which every tick then looks at again.)

Run control (issue #16; driven by ``python -m bench.run_control``): ``w1`` also takes
``--policy buffer_all`` (every task's concurrency_policy; default forbid, as before),
``--pool-slots 10`` (every task in one pool of that many slots) and ``--check`` (read back
whether every task ran exactly once, the most runs that overlapped in time, and the most
runs the poll saw claimed at once).

The engine runs in this process, started the way the tests start it
(``scheduler.start(app)``); its runs are read back from the Run rows.
"""
from __future__ import annotations

import argparse
import gc
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from . import actions
from .common import (cpu_delta, cpu_seconds, emit, peak_rss_mb, psycopg_conninfo, quiet_logs, rss_mb, run_forked,
                     scratch_database, sleep_until, summary_ms, wait_for_server)
from .seed import make_app, seed_tasks, wait_margin

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


class FinishedCounter:
    """Counts finished runs over a raw DB-API connection: a poll costs well under a millisecond."""

    SQL = "SELECT count(*) FROM run WHERE status IN ('success', 'failed', 'skipped')"

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite"):
            import sqlite3

            self.connection = sqlite3.connect(url.split("sqlite:///", 1)[1], isolation_level=None)
        else:
            import psycopg

            self.connection = psycopg.connect(psycopg_conninfo(url), autocommit=True)

    def __call__(self) -> int:
        return self.connection.execute(self.SQL).fetchone()[0]

    def close(self) -> None:
        self.connection.close()


class CheckingCounter(FinishedCounter):
    """The same poll, also noting the most runs it saw claimed at once (status running): a sampled check
    of a pool's limit that, unlike the runs' own start and finish times, the workers' count cannot hide
    (a process claims ahead of its workers: engine/claim_window.py)."""

    SQL = ("SELECT coalesce(sum(CASE WHEN status IN ('success', 'failed', 'skipped') THEN 1 ELSE 0 END), 0), "
           "coalesce(sum(CASE WHEN status = 'running' THEN 1 ELSE 0 END), 0) FROM run")

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.max_running = 0

    def __call__(self) -> int:
        finished, running = self.connection.execute(self.SQL).fetchone()
        self.max_running = max(self.max_running, int(running))
        return int(finished)


def max_overlap(intervals: list[tuple[Any, Any]]) -> int:
    """The most intervals (start, end) that share a moment; at equal times a start counts before an end,
    so runs that only touch count as overlapping (the strict reading)."""
    events = sorted([(start, 0) for start, _ in intervals] + [(end, 1) for _, end in intervals])
    most = current = 0
    for _, kind in events:
        current += 1 if kind == 0 else -1
        most = max(most, current)
    return most


def run_checks(rows, n: int, action: str, calls: int) -> dict:
    """Whether every one of the ``n`` tasks ran exactly once (one Run row each, a success, and, for the
    python no-op, ``n`` calls), and the most runs whose [started_at, finished_at] overlapped."""
    per_task: dict[int, list[str]] = {}
    for row in rows:
        per_task.setdefault(row.task_id, []).append(row.status)
    once = sum(1 for statuses in per_task.values() if statuses == ["success"])
    more = sum(1 for statuses in per_task.values() if len(statuses) > 1)
    intervals = [(row.started_at, row.finished_at) for row in rows if row.started_at and row.finished_at]
    return {
        "tasks_with_runs": len(per_task), "tasks_once": once, "tasks_more_than_once": more,
        "tasks_without_run": n - len(per_task), "action_calls": calls if action == "python" else None,
        "exactly_once": once == n == len(per_task) == len(rows) and (action != "python" or calls == n),
        "max_overlap": max_overlap(intervals),
    }


def _run_rows(db, Run):
    import sqlalchemy as sa

    rows = db.session.execute(
        sa.select(Run.status, Run.scheduled_for, Run.started_at, Run.finished_at, Run.owner, Run.task_id)
    ).all()
    db.session.commit()
    return rows


def burst_or_spread(kind: str, n: int, action: str, workers: int, shape: str, span: float, timeout: float,
                    poll: float, policy: str = "forbid", pool_slots: int | None = None, check: bool = False) -> dict:
    """W1 (burst) and W2 (spread): the engine in this process runs every seeded task once.

    ``policy`` and ``pool_slots`` go to the seed (run control); ``check`` adds correctness figures."""
    from scheduler_service.database import db
    from scheduler_service.extensions import scheduler
    from scheduler_service.models import Pool, Run

    with scratch_database(kind) as scratch:
        seeded = run_forked(seed_tasks, scratch.url, shape, n, action=action, margin=wait_margin(n), span=span,
                            policy=policy, pool_slots=pool_slots)
        t0 = seeded["t0"]
        app = make_app(scratch.url, SCHEDULER_MAX_WORKERS=workers)
        with app.app_context():
            db.session.execute(db.select(Run.id).limit(1)).all()  # connect before the clock starts
            db.session.commit()
        gc.freeze()  # as wsgi.py does after start-up
        before = cpu_seconds()
        engine = scheduler.start(app)
        started_engine = time.time()
        if started_engine > t0 - 0.5:
            raise SystemExit(f"engine started {started_engine - t0:+.2f}s from t0: raise the margin")
        deadline = t0 + span + timeout
        done_at = None
        counter = (CheckingCounter if check else FinishedCounter)(scratch.url)
        with app.app_context():
            sleep_until(t0 + (span if shape == "spread" else 0))
            while time.time() < deadline:
                count = counter()
                if count >= n:
                    done_at = time.time()
                    break
                # Coarse while far from done (a poll costs the engine some GIL), fine near the end.
                time.sleep(poll if count >= 0.95 * n else max(poll, 0.25))
            counter.close()
            after = cpu_seconds()
            peak = peak_rss_mb()
            scheduler.stop(app, 0)
            rows = _run_rows(db, Run)
            pool_running = (db.session.execute(db.select(Pool.running)).scalars().all() if pool_slots else None)
            db.session.commit()
        del engine
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row.status] = statuses.get(row.status, 0) + 1
    finished = [row for row in rows if row.finished_at is not None]
    claim_lags = [(row.started_at - row.scheduled_for).total_seconds() for row in rows if row.started_at]
    starts = list(actions.STARTS)
    if action == "python":
        action_lags = [start - (due if due is not None else t0) for start, due in starts]
    else:
        action_lags = claim_lags  # a shell command cannot tell; the claim stamps started_at just before Popen
    last_finish = max((row.finished_at.timestamp() for row in finished), default=None)
    result = {
        "scheduler": "ours", "workload": "W1" if shape == "burst" else "W2", "db": kind, "n": n,
        "action": action, "workers": workers, "runs": len(rows), "statuses": statuses,
        "complete": done_at is not None,
        "makespan_s": round(done_at - t0, 3) if done_at and shape == "burst" else None,
        "makespan_last_finished_s": round(last_finish - t0, 3) if last_finish and shape == "burst" else None,
        "lag_ms": summary_ms(action_lags), "claim_lag_ms": summary_ms(claim_lags),
        "cpu_s": cpu_delta(before, after), "peak_rss_mb": peak,
    }
    if policy != "forbid" or pool_slots:
        result.update(policy=policy, pool_slots=pool_slots)
    if check:
        result["checks"] = {**run_checks(rows, n, action, len(starts)), "max_running_seen": counter.max_running,
                            "pool_running_after": pool_running}
    if result["makespan_s"]:
        result["runs_per_s"] = round(n / result["makespan_s"], 1)
    elif shape == "burst":  # cut off by the time limit: the rate so far (runs stopped at shutdown excluded)
        done = sum(1 for row in finished if row.status == "success" and row.finished_at.timestamp() <= deadline)
        result["runs_per_s"] = round(done / max(deadline - t0, 1e-9), 1)
        result["finished_by_deadline"] = done
    return result


def w3_tick(kind: str, n: int, repeat: int) -> dict:
    """W3: the cost of one tick with ``n`` enabled tasks, none due."""
    from scheduler_service.clock import utcnow
    from scheduler_service.database import db
    from scheduler_service.engine.tick import mark_tick, tick

    with scratch_database(kind) as scratch:
        run_forked(seed_tasks, scratch.url, "idle", n)
        app = make_app(scratch.url)
        # The engine writes the tick time for /api/stats (mark_tick) at most once a second, so the
        # typical tick does not: that is "one tick"; a marked one is reported beside it.
        variants = {
            "tick_ms": lambda now: tick(now, owner="bench", capacity=10),
            "tick_marked_ms": lambda now: (tick(now, owner="bench", capacity=10), mark_tick(now))[0],
        }
        result = {"scheduler": "ours", "workload": "W3-tick", "db": kind, "n": n}
        with app.app_context():
            for name, one_tick in variants.items():
                timings = []
                for index in range(repeat + 10):
                    began = time.perf_counter()
                    report = one_tick(utcnow())
                    elapsed = time.perf_counter() - began
                    if index >= 10:  # warm-up: connections, statement caches
                        timings.append(elapsed)
                    assert not report.claimed and not report.errors, report
                result[name] = summary_ms(timings)
            db.session.remove()
            db.engine.dispose()
    return result


def seed_waiting_children(url: str, n: int) -> None:
    """One running parent and ``n`` children due 5 s ago that wait for it (misfire grace 1 h)."""
    from datetime import timedelta

    from scheduler_service.clock import utcnow
    from scheduler_service.database import db
    from scheduler_service.models import Task, task_dependencies

    from .seed import task_row, action_for

    app = make_app(url)
    with app.app_context():
        db.create_all()
        now = utcnow()
        parent = {**task_row(n, "0 0 1 1 *", now + timedelta(days=1), action_for("python"), now),
                  "name": "parent", "status": "running", "active_runs": 1}
        with db.engine.begin() as connection:
            [parent_id] = connection.execute(Task.__table__.insert().returning(Task.__table__.c.id), [parent]).scalars()
            rows = [task_row(index, "* * * * *", now - timedelta(seconds=5), action_for("python"), now)
                    for index in range(n)]
            child_ids = connection.execute(Task.__table__.insert().returning(Task.__table__.c.id), rows).scalars()
            connection.execute(task_dependencies.insert(),
                               [{"parent_id": parent_id, "child_id": child_id} for child_id in child_ids])


def w3_waiting(kind: str, n: int, repeat: int) -> dict:
    """The cost of one tick while ``n`` due tasks wait on a running parent (each tick looks at them all)."""
    from scheduler_service.clock import utcnow
    from scheduler_service.database import db
    from scheduler_service.engine.tick import tick

    with scratch_database(kind) as scratch:
        run_forked(seed_waiting_children, scratch.url, n)
        app = make_app(scratch.url)
        timings = []
        with app.app_context():
            for index in range(repeat + 3):
                began = time.perf_counter()
                report = tick(utcnow(), owner="bench", capacity=10)
                if index >= 3:  # warm-up: connections, statement caches
                    timings.append(time.perf_counter() - began)
                assert report.waiting == n and not report.claimed, report
            db.session.remove()
            db.engine.dispose()
    summary = summary_ms(timings)
    return {"scheduler": "ours", "workload": "W3-waiting", "db": kind, "n": n, "tick_ms": summary,
            "us_per_waiting_task": round(summary["p50"] * 1000 / n, 1)}


def _get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()
        return response.status


def w3_rss(kind: str, n: int, settle: float) -> dict:
    """W3: the memory of a serving process (gunicorn, API and scheduler) and of a scheduler-only process."""
    import psutil

    result = {"scheduler": "ours", "workload": "W3-rss", "db": kind, "n": n}
    with scratch_database(kind) as scratch:
        seeded = run_forked(seed_tasks, scratch.url, "idle", n, with_token=True)
        env = {**os.environ, "DATABASE_URL": scratch.url, "SCHEDULER_TICK_SECONDS": "1",
               "PYTHONPATH": str(ROOT)}
        port = 18000 + os.getpid() % 1000
        server_log = scratch.directory / "gunicorn.log"
        with open(server_log, "wb") as log_file:
            server = subprocess.Popen(
                [str(VENV_BIN / "gunicorn"), "-w", "1", "-b", f"127.0.0.1:{port}", "wsgi:app"],
                cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for_server(server, base + "/api/health", server_log)
            for _ in range(20):
                _get(base + "/api/tasks/?limit=50", seeded["token"])
                _get(base + "/api/tasks/?limit=500", seeded["token"])
                _get(base + "/api/stats/", seeded["token"])
            time.sleep(settle)  # ticks every second meanwhile
            [worker] = psutil.Process(server.pid).children()
            result["serving_peak_rss_mb"] = peak_rss_mb(worker.pid)
            result["serving_rss_mb"] = rss_mb(worker.pid)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
        runner = subprocess.Popen(
            [str(VENV_BIN / "flask"), "--app", "wsgi", "run-scheduler"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(settle + 2)
            result["scheduler_only_peak_rss_mb"] = peak_rss_mb(runner.pid)
        finally:
            runner.send_signal(signal.SIGTERM)
            runner.wait(60)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ours")
    parser.add_argument("workload", choices=["w1", "w2", "w3tick", "w3rss", "w3wait"])
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--action", default="python", choices=["python", "shell"])
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--span", type=float, default=300.0)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=600.0, help="W1: stop after this long and report the rate so far")
    parser.add_argument("--policy", default="forbid", choices=["forbid", "allow", "buffer_one", "buffer_all", "replace"],
                        help="W1: every task's concurrency_policy (run control)")
    parser.add_argument("--pool-slots", type=int, default=0, help="W1: every task in one pool of this many slots")
    parser.add_argument("--check", action="store_true",
                        help="W1: also report whether every task ran once, and the most runs that overlapped")
    args = parser.parse_args(argv)
    quiet_logs()
    if args.workload == "w1":
        emit(burst_or_spread(args.db, args.n, args.action, args.workers, "burst", 0.0, timeout=args.timeout, poll=0.02,
                             policy=args.policy, pool_slots=args.pool_slots or None, check=args.check))
    elif args.workload == "w2":
        emit(burst_or_spread(args.db, args.n, "python", args.workers, "spread", args.span, timeout=60, poll=0.5))
    elif args.workload == "w3tick":
        emit(w3_tick(args.db, args.n, args.repeat))
    elif args.workload == "w3wait":
        emit(w3_waiting(args.db, args.n, min(args.repeat, 20)))
    else:
        emit(w3_rss(args.db, args.n, args.settle))


if __name__ == "__main__":
    main()
