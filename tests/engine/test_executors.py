"""Executors against real processes, a real HTTP server and real threads (no mocks).

Time bounds are deliberately loose: this suite runs on busy 2-core machines.
Tests that wait out a real timeout or stop are marked ``slow`` (about 1s each).
"""
from __future__ import annotations

import json
import logging
import os
import resource
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from scheduler_service.engine.executors import (
    EXECUTORS,
    Executor,
    HttpExecutor,
    Outcome,
    OutputTail,
    PythonExecutor,
    ShellExecutor,
    execute_action,
)

LIMIT = 65536


def run(action: dict[str, Any], timeout: float | None = 10, output_limit: int = LIMIT, **kwargs: Any) -> Outcome:
    return execute_action(action, timeout=timeout, output_limit=output_limit, **kwargs)


def timed(action: dict[str, Any], **kwargs: Any) -> tuple[Outcome, float]:
    started = time.monotonic()
    outcome = run(action, **kwargs)
    return outcome, time.monotonic() - started


def stop_after(seconds: float) -> threading.Event:
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set)
    timer.daemon = True
    timer.start()
    return stop


def process_gone(pid: int, within: float = 3.0) -> bool:
    """Poll until ``pid`` is dead.

    A killed orphan stays a zombie until its new parent reaps it, and some
    container inits never do; a zombie has stopped running, so it counts as gone.
    """
    give_up = time.monotonic() + within
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        if time.monotonic() > give_up:
            return False
        time.sleep(0.05)


# --- the base class and the buffer -------------------------------------------------


def test_output_tail_keeps_the_last_bytes() -> None:
    tail = OutputTail(10)
    for index in range(1000):
        tail.write(f"{index};".encode())
    assert tail.text() == "997;998;999;"[-10:]
    assert tail.truncated


def test_nul_bytes_in_output_become_replacement_characters_within_the_limit() -> None:
    tail = OutputTail(9)
    tail.write(b"a\x00b" + b"\x00" * 10)
    assert "\x00" not in tail.text() and tail.text() == "\ufffd" * 3
    assert len(tail.text().encode()) <= 9
    outcome = execute_action({"type": "shell", "command": "printf 'a\\0b'; exit 3"}, timeout=5, output_limit=100)
    assert outcome.output == "a\ufffdb"


def test_output_tail_does_not_start_with_half_a_character() -> None:
    tail = OutputTail(5)
    tail.write("é".encode() * 10)  # two bytes each: the cut falls inside one
    assert tail.text() == "éé"


def test_output_tail_with_zero_limit_keeps_nothing() -> None:
    tail = OutputTail(0)
    tail.write(b"anything")
    assert tail.text() == ""


def test_registry_names_one_executor_per_action_type() -> None:
    assert isinstance(EXECUTORS["shell"], ShellExecutor)
    assert isinstance(EXECUTORS["http"], HttpExecutor)
    assert isinstance(EXECUTORS["python"], PythonExecutor)


def test_execute_turns_a_crash_into_a_one_line_failure() -> None:
    class Crashing(Executor):
        def _run(self, action, deadline, output_limit, stop) -> Outcome:
            raise RuntimeError("first line\nsecond line " + "x" * 2000)

    outcome = Crashing().execute({}, timeout=1, output_limit=100)
    assert not outcome.succeeded
    assert outcome.message.startswith("RuntimeError: first line")
    assert "\n" not in outcome.message and len(outcome.message) <= 500


def test_execute_applies_the_output_limit_and_one_line_messages() -> None:
    class Verbose(Executor):
        def _run(self, action, deadline, output_limit, stop) -> Outcome:
            return Outcome(succeeded=False, message="a\nb", output="x" * 5000 + "end")

    outcome = Verbose().execute({}, timeout=None, output_limit=100)
    assert outcome.message == "a b"
    assert len(outcome.output) == 100 and outcome.output.endswith("end")


def test_malformed_action_fails_instead_of_raising() -> None:
    outcome = run({"type": "shell"})
    assert not outcome.succeeded
    assert outcome.message == "KeyError: 'command'"


def test_unknown_action_type_fails() -> None:
    outcome = run({"type": "ftp"})
    assert not outcome.succeeded
    assert outcome.message == "unknown action type 'ftp'"


