"""What every workload shares: scratch databases, clocks, resource readings, statistics.

Each measurement runs in a process of its own (``python -m bench.<module> ...``)
so that its CPU seconds and peak RSS are its own; seeding happens in a forked
child so that it counts in neither.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

# The PostgreSQL server the issue names; each measurement gets a database of its own.
PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# Where SQLite files live: a real disk (fsync costs what it costs) or /dev/shm (tmpfs: fsync is free).
SQLITE_DIR = os.environ.get("BENCH_SQLITE_DIR") or None
RESULT_MARK = "BENCH-RESULT "
FAR_FUTURE_CRON = "0 0 1 1 *"  # fires once a year: a task that is not due unless we say so


# --- scratch databases ----------------------------------------------------------------


@dataclass
class Scratch:
    kind: str  # "sqlite" | "postgresql"
    url: str
    directory: Path


_counter = [0]


@contextmanager
def scratch_database(kind: str, label: str = "db") -> Iterator[Scratch]:
    """A new empty database (a SQLite file, or a PostgreSQL database ``bench_<pid>_<n>``); removed after."""
    directory = Path(tempfile.mkdtemp(prefix=f"bench_{os.getpid()}_", dir=SQLITE_DIR if kind == "sqlite" else None))
    _counter[0] += 1
    try:
        if kind == "sqlite":
            yield Scratch(kind, f"sqlite:///{directory / (label + '.db')}", directory)
            return
        name = f"bench_{os.getpid()}_{_counter[0]}"
        _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
        try:
            yield Scratch(kind, PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name, directory)
        finally:
            _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _pg_admin(*statements: str) -> None:
    import psycopg

    conninfo = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def psycopg_conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


# --- time ------------------------------------------------------------------------------


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def epoch(moment: datetime) -> float:
    return moment.timestamp()


def sleep_until(epoch_seconds: float) -> None:
    while (remaining := epoch_seconds - time.time()) > 0:
        time.sleep(min(remaining, 0.5))


# --- resources -------------------------------------------------------------------------


def cpu_seconds() -> dict[str, float]:
    """CPU seconds of this process and of its reaped children (shell actions), so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"self": own.ru_utime + own.ru_stime, "children": children.ru_utime + children.ru_stime}


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: round(after[key] - before[key], 3) for key in before}


def peak_rss_mb(pid: int | None = None) -> float:
    """Peak resident set (VmHWM) in MiB, of this process or of ``pid``."""
    path = f"/proc/{pid or 'self'}/status"
    with open(path) as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def rss_mb(pid: int | None = None) -> float:
    with open(f"/proc/{pid or 'self'}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return math.nan


def postgres_cpu_seconds() -> dict[int, float]:
    """CPU seconds used so far by each PostgreSQL server process, by pid (all databases: an approximation)."""
    import psutil

    seconds: dict[int, float] = {}
    for process in psutil.process_iter(["name"]):
        try:
            if process.info["name"] and process.info["name"].startswith("postgres"):
                times = process.cpu_times()
                seconds[process.pid] = times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return seconds


def postgres_cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU the server used between two readings: backends that exited meanwhile are not counted (an undercount)."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


# --- statistics ------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100), nearest-rank on sorted values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: list[float]) -> dict[str, float | None]:
    def ms(value):
        return None if value is None else round(value * 1000, 2)

    return {"p50": ms(percentile(seconds, 50)), "p99": ms(percentile(seconds, 99)), "max": ms(max(seconds) if seconds else None)}


def median(values: list[float]) -> float | None:
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


# --- process plumbing ------------------------------------------------------------------


def run_forked(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``function(*args, **kwargs)`` in a forked child and return its (picklable) result.

    Seeding runs there, so its memory and CPU count in no measurement.
    """
    context = multiprocessing.get_context("fork")
    parent_end, child_end = context.Pipe(duplex=False)

    def target() -> None:
        try:
            child_end.send(("ok", function(*args, **kwargs)))
        except BaseException as exc:  # report, then exit non-zero
            child_end.send(("error", repr(exc)))
            raise

    process = context.Process(target=target)
    process.start()
    status, value = parent_end.recv()
    process.join()
    if status != "ok":
        raise RuntimeError(f"seeding failed: {value}")
    return value


def code_digest() -> str:
    """A short fingerprint of the service's code as this process found it (the tree may change between runs).

    sha256 over every scheduler_service/**/*.py file's path and bytes, plus the newest file time.
    """
    import hashlib

    root = Path(__file__).resolve().parent.parent / "scheduler_service"
    digest = hashlib.sha256()
    newest = 0.0
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
        newest = max(newest, path.stat().st_mtime)
    return f"{digest.hexdigest()[:12]} (newest file {datetime.fromtimestamp(newest, timezone.utc):%Y-%m-%d %H:%M} UTC)"


CODE_AT_START = code_digest()


def wait_for_server(process, url: str, log_path: Path, timeout: float = 60.0) -> None:
    """Wait until ``url`` answers; if the server exits or never answers, fail with the end of its log."""
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                response.read()
                return
        except OSError:
            time.sleep(0.1)
    tail = log_path.read_text(errors="replace").strip().splitlines()[-8:] if log_path.exists() else []
    raise RuntimeError(f"server at {url} did not answer (exit code {process.poll()}): " + " | ".join(tail))


def emit(result: dict[str, Any]) -> None:
    """Hand the result to bench.run (the last marked line of stdout)."""
    result.setdefault("code", CODE_AT_START)
    sys.stdout.write(RESULT_MARK + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


def quiet_logs() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
