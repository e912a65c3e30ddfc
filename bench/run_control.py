"""Issue #16: what run control costs on the W1 burst, measured against plain W1 in one sitting.

    python -m bench.run_control --n 10000 --repeat 3                  # SQLite: minutes, most of it the pool
    python -m bench.run_control --n 10000 --repeat 3 --db postgresql  # longer still (the pool variant)
    python -m bench.run_control --n 500 --repeat 1                    # a quick look

Three variants of W1 (N tasks due at one instant, python no-op, our engine in the measuring
process, ``SCHEDULER_MAX_WORKERS=10``, runs read back from the Run rows), taken in turns:

- ``plain``: W1 as ``bench.run`` measures it (every task ``concurrency_policy: forbid``);
- ``pool``: every task in one pool of 10 slots (``--pool-slots``): a slot runs at once while
  the pool has room, else it waits as a pending run the queued-run claimer starts as slots free;
- ``buffer_all``: every task ``concurrency_policy: buffer_all`` (idle at the burst, so each
  slot runs at once; the tick also counts each due task's waiting runs).

Each measurement is ``python -m bench.ours w1 ... --check`` in a process of its own, so the
CPU seconds are its own. Rounds alternate plain, pool, buffer_all; a variant's ratio is the
median over rounds of its figure over that round's plain W1 figure. The correctness checks:
every task ran exactly once (one Run row, a success; the no-op called N times), and for the
pool the most runs overlapping in time (from started_at/finished_at) and the most runs the
poll saw claimed at once are at most the pool's slots, and the pool's counter is 0 after.
Exit status 1 if a check fails or a measurement errs.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .run import ROOT, _codes, _command, _errors, fmt, machine, measure, med, postgres_reachable, table
from .common import PG_ADMIN_URL

VARIANTS: dict[str, tuple[str, tuple[Any, ...]]] = {  # name -> (label, extra bench.ours arguments)
    "plain": ("plain W1 (forbid)", ()),
    "pool": ("one pool of {slots} slots", ("--pool-slots", "{slots}")),
    "buffer_all": ("buffer_all", ("--policy", "buffer_all")),
}


def _args(variant: str, slots: int) -> list[str]:
    return [str(arg).format(slots=slots) for arg in VARIANTS[variant][1]]


def _label(variant: str, slots: int) -> str:
    return VARIANTS[variant][0].format(slots=slots)


def cpu_per_run_us(result: dict) -> float | None:
    """CPU of the measuring process per run done (the runs finished by the deadline, if cut off)."""
    cpu = (result.get("cpu_s") or {}).get("self")
    done = result.get("n") if result.get("complete") else result.get("finished_by_deadline")
    if cpu is None or not done:
        return None
    return round(cpu / done * 1e6, 1)


def check_problems(variant: str, result: dict, slots: int) -> list[str]:
    """What is wrong with one measurement's run (empty when all is well)."""
    if "error" in result:
        return [f"error: {result['error'].strip().splitlines()[-1] if result['error'].strip() else '?'}"]
    problems = []
    checks = result.get("checks") or {}
    if not result.get("complete"):
        problems.append("cut off before every run finished")
    if not checks.get("exactly_once"):
        problems.append(
            f"not every task ran exactly once: {checks.get('tasks_once')} of {result.get('n')} once, "
            f"{checks.get('tasks_more_than_once')} more than once, {checks.get('tasks_without_run')} without a run, "
            f"{result.get('runs')} Run rows {result.get('statuses')}, {checks.get('action_calls')} no-op calls")
    if variant == "pool":
        if (checks.get("max_overlap") or 0) > slots:
            problems.append(f"{checks['max_overlap']} runs overlapped in time (pool of {slots})")
        if (checks.get("max_running_seen") or 0) > slots:
            problems.append(f"the poll saw {checks['max_running_seen']} runs claimed at once (pool of {slots})")
        if checks.get("pool_running_after") != [0]:
            problems.append(f"the pool's running counter after the burst: {checks.get('pool_running_after')}")
    return problems


