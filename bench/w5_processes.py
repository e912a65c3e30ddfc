"""W5: the W1 burst shared by 1, 2 or 4 ``flask --app wsgi run-scheduler`` processes on one database.

    python -m bench.w5_processes --db postgresql --n 10000 --processes 2 --workers 10

The processes start before the burst instant and sleep until it (their first tick
sees it as the earliest due time). Figures come from the Run rows (start lag is
the claim stamp, ``started_at - scheduled_for``); CPU is summed over the scheduler
processes (and, on PostgreSQL, the server's own processes: an approximation, as the
server may serve others meanwhile); peak RSS is per process.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .common import emit, postgres_cpu_delta, postgres_cpu_seconds, quiet_logs, run_forked, scratch_database, sleep_until, summary_ms
from .ours import FinishedCounter
from .seed import seed_tasks

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def _cpu(process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def measure(kind: str, n: int, processes: int, workers: int, action: str, timeout: float) -> dict:
    import psutil
    import sqlalchemy as sa

    with scratch_database(kind, "w5") as scratch:
        margin = 1.5 + 0.75 * processes + n / 5000
        t0 = run_forked(seed_tasks, scratch.url, "burst", n, action=action, margin=margin)["t0"]
        env = {**os.environ, "DATABASE_URL": scratch.url, "SCHEDULER_MAX_WORKERS": str(workers),
               "PYTHONPATH": str(ROOT)}
        logs = [open(scratch.directory / f"scheduler-{index}.log", "w+b") for index in range(processes)]
        children = [
            subprocess.Popen([str(VENV_BIN / "flask"), "--app", "wsgi", "run-scheduler"], cwd=ROOT, env=env,
                             stdout=log, stderr=subprocess.STDOUT)
            for log in logs
        ]
        handles = [psutil.Process(child.pid) for child in children]
        counter = FinishedCounter(scratch.url)
        try:
            sleep_until(t0 - 0.3)
            for child, log in zip(children, logs):
                if child.poll() is not None:
                    log.seek(0)
                    tail = log.read().decode(errors="replace").strip().splitlines()[-5:]
                    raise SystemExit(f"a scheduler process exited ({child.returncode}) before t0: " + " | ".join(tail))
            cpu_before = [_cpu(handle) for handle in handles]
            db_before = postgres_cpu_seconds() if kind == "postgresql" else {}
            sleep_until(t0)
            done_at = None
            deadline = t0 + timeout
            while time.time() < deadline:
                if counter() >= n:
                    done_at = time.time()
                    break
                time.sleep(0.05)
            cpu_after = [_cpu(handle) for handle in handles]
            db_after = postgres_cpu_seconds() if kind == "postgresql" else {}
            peaks = []
            for handle in handles:
                with open(f"/proc/{handle.pid}/status") as status:
                    peaks.append(next(round(int(l.split()[1]) / 1024, 1) for l in status if l.startswith("VmHWM:")))
        finally:
            counter.close()
            for child in children:
                child.send_signal(signal.SIGTERM)
            for child in children:
                try:
                    child.wait(60)
                except subprocess.TimeoutExpired:
                    child.kill()
            log_lines = []
            for log in logs:
                log.seek(0)
                log_lines += [line for line in log.read().decode(errors="replace").splitlines()
                              if "WARNING" in line or "ERROR" in line or "Traceback" in line]
                log.close()
        engine = sa.create_engine(scratch.url)
        with engine.connect() as connection:
            rows = connection.execute(sa.text(
                "SELECT status, scheduled_for, started_at, finished_at, owner FROM run")).all()
            duplicates = connection.execute(sa.text(
                "SELECT count(*) FROM (SELECT task_id, scheduled_for FROM run GROUP BY task_id, scheduled_for "
                "HAVING count(*) > 1) d")).scalar()
        engine.dispose()
    statuses: dict[str, int] = {}
    owners: dict[str, int] = {}
    for row in rows:
        statuses[row.status] = statuses.get(row.status, 0) + 1
        owners[row.owner] = owners.get(row.owner, 0) + 1
    lags = [(row.started_at - row.scheduled_for).total_seconds() for row in rows if row.started_at]
    result = {
        "scheduler": "ours", "workload": "W5", "db": kind, "n": n, "processes": processes, "workers": workers,
        "action": action, "runs": len(rows), "statuses": statuses, "duplicate_slots": duplicates,
        "runs_per_process": sorted(owners.values(), reverse=True) + [0] * (processes - len(owners)),
        "scheduler_log_warnings": len(log_lines), "scheduler_log_sample": log_lines[:5],
        "complete": done_at is not None,
        "makespan_s": round(done_at - t0, 3) if done_at else None,
        "lag_ms": summary_ms(lags),
        "cpu_s": {"schedulers": round(sum(a - b for a, b in zip(cpu_after, cpu_before)), 2),
                  "postgres": round(postgres_cpu_delta(db_before, db_after), 2)},
        "peak_rss_mb": peaks,
    }
    if done_at:
        result["runs_per_s"] = round(n / (done_at - t0), 1)
    else:
        done = statuses.get("success", 0) + statuses.get("failed", 0)
        result["runs_per_s"] = round(done / timeout, 1)
        result["finished_by_deadline"] = done
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.w5_processes")
    parser.add_argument("--db", default="postgresql", choices=["sqlite", "postgresql"])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--action", default="python", choices=["python", "shell"])
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    quiet_logs()
    emit(measure(args.db, args.n, args.processes, args.workers, args.action, args.timeout))


if __name__ == "__main__":
    main()
