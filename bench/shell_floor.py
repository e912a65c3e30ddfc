"""The floor under the W1 shell workload: what spawning ``/bin/sh -c true`` costs here.

    python -m bench.shell_floor [--n 2000] [--threads 1,10] [--apscheduler-rate 691]

N runs of ``true`` on a thread pool, outside any scheduler, three ways, side by
side in one process:

- ``peer``: the bare call an APScheduler job makes (``bench.actions.shell_true``), no scheduler around it;
- ``executor, process-group``: our shell executor without cgroups;
- ``executor, cgroup``: our shell executor with a pids cgroup per run.

The engine adds its own per-run work on top of the executor, so the executor
alone is an upper bound for the engine's shell rate: given APScheduler's W1
shell rate (``--apscheduler-rate``, from ``bench.run``), the script says whether
the executor alone reaches twice it. If it cannot, no change to the engine can
make "shell runs at >= 2x APScheduler's rate" true on this machine.
"""
from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from scheduler_service.engine.containment import RunCgroups
from scheduler_service.engine.executors import execute_action, executors_with

from .actions import shell_true
from .common import emit

WARMUP = 50
ACTION = {"type": "shell", "command": "true"}


def executor_call(executors) -> Callable[[], None]:
    def call() -> None:
        outcome = execute_action(ACTION, timeout=60, output_limit=65536, executors=executors)
        if not outcome.succeeded:  # a failing run would be measured as a fast one
            raise RuntimeError(f"shell run failed: {outcome.message} {outcome.output!r}")

    return call


def measure(call: Callable[[], None], n: int, threads: int) -> dict:
    """N calls on a pool of ``threads``; wall rate and CPU of this process and of its reaped children."""
    with ThreadPoolExecutor(threads) as pool:
        # Warm up on the same pool: thread start-up, imports and first-use caches are not the floor.
        list(pool.map(lambda _: call(), range(WARMUP)))
        before, began = os.times(), time.perf_counter()
        list(pool.map(lambda _: call(), range(n)))
        wall, after = time.perf_counter() - began, os.times()
    return {
        "threads": threads,
        "runs_per_s": round(n / wall, 1),
        "user_ms": round((after.user - before.user) / n * 1000, 3),
        "system_ms": round((after.system - before.system) / n * 1000, 3),
        # sh is reaped by us, so its CPU (and that of anything it reaped) shows up here.
        "children_ms": round((after.children_user - before.children_user
                              + after.children_system - before.children_system) / n * 1000, 3),
    }


def shell_floor(n: int, thread_counts: list[int]) -> dict:
    variants: dict[str, Callable[[], None] | None] = {
        "peer": shell_true,
        "executor, process-group": executor_call(executors_with(None)),
    }
    cgroups, reason = RunCgroups.detect(f"shell-floor:{os.getpid()}:bench", 1024)
    variants["executor, cgroup"] = executor_call(executors_with(cgroups)) if cgroups is not None else None
    rows = []
    try:
        # Thread count outermost, so the variants compared in one row group ran next to each other in time.
        for threads in thread_counts:
            peer_rate = None
            for name, call in variants.items():
                if call is None:
                    rows.append({"variant": name, "threads": threads, "unavailable": reason})
                    continue
                row = {"variant": name, **measure(call, n, threads)}
                peer_rate = peer_rate or row["runs_per_s"]
                row["vs_peer"] = round(row["runs_per_s"] / peer_rate, 2)
                rows.append(row)
    finally:
        if cgroups is not None:
            cgroups.close()
    return {"workload": "W1-shell-floor", "n": n, "warmup": WARMUP, "threads": thread_counts,
            "cgroup": "available" if cgroups is not None else f"unavailable: {reason}", "rows": rows}


def report(result: dict) -> None:
    print(f"W1 shell floor: {result['n']} runs of `/bin/sh -c true` per row ({result['warmup']} warm-up runs not counted)\n")
    print("| variant | threads | runs/s | vs peer | parent user ms/run | parent sys ms/run | children ms/run |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in result["rows"]:
        if "unavailable" in row:
            print(f"| {row['variant']} | {row['threads']} | unavailable: {row['unavailable']} | | | | |")
            continue
        print(f"| {row['variant']} | {row['threads']} | {row['runs_per_s']:.0f} | {row['vs_peer']:.2f}x "
              f"| {row['user_ms']:.3f} | {row['system_ms']:.3f} | {row['children_ms']:.3f} |")
    # The point of the script: can the executor alone (an upper bound for the engine) reach 2x APScheduler?
    if result["apscheduler_rate"] is None:
        return
    at = 10 if 10 in result["threads"] else max(result["threads"])
    measured = [row for row in result["rows"] if row["threads"] == at and "unavailable" not in row]
    target = 2 * result["apscheduler_rate"]
    verdicts = [f"{row['variant']} {row['runs_per_s']:.0f}/s: {'reaches it' if row['runs_per_s'] >= target else 'does not'}"
                for row in measured if row["variant"] != "peer"]
    print(f"\nAt {at} threads, 2x APScheduler's W1 shell rate is {target:.0f} runs/s; the executor alone: "
          + "; ".join(verdicts) + ".")
    result["target_2x_apscheduler"] = {"threads": at, "runs_per_s": target,
                                       "reached": {row["variant"]: row["runs_per_s"] >= target
                                                   for row in measured if row["variant"] != "peer"}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.shell_floor")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--threads", default="1,10", help="comma-separated pool sizes")
    parser.add_argument("--apscheduler-rate", type=float, help="APScheduler's W1 shell runs/s, from bench.run")
    args = parser.parse_args(argv)
    result = shell_floor(args.n, [int(part) for part in args.threads.split(",")])
    result["apscheduler_rate"] = args.apscheduler_rate
    report(result)
    emit(result)


if __name__ == "__main__":
    main()
