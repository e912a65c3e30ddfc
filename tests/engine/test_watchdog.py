"""Python actions called in the calling thread under a Watchdog: the engine's pool workers run them so."""
from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any

import pytest

from scheduler_service.engine.executors import PythonExecutor
from scheduler_service.engine.records import Outcome
from scheduler_service.engine.watchdog import Watchdog

LIMIT = 64 * 1024


@pytest.fixture
def app_config() -> dict:
    """For the engine test: one worker, so that only a replacement can take the next run."""
    return {"SCHEDULER_TICK_SECONDS": 1, "RUN_LEASE_SECONDS": 3, "SCHEDULER_MAX_WORKERS": 1}


@pytest.fixture
def abandoned() -> list[tuple[int, str, float]]:
    """(thread ident, reason, when) of each call the watchdog gave up on."""
    return []


@pytest.fixture
def executor(abandoned):
    watchdog = Watchdog(on_abandon=lambda ident, reason, output: abandoned.append((ident, reason, time.monotonic())))
    yield PythonExecutor(watchdog)
    watchdog.close()


def run(executor: PythonExecutor, callable_: str, timeout: float | None = 10, **fields: Any) -> Outcome:
    stop = fields.pop("stop", None)
    action = {"type": "python", "callable": f"sample_callables:{callable_}", **fields}
    return executor.execute(action, timeout=timeout, output_limit=LIMIT, stop=stop)


def test_the_call_runs_in_the_calling_thread_and_keeps_its_output(samples, executor):
    outcome = run(executor, "greet", args=["Ada"])
    assert outcome.succeeded and outcome.output == "greeting Ada\nto stderr\n-> 'hello Ada!'"
    counts = [int(run(executor, "calls_in_this_thread").output.removeprefix("-> ")) for _ in range(3)]
    assert counts == [counts[0], counts[0] + 1, counts[0] + 2]  # this thread's own count: no helper thread


@pytest.mark.slow
def test_a_busy_loop_is_stopped_at_its_timeout(samples, executor, abandoned):
    started = time.monotonic()
    outcome = run(executor, "busy_loop", timeout=0.5)
    assert outcome.message == "timed out after 0.5s" and not outcome.succeeded
    assert time.monotonic() - started < 3
    assert samples.busy_exited.is_set() and "TimeoutError" in outcome.output
    assert abandoned == []
    assert run(executor, "greet", args=["Ada"]).succeeded  # the thread goes on serving


@pytest.mark.slow
def test_the_stop_event_stops_a_busy_loop(samples, executor):
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    outcome = run(executor, "busy_loop", timeout=30, stop=stop)
    assert outcome.interrupted and outcome.message == "stopped by shutdown"
    assert samples.busy_exited.is_set()


@pytest.mark.slow
def test_a_timeout_never_reaches_the_calling_thread_after_the_call(samples, executor):
    # Calls that end around their deadline: the TimeoutError may be injected as the call returns.
    # What is still pending then is taken back; the thread's next bytecode must not raise it.
    timed_out = 0
    for index in range(40):
        length = 0.04 + (index % 5) * 0.01
        outcome = run(executor, "spin", args=[length], timeout=0.06)
        try:
            for _ in range(10_000):  # bytecodes at which a pending exception would be raised
                pass
        except TimeoutError:
            pytest.fail("a TimeoutError reached the calling thread after its call")
        if not outcome.succeeded:
            assert outcome.message == "timed out after 0.06s"
            timed_out += 1
        assert run(executor, "greet", args=["Ada"]).succeeded
    assert timed_out >= 8


def test_a_timeout_raised_outside_the_call_s_own_handler_does_not_escape(abandoned):
    # A C function called directly has no frame of its own: the TimeoutError injected while it
    # sleeps is raised in the watchdog's frame as it returns, not inside a handler of the call's.
    watchdog = Watchdog(on_abandon=lambda *args: abandoned.append(args))
    try:
        started = time.monotonic()
        reason, given_up = watchdog.call(functools.partial(time.sleep, 0.3), started + 0.05, None, lambda: "")
    finally:
        watchdog.close()
    assert (reason, given_up) == ("timed out", False)
    assert abandoned == []


@pytest.mark.slow
def test_a_call_blocked_in_c_is_given_up_on_and_its_late_outcome_marked(samples, executor, abandoned):
    started = time.monotonic()
    outcome = run(executor, "sleep_in_c", args=[1.5], timeout=0.2)
    # Given up on 0.2 s + the grace after the start, while the call still slept in C.
    [(ident, reason, given_up_at)] = abandoned
    assert ident == threading.get_ident() and reason == "timed out"
    assert given_up_at - started < 1.3
    # When the call returns at last, its outcome says that it was given up on: the engine drops it.
    assert outcome.abandoned and not outcome.succeeded


def test_engine_records_a_python_run_blocked_in_c_at_its_timeout_and_replaces_its_worker(
        app, engine, client, make_task, runs_of, wait_until, samples, caplog):
    caplog.set_level(logging.WARNING, logger="scheduler_service.engine.scheduler")
    assert engine.max_workers == 1
    stuck = make_task(cron_expression="0 0 1 1 *", timeout_seconds=1, max_retries=0,
                      action={"type": "python", "callable": "sample_callables:sleep_in_c", "args": [4]})
    quick = make_task(cron_expression="0 0 1 1 *",
                      action={"type": "python", "callable": "sample_callables:greet", "args": ["Ada"]})
    began = time.monotonic()
    client.post(f"/api/tasks/{stuck['id']}/run/")
    [run] = wait_until(lambda: [r for r in runs_of(stuck["id"]) if r.status == "failed"])
    assert run.message == "timed out after 1s"
    assert time.monotonic() - began < 3.5  # recorded while the call still sleeps (4 s)
    assert "its worker replaced" in caplog.text
    # The one worker is stuck in C; its replacement takes the next run.
    client.post(f"/api/tasks/{quick['id']}/run/")
    [done] = wait_until(lambda: [r for r in runs_of(quick["id"]) if r.status == "success"])
    assert done.output == "greeting Ada\nto stderr\n-> 'hello Ada!'"
    assert time.monotonic() - began < 4
    # The stuck call returns at 4 s: its late outcome changes nothing.
    time.sleep(max(0.0, began + 4.5 - time.monotonic()))
    [again] = runs_of(stuck["id"])
    assert (again.status, again.message, again.finished_at) == ("failed", "timed out after 1s", run.finished_at)
