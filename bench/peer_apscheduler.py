"""The peer: APScheduler 3's BackgroundScheduler with its SQLAlchemyJobStore on the same kind of database.

    python -m bench.peer_apscheduler w1 --db sqlite --n 10000 --action python --workers 10
    python -m bench.peer_apscheduler w2 --db sqlite --n 1000 --span 300 --offset 0.5
    python -m bench.peer_apscheduler w3tick --db sqlite --n 100000
    python -m bench.peer_apscheduler w3rss --db sqlite --n 100000

Configured as a user would for the same job: a ThreadPoolExecutor of ``--workers``
threads (APScheduler's default is 10), coalesce, max_instances=1 and the same
misfire grace as our tasks (3600 s). W1 jobs carry a once-a-year CronTrigger with
``next_run_time`` at the burst instant, as our tasks do. The job store is seeded
straight into its table (pickled job states, as ``add_job`` would write them), in
a forked child. APScheduler writes no execution log: it runs the function, and
updates (or deletes) the job's row.
"""
from __future__ import annotations

import argparse
import pickle
import time
from datetime import timezone
from typing import Any

from . import actions
from .common import (cpu_delta, cpu_seconds, emit, peak_rss_mb, quiet_logs, rss_mb, run_forked, scratch_database,
                     summary_ms, utc)
from .seed import INSERT_CHUNK, new_year_epoch, spread_slot, wait_margin

MISFIRE_GRACE = 3600


def make_scheduler(url: str, workers: int):
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    return BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=url)},
        executors={"default": ThreadPoolExecutor(workers)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": MISFIRE_GRACE},
        timezone=timezone.utc,
    )


def seed_jobs(url: str, shape: str, n: int, action: str = "python", margin: float = 3.0, span: float = 0.0,
              offset: float = 0.0) -> dict[str, Any]:
    """Fill the job store with ``n`` jobs; returns ``{"t0": epoch}`` (see bench.seed for the shapes)."""
    import math

    from apscheduler.job import Job
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.date import DateTrigger

    function = {"python": actions.noop_counted, "shell": actions.shell_true}[action]
    scheduler = make_scheduler(url, 10)
    store = scheduler._jobstores["default"]
    assert isinstance(store, SQLAlchemyJobStore)
    store.start(scheduler, "default")  # creates the table
    yearly = CronTrigger.from_crontab("0 0 1 1 *", timezone=timezone.utc)
    template = Job(scheduler, id="template", func=function, trigger=yearly, executor="default", args=(), kwargs={},
                   name="template", misfire_grace_time=MISFIRE_GRACE, coalesce=True, max_instances=1,
                   next_run_time=utc(new_year_epoch()))
    state = template.__getstate__()
    t0 = math.ceil(time.time() + margin) if shape != "idle" else new_year_epoch()
    table = store.jobs_t
    with store.engine.begin() as connection:
        for start in range(0, n, INSERT_CHUNK):
            rows = []
            for index in range(start, min(n, start + INSERT_CHUNK)):
                job = dict(state, id=f"bench-{index:07d}", name=f"bench-{index:07d}")
                due = t0
                if shape == "spread":
                    due = spread_slot(t0, index, n, span) + offset
                    job["trigger"] = DateTrigger(run_date=utc(due), timezone=timezone.utc)
                    job["kwargs"] = {"due": due}
                job["next_run_time"] = utc(due)
                rows.append({"id": job["id"], "next_run_time": due,
                             "job_state": pickle.dumps(job, pickle.HIGHEST_PROTOCOL)})
            connection.execute(table.insert(), rows)
    # The seeding above took time: t0 must still be ahead when the measuring process starts.
    if shape != "idle" and time.time() > t0 - margin / 2:
        raise RuntimeError("seeding overran its margin")
    store.engine.dispose()
    return {"t0": t0}