def test_stop_already_set_does_not_start_the_action(tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    outcome = run({"type": "shell", "command": "touch started", "cwd": str(tmp_path)}, stop=stop)
    assert outcome.interrupted and outcome.message == "stopped by shutdown"
    assert not (tmp_path / "started").exists()


# --- shell ---------------------------------------------------------------------------


def test_shell_success_with_output() -> None:
    outcome = run({"type": "shell", "command": "echo hello; echo world"})
    assert outcome == Outcome(succeeded=True, output="hello\nworld\n", exit_code=0)


def test_shell_nonzero_exit_fails_naming_the_code() -> None:
    outcome = run({"type": "shell", "command": "echo partial; exit 3"})
    assert not outcome.succeeded
    assert outcome.exit_code == 3
    assert "3" in outcome.message
    assert outcome.output == "partial\n"


def test_shell_env_cwd_and_merged_stderr(tmp_path: Path) -> None:
    outcome = run(
        {
            "type": "shell",
            "command": 'echo "$GREETING"; pwd; echo oops >&2',
            "env": {"GREETING": "hi there"},
            "cwd": str(tmp_path),
        }
    )
    assert outcome.succeeded
    assert outcome.output == f"hi there\n{tmp_path.resolve()}\noops\n"


def test_shell_inherits_the_service_environment_only_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    # The contract's default (SHELL_INHERIT_ENV=false): PATH, HOME and LANG only.
    monkeypatch.setenv("FROM_SERVICE", "inherited")
    action = {"type": "shell", "command": 'echo "$FROM_SERVICE"'}
    assert run(action).output == "\n"
    outcome = ShellExecutor(inherit_env=True).execute(action, timeout=10, output_limit=LIMIT)
    assert outcome.output == "inherited\n"


def test_shell_missing_cwd_fails_to_start(tmp_path: Path) -> None:
    outcome = run({"type": "shell", "command": "true", "cwd": str(tmp_path / "missing")})
    assert not outcome.succeeded
    assert outcome.message.startswith("cannot start command:")


def test_shell_killed_by_signal_has_negative_exit_code() -> None:
    outcome = run({"type": "shell", "command": "kill -9 $$"})
    assert not outcome.succeeded
    assert outcome.exit_code == -9
    assert "SIGKILL" in outcome.message


@pytest.mark.slow
def test_shell_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    command = "echo $$ > shell.pid; sleep 300 & echo $! > child.pid; wait"
    outcome, elapsed = timed({"type": "shell", "command": command, "cwd": str(tmp_path)}, timeout=1)
    assert not outcome.succeeded
    assert outcome.message == "timed out after 1s"
    assert not outcome.interrupted
    assert elapsed < 4
    for name in ("shell.pid", "child.pid"):
        pid = int((tmp_path / name).read_text())
        assert process_gone(pid), f"{name} {pid} still running"


@pytest.mark.slow
def test_shell_timeout_message_keeps_fractions() -> None:
    outcome = run({"type": "shell", "command": "sleep 30"}, timeout=0.5)
    assert outcome.message == "timed out after 0.5s"


def test_shell_background_child_is_killed_when_the_shell_exits() -> None:
    # The child also holds the output pipe open: the run must not wait for it.
    outcome, elapsed = timed({"type": "shell", "command": "sleep 300 & echo $!"}, timeout=30)
    assert outcome.succeeded
    assert elapsed < 4
    assert process_gone(int(outcome.output))


@pytest.mark.slow
def test_shell_huge_output_keeps_the_tail_in_bounded_memory() -> None:
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcome = run(
        {"type": "shell", "command": r"head -c 50000000 /dev/zero | tr '\0' 'a'; echo END"},
        timeout=60,
        output_limit=LIMIT,
    )
    growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kb
    assert outcome.succeeded
    assert len(outcome.output) == LIMIT
    assert outcome.output.endswith("aaaEND\n")
    assert set(outcome.output[:-4]) == {"a"}
    assert growth_kb < 30 * 1024


@pytest.mark.slow
def test_shell_stop_event_kills_the_command() -> None:
    outcome, elapsed = timed({"type": "shell", "command": "sleep 30"}, timeout=30, stop=stop_after(0.5))
    assert not outcome.succeeded
    assert outcome.interrupted
    assert outcome.message == "stopped by shutdown"
    assert elapsed < 4


# --- http ----------------------------------------------------------------------------

BIG_BODY = b"x" * 5_000_000 + b"TAIL-END"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/ok":
            self._send(200, b"hello world")
        elif self.path == "/error":
            self._send(500, b"boom")
        elif self.path == "/missing":
            self._send(404, b"no such page")
        elif self.path == "/slow":
            time.sleep(3)  # longer than the tests' timeouts, short enough to end by itself
            self._send(200, b"too late")
        elif self.path == "/big":
            self._send(200, BIG_BODY)
        else:
            self._send(400, b"unknown path")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        echo = {
            "content_type": self.headers.get("Content-Type"),
            "token": self.headers.get("X-Token"),
            "body": body.decode(),
        }
        self._send(200, json.dumps(echo).encode())

    def _send(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout tests)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_http_success_keeps_the_body(server: str) -> None:
    outcome = run({"type": "http", "url": f"{server}/ok"})
    assert outcome == Outcome(succeeded=True, output="hello world", http_status=200)


def test_http_server_error_fails(server: str) -> None:
    outcome = run({"type": "http", "url": f"{server}/error"})
    assert not outcome.succeeded
    assert outcome.http_status == 500
    assert outcome.message == "HTTP 500 (expected 2xx)"
    assert outcome.output == "boom"


def test_http_expect_status_int_and_list(server: str) -> None:
    assert run({"type": "http", "url": f"{server}/missing", "expect_status": 404}).succeeded
    outcome = run({"type": "http", "url": f"{server}/missing", "expect_status": [200, 201]})
    assert not outcome.succeeded
    assert outcome.message == "HTTP 404 (expected 200, 201)"


def test_http_post_json_body_and_headers(server: str) -> None:
    outcome = run(
        {
            "type": "http",
            "url": f"{server}/echo",
            "method": "POST",
            "headers": {"X-Token": "secret"},
            "body": {"answer": 42, "items": [1, 2]},
        }
    )
    assert outcome.succeeded
    echo = json.loads(outcome.output)
    assert echo["token"] == "secret"
    assert echo["content_type"] == "application/json"
    assert json.loads(echo["body"]) == {"answer": 42, "items": [1, 2]}


def test_http_string_body_is_sent_as_is(server: str) -> None:
    outcome = run({"type": "http", "url": f"{server}/echo", "method": "POST", "body": "plain text"})
    assert json.loads(outcome.output)["body"] == "plain text"


@pytest.mark.slow
def test_http_timeout(server: str) -> None:
    outcome, elapsed = timed({"type": "http", "url": f"{server}/slow"}, timeout=1)
    assert not outcome.succeeded
    assert outcome.message == "timed out after 1s"
    assert elapsed < 2.5


@pytest.mark.slow
def test_http_stop_event_stops_waiting(server: str) -> None:
    outcome, elapsed = timed({"type": "http", "url": f"{server}/slow"}, timeout=30, stop=stop_after(0.3))
    assert outcome.interrupted
    assert outcome.message == "stopped by shutdown"
    assert elapsed < 2


def test_http_connection_refused() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outcome = run({"type": "http", "url": f"http://127.0.0.1:{port}/"})
    assert not outcome.succeeded
    assert outcome.message.startswith("connection refused")
    assert "\n" not in outcome.message
    assert outcome.http_status is None


def test_http_big_body_keeps_the_tail(server: str) -> None:
    outcome = run({"type": "http", "url": f"{server}/big"}, output_limit=1000)
    assert outcome.succeeded
    assert len(outcome.output) == 1000
    assert outcome.output.endswith("xxTAIL-END")


# --- python --------------------------------------------------------------------------


def python(callable_: str, **fields: Any) -> dict[str, Any]:
    return {"type": "python", "callable": f"sample_callables:{callable_}", **fields}


def test_python_success_captures_output_and_result(samples: Any) -> None:
    outcome = run(python("greet", args=["Ada"], kwargs={"punctuation": "?"}))
    assert outcome.succeeded
    assert outcome.output == "greeting Ada\nto stderr\n-> 'hello Ada?'"


def test_python_none_result_adds_no_line(samples: Any) -> None:
    outcome = run(python("chatty", args=["x", 2]))
    assert outcome == Outcome(succeeded=True, output="x 0\nx 1\n")


def test_python_capture_is_per_thread(samples: Any, capsys: pytest.CaptureFixture[str]) -> None:
    outcomes: dict[str, Outcome] = {}

    def run_tagged(tag: str) -> None:
        outcomes[tag] = run(python("chatty", args=[tag, 20]))

    threads = [threading.Thread(target=run_tagged, args=(tag,)) for tag in ("left", "right")]
    for thread in threads:
        thread.start()
    for _ in range(5):
        print("main thread noise")
        time.sleep(0.01)
    for thread in threads:
        thread.join()

    for tag, other in (("left", "right"), ("right", "left")):
        assert outcomes[tag].output == "".join(f"{tag} {index}\n" for index in range(20))
        assert other not in outcomes[tag].output
        assert "noise" not in outcomes[tag].output
    assert "main thread noise" in capsys.readouterr().out


def test_python_exception_fails_with_its_first_line(samples: Any) -> None:
    outcome = run(python("fail"))
    assert not outcome.succeeded
    assert outcome.message == "ValueError: boom"
    assert "Traceback" in outcome.output
    assert "second line of the message" in outcome.output


@pytest.mark.parametrize(
    "reference, detail",
    [
        ("no_such_module_xyz:run", "ModuleNotFoundError"),
        ("sample_callables:no_such_function", "AttributeError"),
    ],
)
def test_python_import_errors(samples: Any, reference: str, detail: str) -> None:
    outcome = run({"type": "python", "callable": reference})
    assert not outcome.succeeded
    assert outcome.message.startswith(f"cannot import '{reference}': {detail}")


@pytest.mark.slow
def test_python_timeout_stops_a_busy_loop(samples: Any) -> None:
    outcome, elapsed = timed(python("busy_loop"), timeout=1)
    assert not outcome.succeeded
    assert outcome.message == "timed out after 1s"
    assert elapsed < 3
    assert samples.busy_exited.wait(2), "the busy thread is still running"
    assert "TimeoutError" in outcome.output  # where it was stopped


@pytest.mark.slow
def test_python_stop_event_stops_a_busy_loop(samples: Any) -> None:
    outcome = run(python("busy_loop"), timeout=30, stop=stop_after(0.3))
    assert outcome.interrupted
    assert outcome.message == "stopped by shutdown"
    assert samples.busy_exited.wait(2)
    alive = [t.name for t in threading.enumerate() if "busy_loop" in t.name]
    assert not alive


def test_python_calls_reuse_an_idle_thread(samples: Any) -> None:
    counts = [run(python("calls_in_this_thread")).output for _ in range(100)]
    assert max(int(count.removeprefix("-> ")) for count in counts) > 1  # not a new thread per run


@pytest.mark.slow
def test_a_timeout_never_reaches_a_later_call(samples: Any) -> None:
    # Calls that end around their deadline: the injected TimeoutError may arrive after the call
    # has returned. The thread it was meant for is retired, so the next call never sees it.
    timed_out = 0
    for index in range(40):
        length = 0.04 + (index % 5) * 0.01
        outcome = run(python("spin", args=[length]), timeout=0.06)
        if not outcome.succeeded:
            assert outcome.message == "timed out after 0.06s"
            timed_out += 1
        after = run(python("calls_in_this_thread"))
        assert after.succeeded, after
    # At least the calls 20 ms past their timeout: a call that returned before the waiting thread
    # got the GIL back (up to 5 ms) keeps its own outcome.
    assert timed_out >= 8


@pytest.mark.slow
def test_python_call_blocked_in_c_is_abandoned_and_logged(samples: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="scheduler_service.engine.executors")
    outcome, elapsed = timed(python("sleep_in_c", args=[2]), timeout=0.3)
    assert outcome.message == "timed out after 0.3s"
    assert elapsed < 2
    assert "abandoning" in caplog.text
