"""The floor under W1: what the unavoidable per-run work alone costs on this machine.

    python -m bench.floor [--n 10000] [--workers 10] [--batch 256]

Each run here does only what any scheduler that keeps a Run row per execution must
do: claim the task and insert its Run row (one batch per tick), hand the call to a
thread pool, call the python no-op, and record the outcome (one batch per commit),
with the raw sqlite3 module in WAL mode with synchronous=NORMAL, like the service.
There is no SQLAlchemy, no signal, no lease and no retry logic. The gap between
this and ``bench.ours w1`` is what the engine's own machinery costs.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import sqlite3
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from .actions import noop

SCHEMA = """
CREATE TABLE task (id INTEGER PRIMARY KEY, next_run_at TEXT NOT NULL, status TEXT NOT NULL);
CREATE INDEX ix_task_due ON task (next_run_at);
CREATE TABLE run (id INTEGER PRIMARY KEY, task_id INTEGER NOT NULL, status TEXT NOT NULL,
                  scheduled_for TEXT NOT NULL, started_at TEXT, finished_at TEXT, output TEXT);
"""


def floor(n: int, workers: int, batch: int) -> dict:
    path = os.path.join(tempfile.mkdtemp(), "floor.db")
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    slot = "2026-11-28T00:00:00"
    db.execute("BEGIN")
    db.executemany("INSERT INTO task (id, next_run_at, status) VALUES (?, ?, 'pending')",
                   ((i, slot) for i in range(1, n + 1)))
    db.execute("COMMIT")

    results: queue.Queue = queue.Queue()
    pool = ThreadPoolExecutor(workers)

    def execute(run_id: int) -> None:
        started = time.time()
        noop()
        results.put((run_id, started, time.time()))

    began_cpu, began = time.process_time(), time.perf_counter()
    claimed = recorded = 0
    while recorded < n:
        if claimed < n and claimed - recorded < 2 * workers + batch:
            db.execute("BEGIN")
            ids = [row[0] for row in db.execute(
                "SELECT id FROM task WHERE next_run_at <= ? ORDER BY next_run_at, id LIMIT ?", (slot, batch))]
            db.executemany("UPDATE task SET next_run_at = '2026-11-29T00:00:00', status = 'running' WHERE id = ?",
                           ((task_id,) for task_id in ids))
            db.executemany("INSERT INTO run (id, task_id, status, scheduled_for) VALUES (?, ?, 'running', ?)",
                           ((task_id, task_id, slot) for task_id in ids))
            db.execute("COMMIT")
            claimed += len(ids)
            for run_id in ids:
                pool.submit(execute, run_id)
        done = [results.get()]
        while len(done) < batch:
            try:
                done.append(results.get_nowait())
            except queue.Empty:
                break
        db.execute("BEGIN")
        db.executemany("UPDATE run SET status = 'success', started_at = ?, finished_at = ?, output = '' WHERE id = ?",
                       ((str(started), str(finished), run_id) for run_id, started, finished in done))
        db.executemany("UPDATE task SET status = 'success' WHERE id = ?", ((run_id,) for run_id, _, _ in done))
        db.execute("COMMIT")
        recorded += len(done)
    makespan = time.perf_counter() - began
    cpu = time.process_time() - began_cpu
    pool.shutdown()
    return {"workload": "W1-floor", "n": n, "workers": workers, "batch": batch, "makespan_s": round(makespan, 3),
            "runs_per_s": round(n / makespan, 1), "cpu_s": round(cpu, 3),
            "cpu_us_per_run": round(cpu / n * 1e6, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args(argv)
    print("BENCH-RESULT " + json.dumps(floor(args.n, args.workers, args.batch)))


if __name__ == "__main__":
    main()
