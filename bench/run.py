"""The one command: run the workloads, ours and APScheduler's side by side, and print the tables.

    python -m bench.run                       # full sizes (see SIZES below; tens of minutes)
    python -m bench.run --quick               # small sizes, about two minutes
    python -m bench.run --workloads W1,W3 --repeat 3 --json results.json

Every measurement runs in a fresh process (``python -m bench.ours ...``,
``python -m bench.peer_apscheduler ...``, ``bench.w4_api``, ``bench.w5_processes``)
so its CPU seconds and peak RSS are its own. With ``--repeat N`` each is taken N
times and the tables show medians. The machine is shared: run nothing heavy meanwhile.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .common import PG_ADMIN_URL, RESULT_MARK

ROOT = Path(__file__).resolve().parent.parent

# What each mode measures. Full sizes are the issue's; a W1/W5 measurement that has not
# finished within its time limit reports the rate it reached and how many runs were done.
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "W1": {"n": 10_000, "timeout": 120, "dbs": ["sqlite"], "actions": ["python", "shell"]},
        "W2": {"n": 1_000, "span": 300},
        "W3": {"tick_ns": [1_000, 10_000, 100_000], "tick_repeat": 300, "rss_n": 100_000, "settle": 5},
        "W4": {"tasks": 100_000, "runs": 10_000_000, "deep": 1_000_000, "duration": 10, "dbs": ["postgresql", "sqlite"]},
        "W5": {"n": 10_000, "processes": [1, 2, 4], "timeout": 120},
    },
    "quick": {
        "W1": {"n": 200, "timeout": 30, "dbs": ["sqlite"], "actions": ["python", "shell"]},
        "W2": {"n": 24, "span": 8},
        "W3": {"tick_ns": [1_000, 10_000], "tick_repeat": 50, "rss_n": 10_000, "settle": 0.5},
        "W4": {"tasks": 5_000, "runs": 100_000, "deep": 50_000, "duration": 1, "dbs": ["postgresql"]},
        "W5": {"n": 100, "processes": [1, 2, 4], "timeout": 30},
    },
}
WORKERS = 10  # APScheduler's default ThreadPoolExecutor size; SCHEDULER_MAX_WORKERS is set to match


# --- running measurements ----------------------------------------------------------------


def _command(module: str, *args: Any) -> list[str]:
    return [sys.executable, "-m", module, *[str(arg) for arg in args]]


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    print(f"  $ {' '.join(shlex.quote(part) for part in command[2:])}", file=sys.stderr, flush=True)
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen, timeout: float = 1800) -> dict:
    stdout, stderr = process.communicate(timeout=timeout)
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_MARK)]
    if process.returncode != 0 or not lines:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        return {"error": f"exit {process.returncode}: {tail}"}
    warnings = [line for line in stderr.splitlines() if " WARNING " in line or " ERROR " in line]
    result = json.loads(lines[-1][len(RESULT_MARK):])
    if warnings:
        result["log_warnings"] = len(warnings)
    return result


def measure(env: dict[str, str], *commands: list[str], repeat: int) -> list[list[dict]]:
    """Run the commands together (one process each), ``repeat`` times; results per command."""
    results: list[list[dict]] = [[] for _ in commands]
    for _ in range(repeat):
        processes = [_start(command, env) for command in commands]
        for index, process in enumerate(processes):
            results[index].append(_finish(process))
    return results


def med(results: list[dict], *path: str) -> Any:
    """The median over repeats of one figure, e.g. med(rs, "lag_ms", "p99")."""
    values = []
    for result in results:
        value: Any = result
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values.append(value)
    if not values:
        return None
    value = statistics.median(values)
    return round(value, 3) if isinstance(value, float) else value


def _codes(raw: Any) -> list[str]:
    """The distinct code fingerprints found in (nested) raw results."""
    found: list[str] = []
    if isinstance(raw, dict):
        if isinstance(raw.get("code"), str) and raw["code"] not in found:
            found.append(raw["code"])
        for value in raw.values():
            found += [code for code in _codes(value) if code not in found]
    elif isinstance(raw, list):
        for value in raw:
            found += [code for code in _codes(value) if code not in found]
    return found


def _errors(results: list[dict]) -> list[str]:
    """One line per distinct error (the last line of the traceback); the JSON keeps them whole."""
    lines: list[str] = []
    for result in results:
        if "error" in result:
            line = result["error"].strip().splitlines()[-1] if result["error"].strip() else "?"
            if line not in lines:
                lines.append(line)
    return lines


def postgres_reachable() -> str | None:
    """None when the PostgreSQL server answers, else why not (W4 and W5 need it)."""
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=5):
            return None
    except Exception as exc:
        return f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


# --- formatting -----------------------------------------------------------------------------


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text}{unit}"


def ratio(ours: Any, peer: Any) -> str:
    if not isinstance(ours, (int, float)) or not isinstance(peer, (int, float)) or not peer:
        return "-"
    return f"{ours / peer:.2f}x"


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --- workloads --------------------------------------------------------------------------------


def w1(sizes: dict, env: dict, repeat: int) -> tuple[str, dict]:
    size = sizes["W1"]
    out, raw = [], {}
    for db in size["dbs"]:
        for action in size.get("actions", ["python", "shell"]):
            args = ("w1", "--db", db, "--n", size["n"], "--action", action, "--workers", WORKERS,
                    "--timeout", size["timeout"])
            ours, peer = [], []
            for _ in range(repeat):  # alternate, so that drift on a shared machine hits both alike
                [[o]] = measure(env, _command("bench.ours", *args), repeat=1)
                [[p]] = measure(env, _command("bench.peer_apscheduler", *args), repeat=1)
                ours.append(o)
                peer.append(p)
            raw[f"{db}/{action}"] = {"ours": ours, "apscheduler": peer}
            complete = all(r.get("complete") for r in ours + peer)
            note = "" if complete else (
                f" (cut off at {size['timeout']} s: ours finished {med(ours, 'finished_by_deadline') or size['n']}, "
                f"APScheduler {med(peer, 'finished_by_deadline') or size['n']} of {size['n']}; rates are those reached)"
            )
            rows = []
            for label, key, unit, lower_is_better in (
                ("makespan (s)", ("makespan_s",), "", True),
                ("runs/s", ("runs_per_s",), "", False),
                ("start lag p50 (ms)", ("lag_ms", "p50"), "", True),
                ("start lag p99 (ms)", ("lag_ms", "p99"), "", True),
                ("CPU s (process)", ("cpu_s", "self"), "", True),
                ("CPU s (children)", ("cpu_s", "children"), "", True),
                ("peak RSS (MB)", ("peak_rss_mb",), "", True),
            ):
                o, p = med(ours, *key), med(peer, *key)
                rows.append([label, fmt(o, unit), fmt(p, unit), ratio(o, p)])
            errors = _errors(ours + peer)
            out.append(
                f"**W1 burst: {size['n']:,} tasks due at one instant, action {action}, {db}, "
                f"{WORKERS} workers each; median of {repeat}**{note}\n\n"
                + table(["figure", "ours", "APScheduler 3", "ours / APScheduler"], rows)
                + ("\n\nerrors: " + "; ".join(errors) if errors else "")
            )
    return "\n\n".join(out), raw


def w2(sizes: dict, env: dict, repeat: int) -> tuple[str, dict]:
    size = sizes["W2"]
    args = ("w2", "--n", size["n"], "--span", size["span"], "--workers", WORKERS)
    ours, peer = measure(env, _command("bench.ours", *args),
                         _command("bench.peer_apscheduler", *args, "--offset", 0.5), repeat=repeat)
    rows = []
    for label, key in (("start lag p50 (ms)", ("lag_ms", "p50")), ("start lag p99 (ms)", ("lag_ms", "p99")),
                       ("start lag max (ms)", ("lag_ms", "max")), ("CPU s over the window", ("cpu_s", "self")),
                       ("peak RSS (MB)", ("peak_rss_mb",))):
        o, p = med(ours, *key), med(peer, *key)
        rows.append([label, fmt(o), fmt(p), ratio(o, p)])
    rows.append(["claim stamp lag p99 (ms, Run rows)", fmt(med(ours, "claim_lag_ms", "p99")), "-", "-"])
    errors = _errors(ours + peer)
    text = (f"**W2 precision: {size['n']:,} tasks on whole seconds spread over {size['span']:.0f} s, python no-op, "
            f"sqlite; both schedulers run at once, APScheduler's slots 0.5 s after ours; median of {repeat}**\n\n"
            + table(["figure", "ours", "APScheduler 3", "ours / APScheduler"], rows)
            + ("\n\nerrors: " + "; ".join(errors) if errors else ""))
    return text, {"ours": ours, "apscheduler": peer}


def w3(sizes: dict, env: dict, repeat: int) -> tuple[str, dict]:
    size = sizes["W3"]
    rows, raw = [], {"tick": {}, "rss": {}}
    for n in size["tick_ns"]:
        args = ("w3tick", "--n", n, "--repeat", size["tick_repeat"])
        ours, peer = [], []
        for _ in range(repeat):
            [[o]] = measure(env, _command("bench.ours", *args), repeat=1)
            [[p]] = measure(env, _command("bench.peer_apscheduler", *args), repeat=1)
            ours.append(o)
            peer.append(p)
        raw["tick"][n] = {"ours": ours, "apscheduler": peer}
        for q in ("p50", "p99"):
            o, p = med(ours, "tick_ms", q), med(peer, "tick_ms", q)
            rows.append([f"{n:,}", f"one tick {q} (ms)", fmt(o), fmt(p), ratio(o, p)])
        marked = med(ours, "tick_marked_ms", "p50")
        if marked is not None:
            rows.append([f"{n:,}", "one tick that also writes last_tick_at (at most 1/s), p50 (ms)", fmt(marked),
                         "-", "-"])
    args = ("w3rss", "--n", size["rss_n"], "--settle", size["settle"])
    ours, peer = measure(env, _command("bench.ours", *args), repeat=1)[0], []
    [peer] = measure(env, _command("bench.peer_apscheduler", *args), repeat=1)
    raw["rss"] = {"ours": ours, "apscheduler": peer}
    n = f"{size['rss_n']:,}"
    o_sched, p_sched = med(ours, "scheduler_only_peak_rss_mb"), med(peer, "scheduler_only_peak_rss_mb")
    rows.append([n, "peak RSS, scheduler-only process (MB)", fmt(o_sched), fmt(p_sched), ratio(o_sched, p_sched)])
    rows.append([n, "peak RSS after listing every job (`get_jobs()`) (MB)", "-",
                 fmt(med(peer, "peak_rss_mb_after_get_jobs")), "-"])
    o_serve = med(ours, "serving_peak_rss_mb")
    rows.append([n, "peak RSS, gunicorn worker serving API + scheduler (MB)", fmt(o_serve), "(no API)",
                 ratio(o_serve, p_sched)])
    errors = _errors([r for v in raw["tick"].values() for r in v["ours"] + v["apscheduler"]] + ours + peer)
    text = (f"**W3 idle scale: enabled tasks, none due, sqlite; tick = our `tick()` vs APScheduler's "
            f"`_process_jobs()`, {size['tick_repeat']} calls after 10 warm-up calls; median of {repeat}**\n\n"
            + table(["tasks", "figure", "ours", "APScheduler 3", "ours / APScheduler"], rows)
            + ("\n\nerrors: " + "; ".join(errors) if errors else ""))
    return text, raw


def w4(sizes: dict, env: dict, repeat: int) -> tuple[str, dict]:
    size = sizes["W4"]
    out, raw = [], {}
    for db in size["dbs"]:
        extra = ("--profile-dir", size["profile_dir"]) if size.get("profile_dir") else ()
        [results] = measure(env, _command("bench.w4_api", "--db", db, "--tasks", size["tasks"], "--runs", size["runs"],
                                          "--deep", size["deep"], "--duration", size["duration"], *extra), repeat=1)
        raw[db] = results
        result = results[0]
        if "error" in result:
            out.append(f"**W4 on {db}**: error: {result['error']}")
            continue
        rows = []
        for name, figures in result["endpoints"].items():
            goal = 100 if name == "stats" else 50
            verdict = "yes" if figures.get("p99_ms") is not None and figures["p99_ms"] < goal else "**no**"
            rows.append([f"GET {name}", fmt(figures.get("p50_ms")), fmt(figures.get("p99_ms")),
                         fmt(figures.get("rps")), fmt(figures.get("requests")), f"< {goal}: {verdict}",
                         fmt(result.get("in_process_ms", {}).get(name))])
        load = result["load"]
        out.append(
            f"**W4 API at scale on {db}: {size['tasks']:,} tasks, {size['runs']:,} runs "
            f"(loaded in {load['tasks_s'] + load['copy_s'] + load['indexes_s']:.0f} s: tasks {load['tasks_s']} s, "
            f"runs {load['copy_s']} s, indexes {load['indexes_s']} s); gunicorn 2 sync workers, scheduler off; "
            f"wrk -t2 -c2, {size['duration']:.0f} s per endpoint**\n\n"
            + table(["request", "p50 (ms)", "p99 (ms)", "req/s", "requests", "p99 goal (ms)",
                     "one request alone, in-process (ms)"], rows)
            + ("\n\nDatabase time per query (EXPLAIN ANALYZE, ms): " + "; ".join(
                f"{query} {figures['ms']} ({figures['plan']})" for query, figures in result["explain_ms"].items())
               if result.get("explain_ms") else ""))
    return "\n\n".join(out), raw


def w5(sizes: dict, env: dict, repeat: int) -> tuple[str, dict]:
    size = sizes["W5"]
    raw: dict[str, Any] = {}
    [peer] = measure(env, _command("bench.peer_apscheduler", "w1", "--db", "postgresql", "--n", size["n"],
                                   "--workers", WORKERS, "--timeout", size["timeout"]), repeat=repeat)
    raw["apscheduler"] = peer
    rows = [["APScheduler 3, 1 process", fmt(med(peer, "makespan_s")), fmt(med(peer, "runs_per_s")),
             fmt(med(peer, "lag_ms", "p50")), fmt(med(peer, "lag_ms", "p99")), fmt(med(peer, "cpu_s", "self")),
             "-", fmt(med(peer, "peak_rss_mb")), "-", "1.00x"]]
    peer_rate = med(peer, "runs_per_s")
    for count in size["processes"]:
        [ours] = measure(env, _command("bench.w5_processes", "--db", "postgresql", "--n", size["n"], "--processes",
                                       count, "--workers", WORKERS, "--timeout", size["timeout"]), repeat=repeat)
        raw[f"ours/{count}"] = ours
        done = med(ours, "finished_by_deadline")
        spread = ours[0].get("runs_per_process") if ours and "error" not in ours[0] else None
        rows.append([f"ours, {count} process{'es' if count > 1 else ''}",
                     fmt(med(ours, "makespan_s")) if done is None else f"cut off ({done:,} done)",
                     fmt(med(ours, "runs_per_s")), fmt(med(ours, "lag_ms", "p50")), fmt(med(ours, "lag_ms", "p99")),
                     fmt(med(ours, "cpu_s", "schedulers")), fmt(med(ours, "cpu_s", "postgres")),
                     fmt(max(ours[0].get("peak_rss_mb") or [0])) if "error" not in ours[0] else "-",
                     str(spread) if spread else "-", ratio(med(ours, "runs_per_s"), peer_rate)])
    errors = _errors(sum((v for v in raw.values()), []))
    notes = []
    for key, results in raw.items():
        for result in results:
            if result.get("scheduler_log_warnings"):
                sample = re.sub(r"^\S+ \S+ ", "", result["scheduler_log_sample"][0])[:200]
                notes.append(f"{key}: {result['scheduler_log_warnings']} warnings in the scheduler logs, e.g. `{sample}`")
    text = (f"**W5 processes: the W1 burst ({size['n']:,} tasks, python no-op) on PostgreSQL, "
            f"{WORKERS} workers per process, cut off at {size['timeout']} s; median of {repeat}**\n\n"
            + table(["scheduler", "makespan (s)", "runs/s", "lag p50 (ms)", "lag p99 (ms)", "CPU s (schedulers)",
                     "CPU s (postgres)", "peak RSS/process (MB)", "runs per process", "rate / APScheduler"], rows)
            + ("\n\n" + "  \n".join(notes) if notes else "")
            + ("\n\nerrors: " + "; ".join(errors) if errors else ""))
    return text, raw


WORKLOADS = {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5}


# --- the machine ------------------------------------------------------------------------------


def machine() -> str:
    import apscheduler
    import sqlalchemy

    model = "?"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")) as connection:
            pg = connection.execute("SHOW server_version").fetchone()[0]
    except Exception as exc:  # PostgreSQL is optional for W1-W3
        pg = f"unavailable ({exc.__class__.__name__})"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    sqlite_dir = os.environ.get("BENCH_SQLITE_DIR") or "/tmp"
    return (f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB RAM, {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version} (files in {sqlite_dir}), "
            f"PostgreSQL {pg}, SQLAlchemy {sqlalchemy.__version__}, APScheduler {apscheduler.__version__}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes (about two minutes)")
    parser.add_argument("--workloads", default="W1,W2,W3,W4,W5", help="comma-separated, e.g. W1,W3")
    parser.add_argument("--repeat", type=int, default=1, help="take each measurement N times; tables show medians")
    parser.add_argument("--json", help="also write every raw result to this file")
    parser.add_argument("--set", action="append", default=[], metavar="W.KEY=VALUE",
                        help="override a size, e.g. --set W1.n=2000 --set W1.timeout=60 --set W4.dbs=postgresql")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    sizes = json.loads(json.dumps(SIZES[mode]))
    for override in args.set:
        key, _, value = override.partition("=")
        workload, _, field = key.partition(".")
        current = sizes[workload.upper()].get(field)
        if isinstance(current, list):
            sizes[workload.upper()][field] = [type(current[0])(item) if current else item for item in value.split(",")]
        elif isinstance(current, (int, float)):
            sizes[workload.upper()][field] = type(current)(value)
        else:
            sizes[workload.upper()][field] = value
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    started = time.time()
    command = "python -m bench.run " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    header = (f"## {mode} run, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n\n"
              f"Command: `{command.strip()}`  \nMachine: {machine()}")
    print(header + "\n", flush=True)
    raw: dict[str, Any] = {"mode": mode, "command": command, "machine": machine(), "results": {}}
    for name in [w.strip().upper() for w in args.workloads.split(",") if w.strip()]:
        uses_postgres = name == "W5" or (name == "W4" and "postgresql" in sizes["W4"]["dbs"])
        problem = postgres_reachable() if uses_postgres else None
        if problem:
            problem = f"PostgreSQL at {PG_ADMIN_URL} does not answer ({problem})"
        if name == "W4" and not shutil.which("wrk"):
            problem = "wrk is not installed (apt-get install wrk)"
        if problem:
            print(f"**{name} skipped: {problem}.**\n", flush=True)
            continue
        began = time.time()
        print(f"[{name}] running ...", file=sys.stderr, flush=True)
        text, raw["results"][name] = WORKLOADS[name](sizes, env, args.repeat)
        codes = _codes(raw["results"][name])
        warning = " **The code changed during this workload: its rows compare different versions.**" if len(codes) > 1 else ""
        print(text + f"\n\n_{name} took {time.time() - began:.0f} s; code measured: {', '.join(codes) or '?'}._{warning}\n",
              flush=True)
    print(f"_Total: {time.time() - started:.0f} s._")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1, default=str))


if __name__ == "__main__":
    main()