def _ratio_median(rounds: list[dict[str, dict]], variant: str, figure) -> float | None:
    ratios = []
    for measured in rounds:
        mine, plain = figure(measured.get(variant) or {}), figure(measured.get("plain") or {})
        if isinstance(mine, (int, float)) and isinstance(plain, (int, float)) and plain:
            ratios.append(mine / plain)
    return med([{"r": value} for value in ratios], "r")


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def report(rounds: list[dict[str, dict]], variants: list[str], args: argparse.Namespace) -> tuple[str, list[str]]:
    """The Markdown tables, and every check that failed."""
    slots = args.pool_slots
    figures = {
        "makespan": lambda r: r.get("makespan_s"),
        "rate": lambda r: r.get("runs_per_s"),
        "cpu": cpu_per_run_us,
        "p50": lambda r: (r.get("lag_ms") or {}).get("p50"),
        "p99": lambda r: (r.get("lag_ms") or {}).get("p99"),
    }
    rows, failures = [], []
    for variant in variants:
        results = [measured[variant] for measured in rounds if variant in measured]
        cpu = med([{"v": cpu_per_run_us(r)} for r in results], "v")
        rows.append([
            _label(variant, slots), fmt(med(results, "makespan_s")), fmt(med(results, "runs_per_s")),
            fmt(med(results, "cpu_s", "self")), fmt(cpu), fmt(med(results, "lag_ms", "p50")),
            fmt(med(results, "lag_ms", "p99")),
            *([_x(_ratio_median(rounds, variant, figures[key])) for key in ("makespan", "rate", "cpu")]
              if variant != "plain" else ["1.00x", "1.00x", "1.00x"]),
        ])
    cut = [f"{_label(v, slots)} round {i + 1}" for i, measured in enumerate(rounds) for v, r in measured.items()
           if "error" not in r and not r.get("complete")]
    head = (f"**W1 burst with run control: {args.n:,} tasks due at one instant, python no-op, {args.db}, "
            f"{args.workers} workers; the variants in turns, median of {len(rounds)}**"
            + (f" (cut off at {args.timeout:.0f} s: {', '.join(cut)}; rates are those reached)" if cut else ""))
    main_table = table(
        ["variant", "makespan (s)", "runs/s", "CPU s (process)", "CPU per run (µs)", "start lag p50 (ms)",
         "start lag p99 (ms)", "makespan / plain", "runs/s / plain", "CPU per run / plain"], rows)

    check_rows, round_rows = [], []
    for index, measured in enumerate(rounds):
        for variant in variants:
            result = measured.get(variant)
            if result is None:
                continue
            problems = check_problems(variant, result, slots)
            failures += [f"{_label(variant, slots)}, round {index + 1}: {problem}" for problem in problems]
            checks = result.get("checks") or {}
            round_rows.append([
                str(index + 1), _label(variant, slots), fmt(result.get("makespan_s")), fmt(result.get("runs_per_s")),
                fmt(cpu_per_run_us(result)), fmt((result.get("lag_ms") or {}).get("p50")),
                fmt((result.get("lag_ms") or {}).get("p99")),
                _x(_ratio_median([measured], variant, figures["rate"])) if variant != "plain" else "1.00x",
            ])
            if "error" in result:
                check_rows.append([str(index + 1), _label(variant, slots), "error", "-", "-", "-", "-"])
                continue
            check_rows.append([
                str(index + 1), _label(variant, slots),
                ("yes" if checks.get("exactly_once") else "**no**")
                + f" ({checks.get('tasks_once', 0):,} of {args.n:,} tasks once; {result.get('runs', 0):,} Run rows; "
                + f"{checks.get('action_calls') or 0:,} calls)",
                fmt(checks.get("max_overlap")), fmt(checks.get("max_running_seen")),
                str(checks.get("pool_running_after")) if variant == "pool" else "-",
                "ok" if not problems else "**FAILED**: " + "; ".join(problems),
            ])
    text = "\n\n".join([
        head, main_table,
        "Ratios are the median over rounds of each round's figure over the plain W1 of the same round. CPU per "
        "run is the measuring process's CPU (engine and poll) over the runs. Start lag: the no-op's start minus "
        "the instant every task was due.",
        "**Each measurement** (round by round, in the order taken)",
        table(["round", "variant", "makespan (s)", "runs/s", "CPU per run (µs)", "lag p50 (ms)", "lag p99 (ms)",
               "runs/s / plain (this round)"], round_rows),
        f"**Correctness**: every task ran exactly once (one Run row, a success; the no-op called {args.n:,} "
        f"times); the most runs overlapping in time (their started_at..finished_at; touching counts; for the "
        f"pool at most {slots}: with a no-op and {args.workers} workers this can hardly exceed it); the most runs "
        f"the poll (every 20-250 ms) saw claimed at once (status running, from the claim to the record: a process "
        f"claims ahead of its workers, up to {args.workers} + 256, so plain W1 may show more than {args.workers}; "
        f"for the pool at most {slots}: the check that bites); the pool's running counter after the burst (0)",
        table(["round", "variant", "every task ran exactly once", "max overlapping runs", "max claimed at once (poll)",
               "pool running after", "checks"], check_rows),
    ])
    errors = _errors([r for measured in rounds for r in measured.values()])
    if errors:
        text += "\n\nerrors: " + "; ".join(errors)
    return text, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_control", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="tasks due at one instant")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each takes every variant once")
    parser.add_argument("--db", default="sqlite", choices=["sqlite", "postgresql"])
    parser.add_argument("--workers", type=int, default=10, help="SCHEDULER_MAX_WORKERS")
    parser.add_argument("--pool-slots", type=int, default=10, help="the pool variant's slots")
    parser.add_argument("--timeout", type=float, default=600.0, help="cut a measurement off after this long (s)")
    parser.add_argument("--variants", default="plain,pool,buffer_all",
                        help="comma-separated, of " + ", ".join(VARIANTS) + " (plain is always taken, first)")
    parser.add_argument("--json", help="also write every raw result to this file")
    args = parser.parse_args(argv)
    variants = ["plain"] + [v.strip() for v in args.variants.split(",") if v.strip() and v.strip() != "plain"]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants: {', '.join(unknown)}")
    if args.db == "postgresql" and (problem := postgres_reachable()):
        print(f"PostgreSQL at {PG_ADMIN_URL} does not answer ({problem})", file=sys.stderr)
        return 2

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = "python -m bench.run_control " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    print(f"## Run control on the W1 burst, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n\n"
          f"Command: `{command.strip()}`  \nMachine: {machine()}\n", flush=True)
    started = time.time()
    rounds: list[dict[str, dict]] = []
    for index in range(args.repeat):
        measured: dict[str, dict] = {}
        for variant in variants:  # in turns, so that drift on a shared machine hits every variant alike
            [[result]] = measure(env, _command(
                "bench.ours", "w1", "--db", args.db, "--n", args.n, "--action", "python", "--workers", args.workers,
                "--timeout", args.timeout, "--check", *_args(variant, args.pool_slots)), repeat=1)
            measured[variant] = result
            print(f"  round {index + 1} {variant}: "
                  + ("error" if "error" in result else
                     f"{result.get('makespan_s')} s, {result.get('runs_per_s')} runs/s, "
                     f"CPU/run {cpu_per_run_us(result)} us, checks {result.get('checks')}"),
                  file=sys.stderr, flush=True)
        rounds.append(measured)
    text, failures = report(rounds, variants, args)
    codes = _codes(rounds)
    warning = " **The code changed during the measurements: rows compare different versions.**" if len(codes) > 1 else ""
    print(text + f"\n\n_Took {time.time() - started:.0f} s; code measured: {', '.join(codes) or '?'}._{warning}")
    if failures:
        print("\n**Checks failed:**\n" + "\n".join(f"- {failure}" for failure in failures))
    else:
        print("\nAll checks passed.")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "machine": machine(), "rounds": rounds},
                                              indent=1, default=str))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
