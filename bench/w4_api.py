"""W4: the API at scale, under gunicorn, measured with wrk on loopback.

    python -m bench.w4_api --db postgresql --tasks 100000 --runs 10000000 --deep 1000000 --duration 10

Data is bulk-loaded straight into the tables (COPY on PostgreSQL, executemany in
big transactions on SQLite) with the run table's indexes dropped during the load
and rebuilt after, exactly as the models declare them. Runs are spread over the
tasks round-robin (``runs / tasks`` per task), hourly slots, 94% success, 5%
failed, 1% skipped. gunicorn serves with 2 sync workers and the scheduler off
(the tasks are none due anyway), so the figures are the API's alone.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

from .common import emit, psycopg_conninfo, quiet_logs, run_forked, scratch_database, wait_for_server
from .seed import seed_tasks

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
RUN_COLUMNS = ("id", "task_id", "attempt", "trigger", "status", "scheduled_for", "started_at", "finished_at",
               "duration_seconds", "exit_code", "http_status", "output", "message", "owner", "heartbeat_at",
               "created_at")
CHUNK = 100_000


def _slot_strings(slots: int) -> list[tuple[str, str, str]]:
    base = datetime(2025, 1, 1)
    out = []
    for k in range(slots):
        scheduled = base + timedelta(hours=k)
        out.append((scheduled.isoformat(sep=" "), (scheduled + timedelta(milliseconds=50)).isoformat(sep=" "),
                    (scheduled + timedelta(milliseconds=1550)).isoformat(sep=" ")))
    return out


def _status(i: int) -> str:
    r = i % 100
    return "failed" if r < 5 else "skipped" if r == 5 else "success"


def _run_tuples(start: int, stop: int, tasks: int, slots):
    """Rows start+1 .. stop (ids from 1), as tuples of strings/numbers in RUN_COLUMNS order."""
    for i in range(start, stop):
        k = i // tasks
        scheduled, started, finished = slots[k]
        status = _status(i)
        yield (i + 1, i % tasks + 1, 1, "schedule", status, scheduled, started, finished, 1.5,
               0 if status == "success" else 1, None, "ok\n" if status == "success" else "boom\n",
               "" if status == "success" else "exit code 1", "bench", started, scheduled)


def _run_indexes():
    from scheduler_service.models import Run

    table = Run.__table__
    return table, [index for index in table.indexes]


def load_runs(url: str, tasks: int, runs: int) -> dict:
    """Bulk-load ``runs`` run rows (the schema and tasks exist already)."""
    import sqlalchemy as sa
    from sqlalchemy.schema import AddConstraint, CreateIndex, DropConstraint, DropIndex

    from scheduler_service import run_counts

    table, indexes = _run_indexes()
    slots = _slot_strings(runs // tasks + 1)
    began = time.time()
    if url.startswith("postgresql"):
        import psycopg

        constraints = [c for c in table.constraints if c.name and not c.name.startswith("pk_")]
        engine = sa.create_engine(url)
        with engine.begin() as connection:
            for index in indexes:
                connection.execute(DropIndex(index))
            for constraint in constraints:
                connection.execute(DropConstraint(constraint))
        engine.dispose()
        with psycopg.connect(psycopg_conninfo(url)) as connection:
            with connection.cursor() as cursor:
                with cursor.copy(f"COPY run ({', '.join(RUN_COLUMNS)}) FROM STDIN") as copy:
                    for start in range(0, runs, CHUNK):
                        lines = []
                        for row in _run_tuples(start, min(runs, start + CHUNK), tasks, slots):
                            lines.append("\t".join("\\N" if v is None else str(v).replace("\n", "\\n") for v in row))
                        copy.write("\n".join(lines) + "\n")
            connection.commit()
        loaded = time.time()
        engine = sa.create_engine(url)
        with engine.begin() as connection:
            connection.execute(sa.text("SET maintenance_work_mem = '1GB'"))
            for constraint in constraints:
                connection.execute(AddConstraint(constraint))
            for index in indexes:
                connection.execute(CreateIndex(index))
            connection.execute(sa.text("SELECT setval(pg_get_serial_sequence('run', 'id'), :n)"), {"n": runs})
            run_counts.recount(connection)  # the stats read these; a bulk load bypasses the application
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text("VACUUM ANALYZE run"))
            connection.execute(sa.text("VACUUM ANALYZE task"))
        engine.dispose()
    else:
        import sqlite3

        path = url.split("sqlite:///", 1)[1]
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("PRAGMA cache_size=-1000000")  # 1 GB: the unique index takes random inserts
        for index in indexes:
            connection.execute(f"DROP INDEX {index.name}")
        placeholders = ", ".join("?" for _ in RUN_COLUMNS)
        insert = f"INSERT INTO run ({', '.join(RUN_COLUMNS)}) VALUES ({placeholders})"
        for start in range(0, runs, 10 * CHUNK):
            connection.execute("BEGIN")
            connection.executemany(insert, _run_tuples(start, min(runs, start + 10 * CHUNK), tasks, slots))
            connection.execute("COMMIT")
        loaded = time.time()
        engine = sa.create_engine(url)
        with engine.begin() as sa_connection:
            for index in indexes:
                sa_connection.execute(CreateIndex(index))
            run_counts.recount(sa_connection)
            sa_connection.execute(sa.text("ANALYZE"))
        engine.dispose()
        connection.close()
    return {"copy_s": round(loaded - began, 1), "indexes_s": round(time.time() - loaded, 1)}


def _wrk(url: str, token: str, duration: float, connections: int) -> dict:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{int(duration)}s", "--latency", "--timeout", "30s",
               "-H", f"Authorization: Bearer {token}", url]
    output = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60).stdout
    result = {"raw": output}
    for label in ("50%", "75%", "90%", "99%"):
        match = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if match:
            value, unit = float(match.group(1)), match.group(2)
            result[f"p{label[:-1]}_ms"] = round(value * {"us": 0.001, "ms": 1, "s": 1000}[unit], 2)
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    result["rps"] = float(match.group(1)) if match else None
    match = re.search(r"(\d+) requests in", output)
    result["requests"] = int(match.group(1)) if match else None
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non_2xx"] = int(errors.group(1)) if errors else 0
    return result


def _get(url: str, token: str) -> None:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()


def measure(kind: str, tasks: int, runs: int, deep: int, duration: float, connections: int, workers: int,
            profile_dir: str | None = None) -> dict:
    from scheduler_service.api.pagination import encode_cursor

    result = {"scheduler": "ours", "workload": "W4", "db": kind, "tasks": tasks, "runs": runs, "deep": deep,
              "gunicorn_workers": workers, "wrk_connections": connections, "duration_s": duration}
    with scratch_database(kind, "w4") as scratch:
        began = time.time()
        token = run_forked(seed_tasks, scratch.url, "idle", tasks, with_token=True)["token"]
        result["load"] = {"tasks_s": round(time.time() - began, 1), **run_forked(load_runs, scratch.url, tasks, runs)}
        env = {**os.environ, "DATABASE_URL": scratch.url, "SCHEDULER_ENABLED": "false", "PYTHONPATH": str(ROOT)}
        port = 19000 + os.getpid() % 1000
        server_log = scratch.directory / "gunicorn.log"
        with open(server_log, "wb") as log_file:
            server = subprocess.Popen(
                [str(VENV_BIN / "gunicorn"), "-w", str(workers), "-b", f"127.0.0.1:{port}", "--timeout", "120",
                 "wsgi:app"],
                cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}/api"
        endpoints = {
            "tasks ?limit=50": f"{base}/tasks/?limit=50",
            "logs ?limit=50 (first page)": f"{base}/logs/?limit=50",
            f"logs ?limit=50, {deep:,} rows deep": f"{base}/logs/?limit=50&cursor={encode_cursor(runs - deep)}",
            "logs ?task_id=": f"{base}/logs/?task_id={tasks // 2}&limit=50",
            "stats": f"{base}/stats/",
        }
        try:
            wait_for_server(server, f"{base}/health", server_log)
            results = {}
            for name, url in endpoints.items():
                for _ in range(3):
                    _get(url, token)  # warm: connections, caches, the workers' first request
                results[name] = _wrk(url, token, duration, connections)
            result["endpoints"] = results
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
        result["in_process_ms"] = _in_process(scratch.url, token, endpoints, profile_dir)
        if kind == "postgresql":
            result["explain_ms"] = _explain(scratch.url, tasks, runs, deep)
    return result


def _in_process(url: str, token: str, endpoints: dict[str, str], profile_dir: str | None) -> dict:
    """Each request once more, inside this process (Flask test client): wall time, and a cProfile if asked."""
    import cProfile

    from .seed import make_app

    app = make_app(url)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    timings = {}
    for name, full_url in endpoints.items():
        path = full_url.split("127.0.0.1", 1)[1].split("/", 1)[1]
        path = "/" + path
        client.get(path, headers=headers)
        began = time.perf_counter()
        for _ in range(5):
            client.get(path, headers=headers)
        timings[name] = round((time.perf_counter() - began) / 5 * 1000, 2)
        if profile_dir:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(5):
                client.get(path, headers=headers)
            profiler.disable()
            slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
            profiler.dump_stats(str(Path(profile_dir) / f"w4_{slug}.pstat"))
    return timings


def _explain(url: str, tasks: int, runs: int, deep: int) -> dict:
    """The database's own time for the SQL behind each endpoint (EXPLAIN ANALYZE), in ms."""
    import psycopg

    queries = {
        "tasks page": "SELECT * FROM task ORDER BY id LIMIT 51",
        "one task's parents (x50 per tasks page)": (
            "SELECT task.* FROM task, task_dependency WHERE task_dependency.child_id = 7 "
            "AND task.id = task_dependency.parent_id ORDER BY task.id"),
        "logs first page": "SELECT * FROM run LEFT OUTER JOIN task ON task.id = run.task_id ORDER BY run.id DESC LIMIT 51",
        "logs deep page": (f"SELECT * FROM run LEFT OUTER JOIN task ON task.id = run.task_id WHERE run.id < {runs - deep} "
                           "ORDER BY run.id DESC LIMIT 51"),
        "logs by task": (f"SELECT * FROM run LEFT OUTER JOIN task ON task.id = run.task_id WHERE run.task_id = {tasks // 2} "
                         "ORDER BY run.id DESC LIMIT 51"),
        "stats: runs by status": "SELECT status, count(*) FROM run GROUP BY status",
        "stats: avg duration": "SELECT avg(duration_seconds) FROM run WHERE finished_at IS NOT NULL",
        "stats: tasks by status": "SELECT status, count(*) FROM task GROUP BY status",
        "stats: task counts": "SELECT count(*), count(*) FILTER (WHERE enabled) FROM task",
        "stats: next runs": "SELECT id, name, next_run_at FROM task WHERE enabled AND next_run_at IS NOT NULL "
                            "ORDER BY next_run_at, id LIMIT 10",
    }
    out = {}
    with psycopg.connect(psycopg_conninfo(url)) as connection:
        for name, sql in queries.items():
            connection.execute(sql).fetchall()  # warm the cache as the load test did
            plan = connection.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql).fetchone()[0][0]
            out[name] = {"ms": round(plan["Execution Time"] + plan["Planning Time"], 2),
                         "plan": plan["Plan"]["Node Type"]}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.w4_api")
    parser.add_argument("--db", default="postgresql", choices=["sqlite", "postgresql"])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10_000_000)
    parser.add_argument("--deep", type=int, default=1_000_000)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile-dir", help="also cProfile each request in-process and write .pstat files here")
    args = parser.parse_args(argv)
    quiet_logs()
    emit(measure(args.db, args.tasks, args.runs, args.deep, args.duration, args.connections, args.workers,
                 args.profile_dir))


if __name__ == "__main__":
    main()