def burst_or_spread(kind: str, n: int, action: str, workers: int, shape: str, span: float, offset: float,
                    timeout: float) -> dict:
    with scratch_database(kind, "apscheduler") as scratch:
        url = scratch.url
        margin = wait_margin(n) + (n / 5000 if kind == "sqlite" else n / 2000)
        t0 = run_forked(seed_jobs, url, shape, n, action, margin, span, offset)["t0"]
        actions.EXPECTED[0] = n
        scheduler = make_scheduler(url, workers)
        before = cpu_seconds()
        scheduler.start()
        if time.time() > t0 - 0.5:
            raise SystemExit("scheduler started too close to t0: raise the margin")
        finished = actions.DONE.wait(timeout=span + timeout + (t0 - time.time()))
        after = cpu_seconds()
        peak = peak_rss_mb()
        cutoff = time.time()
        starts = list(actions.STARTS)  # what happened by now: the pool finishes its queue after shutdown
        finishes = list(actions.FINISHES)
        scheduler.shutdown(wait=False)
    lags = [start - (due if due is not None else t0) for start, due in starts]
    last = max(finishes) if finishes else None
    result = {
        "scheduler": "apscheduler", "workload": "W1" if shape == "burst" else "W2", "db": kind, "n": n,
        "action": action, "workers": workers, "runs": len(finishes), "complete": finished,
        "makespan_s": round(last - t0, 3) if last and shape == "burst" else None,
        "lag_ms": summary_ms(lags), "cpu_s": cpu_delta(before, after), "peak_rss_mb": peak,
    }
    if result["makespan_s"] and finished:
        result["runs_per_s"] = round(n / result["makespan_s"], 1)
    elif shape == "burst":  # cut off by the time limit: the rate so far
        result["makespan_s"] = None
        result["runs_per_s"] = round(len(finishes) / (cutoff - t0), 1)
        result["finished_by_deadline"] = len(finishes)
    return result


def w3_tick(kind: str, n: int, repeat: int) -> dict:
    """One wake-up of the scheduler with ``n`` jobs in its store, none due: ``_process_jobs()``."""
    from apscheduler.schedulers.base import STATE_RUNNING

    with scratch_database(kind, "apscheduler") as scratch:
        run_forked(seed_jobs, scratch.url, "idle", n)
        scheduler = make_scheduler(scratch.url, 10)
        scheduler.start(paused=True)  # its thread waits for a wake-up that we never send
        scheduler.state = STATE_RUNNING
        timings = []
        for index in range(repeat + 10):
            began = time.perf_counter()
            wait = scheduler._process_jobs()
            elapsed = time.perf_counter() - began
            if index >= 10:
                timings.append(elapsed)
            assert wait and wait > 1000, wait
        scheduler.shutdown(wait=False)
    return {"scheduler": "apscheduler", "workload": "W3-tick", "db": kind, "n": n, "tick_ms": summary_ms(timings)}


def w3_rss(kind: str, n: int, settle: float) -> dict:
    """The memory of a process whose BackgroundScheduler holds ``n`` jobs in its store."""
    with scratch_database(kind, "apscheduler") as scratch:
        run_forked(seed_jobs, scratch.url, "idle", n)
        scheduler = make_scheduler(scratch.url, 10)
        scheduler.start()
        time.sleep(settle)
        scheduler.wakeup()
        time.sleep(0.5)
        holding = peak_rss_mb()
        jobs = len(scheduler.get_jobs())  # as a dashboard listing them would: every job unpickled at once
        result = {"scheduler": "apscheduler", "workload": "W3-rss", "db": kind, "n": n, "jobs": jobs,
                  "scheduler_only_peak_rss_mb": holding, "peak_rss_mb_after_get_jobs": peak_rss_mb(),
                  "rss_mb": rss_mb()}
        scheduler.shutdown(wait=False)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_apscheduler")
    parser.add_argument("workload", choices=["w1", "w2", "w3tick", "w3rss"])
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--action", default="python", choices=["python", "shell"])
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--span", type=float, default=300.0)
    parser.add_argument("--offset", type=float, default=0.0)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=600.0, help="W1: stop after this long and report the rate so far")
    args = parser.parse_args(argv)
    quiet_logs()
    if args.workload == "w1":
        emit(burst_or_spread(args.db, args.n, args.action, args.workers, "burst", 0.0, 0.0, timeout=args.timeout))
    elif args.workload == "w2":
        emit(burst_or_spread(args.db, args.n, "python", args.workers, "spread", args.span, args.offset, timeout=60))
    elif args.workload == "w3tick":
        emit(w3_tick(args.db, args.n, args.repeat))
    else:
        emit(w3_rss(args.db, args.n, args.settle))


if __name__ == "__main__":
    main()
