"""Guard rails for actions at run time (contract: "Guard rails for actions"; issue 13 point 4).

Executors against a real local HTTP server and real shells, then the engine running tasks
written before the rules existed (rows inserted directly), on every test database.
"""
from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from scheduler_service.engine.containment import RunCgroups
from scheduler_service.engine.executors import (
    HttpExecutor, Outcome, PythonExecutor, ShellExecutor, execute_action, module_allowed,
)
from scheduler_service.extensions import db
from scheduler_service.models import Task

LIMIT = 65536
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
ENGINE = {"SCHEDULER_TICK_SECONDS": 1, "RUN_LEASE_SECONDS": 3}


def run(executor: Any, action: dict[str, Any], timeout: float = 10) -> Outcome:
    return executor.execute(action, timeout=timeout, output_limit=LIMIT)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


# --- a local HTTP server that records what reached it ------------------------------------


class Server:
    """Answers /ok with 200 and /redirect?to=<url> with a 302 there; records every path it was asked for."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.paths.append(self.path)
                if self.path.startswith("/redirect?to="):
                    self.send_response(302)
                    self.send_header("Location", self.path.split("=", 1)[1])
                    self.send_header("Content-Length", "5")
                    self.end_headers()
                    self.wfile.write(b"moved")
                    return
                self.send_response(200)
                self.send_header("Content-Length", "7")
                self.end_headers()
                self.wfile.write(b"reached")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.close()


@pytest.fixture
def other_server() -> Iterator[Server]:
    """A second server on another loopback address (Linux answers on all of 127.0.0.0/8)."""
    try:
        running = Server("127.0.0.2")
    except OSError:
        pytest.skip("cannot bind 127.0.0.2 here")
    yield running
    running.close()


# --- python: PYTHON_ACTIONS_MODULES ----------------------------------------------------------


def test_module_prefixes_allow_the_module_and_those_under_it() -> None:
    assert module_allowed("a.b", ("a.b",)) and module_allowed("a.b.c", ("a.b",))
    assert not module_allowed("a.bc", ("a.b",)) and not module_allowed("a", ("a.b",))
    assert module_allowed("anything", None) and not module_allowed("anything", ())


def test_python_outside_the_allowed_modules_is_refused_before_import(samples: Any, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    action = {"type": "python", "callable": "subprocess:getoutput", "args": [f"touch {marker}"]}
    outcome = run(PythonExecutor(modules=()), action)
    assert not outcome.succeeded
    assert outcome.message == "refused: module 'subprocess' is not allowed by PYTHON_ACTIONS_MODULES" \
                              " (empty: no python actions)"
    outcome = run(PythonExecutor(modules=("sample_callables", "myapp.jobs")), action)
    assert outcome.message == "refused: module 'subprocess' is not allowed by PYTHON_ACTIONS_MODULES" \
                              " (sample_callables, myapp.jobs)"
    assert not marker.exists()
    # The contract's default without an app: any module.
    assert execute_action(action, timeout=10, output_limit=LIMIT).succeeded and marker.exists()


def test_python_from_an_allowed_module_runs(samples: Any) -> None:
    greet = {"type": "python", "callable": "sample_callables:greet", "args": ["Ada"]}
    outcome = run(PythonExecutor(modules=("sample_callables",)), greet)
    assert outcome.succeeded and outcome.output.endswith("-> 'hello Ada!'")
    refused = run(PythonExecutor(modules=("sample",)), greet)  # a prefix is a whole module name
    assert refused.message.startswith("refused: module 'sample_callables' is not allowed by PYTHON_ACTIONS_MODULES")


@pytest.mark.parametrize("reference, origin", [
    ("sample_callables:time.sleep", "module 'time'"),  # through a module the allowed one imported
    ("sample_callables:threading.Event", "module 'threading'"),
])
def test_python_cannot_reach_other_modules_through_an_allowed_one(samples: Any, reference: str, origin: str) -> None:
    outcome = run(PythonExecutor(modules=("sample_callables",)), {"type": "python", "callable": reference, "args": [0]})
    assert not outcome.succeeded
    assert outcome.message.startswith(f"refused: {reference} comes from {origin}, which is not allowed by"
                                      " PYTHON_ACTIONS_MODULES (sample_callables)")


# --- http: HTTP_ACTIONS_DENY_NETWORKS and redirects ---------------------------------------------


def test_a_literal_address_in_a_denied_network_is_refused_without_connecting() -> None:
    # A task stored before write-time checks existed: the run is refused all the same.
    outcome = execute_action({"type": "http", "url": "http://169.254.169.254/latest/meta-data/"}, timeout=10,
                             output_limit=LIMIT)
    assert not outcome.succeeded and outcome.http_status is None
    assert outcome.message == "refused: 169.254.169.254 is in HTTP_ACTIONS_DENY_NETWORKS (169.254.0.0/16)"


def test_an_ipv4_mapped_ipv6_address_counts_as_its_ipv4_address() -> None:
    outcome = execute_action({"type": "http", "url": "http://[::ffff:169.254.169.254]/"}, timeout=10,
                             output_limit=LIMIT)
    assert outcome.message == "refused: ::ffff:a9fe:a9fe is in HTTP_ACTIONS_DENY_NETWORKS (169.254.0.0/16)"


def test_a_name_that_resolves_into_a_denied_network_is_refused(server: Server) -> None:
    url = f"http://localhost:{server.port}/ok"
    assert run(HttpExecutor(), {"type": "http", "url": url}).succeeded  # allowed by the default list
    outcome = run(HttpExecutor(LOOPBACK), {"type": "http", "url": url})
    assert not outcome.succeeded and outcome.http_status is None
    assert outcome.message == ("refused: localhost resolves to 127.0.0.1, which is in"
                               " HTTP_ACTIONS_DENY_NETWORKS (127.0.0.0/8)")
    assert server.paths == ["/ok"]  # only the allowed run reached it


def test_redirects_are_not_followed_unless_the_action_says_so(server: Server) -> None:
    executor = HttpExecutor()
    url = f"{server.url}/redirect?to={server.url}/ok"
    outcome = run(executor, {"type": "http", "url": url})
    assert not outcome.succeeded
    assert (outcome.http_status, outcome.message, outcome.output) == (302, "HTTP 302 (expected 2xx)", "moved")
    assert run(executor, {"type": "http", "url": url, "follow_redirects": False}).http_status == 302
    assert server.paths == ["/redirect?to=" + f"{server.url}/ok"] * 2
    followed = run(executor, {"type": "http", "url": url, "follow_redirects": True})
    assert followed.succeeded and (followed.http_status, followed.output) == (200, "reached")
    assert server.paths[-1] == "/ok"


def test_each_redirect_hop_is_checked_against_the_deny_list(server: Server, other_server: Server) -> None:
    action = {"type": "http", "url": f"{server.url}/redirect?to={other_server.url}/ok", "follow_redirects": True}
    # Reachable when its network is allowed...
    assert run(HttpExecutor(), action).output == "reached"
    # ...refused when it is denied, although the first hop is allowed.
    outcome = run(HttpExecutor((ipaddress.ip_network("127.0.0.2/32"),)), action)
    assert not outcome.succeeded
    assert outcome.message == "refused: 127.0.0.2 is in HTTP_ACTIONS_DENY_NETWORKS (127.0.0.2/32)"
    assert other_server.paths == ["/ok"]  # the first run only


def test_a_redirect_to_the_metadata_address_is_refused(server: Server) -> None:
    action = {"type": "http", "url": f"{server.url}/redirect?to=http://169.254.169.254/latest/meta-data/",
              "follow_redirects": True}
    outcome = execute_action(action, timeout=10, output_limit=LIMIT)
    assert outcome.message == "refused: 169.254.169.254 is in HTTP_ACTIONS_DENY_NETWORKS (169.254.0.0/16)"


def test_runs_share_connections_but_never_cookies(server: Server) -> None:
    class CookieHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so a second run can reuse the connection

        def do_GET(self) -> None:  # noqa: N802
            body = (self.headers.get("Cookie") or "no cookie").encode()
            self.send_response(200)
            self.send_header("Set-Cookie", "session=task-a; Path=/")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    connections: list[Any] = []

    class Counting(ThreadingHTTPServer):
        def process_request(self, request: Any, client_address: Any) -> None:
            connections.append(client_address)
            super().process_request(request, client_address)

    httpd = Counting(("127.0.0.1", 0), CookieHandler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        executor = HttpExecutor()
        action = {"type": "http", "url": f"http://127.0.0.1:{httpd.server_address[1]}/"}
        outputs = [run(executor, action).output for _ in range(3)]
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert outputs == ["no cookie"] * 3
    assert len(connections) == 1


# --- shell: the environment and env names ------------------------------------------------------


def test_a_shell_run_gets_path_home_lang_and_its_env_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:hunter2@db/prod")
    monkeypatch.setenv("SECRET_KEY", "not-for-the-tasks-0123456789")
    monkeypatch.setenv("LANG", "C.UTF-8")
    action = {"type": "shell", "command": "env", "env": {"GREETING": "hi"}}
    names = {line.split("=", 1)[0] for line in run(ShellExecutor(), action).output.splitlines()}
    # The shell may add its own (PWD, SHLVL, _); none of the service's own may arrive.
    assert {"PATH", "HOME", "LANG", "GREETING"} <= names
    assert not names & {"DATABASE_URL", "SECRET_KEY"}
    assert not names & (set(os.environ) - {"PATH", "HOME", "LANG", "PWD", "SHLVL", "_"})
    inherited = run(ShellExecutor(inherit_env=True), action).output
    assert "DATABASE_URL=postgresql://app:hunter2@db/prod" in inherited and "GREETING=hi" in inherited


def test_an_invalid_env_name_is_refused_at_run_time(tmp_path: Path) -> None:
    action = {"type": "shell", "command": f"touch {tmp_path / 'ran'}", "env": {"A=B": "1"}}
    outcome = execute_action(action, timeout=10, output_limit=LIMIT)
    assert not outcome.succeeded
    assert outcome.message == "refused: env name 'A=B' does not match [A-Za-z_][A-Za-z0-9_]*"
    assert not (tmp_path / "ran").exists()


# --- shell: no descriptor outlives a run that fails to start ----------------------------------------


def test_runs_that_fail_to_start_leave_no_descriptor_open(tmp_path: Path) -> None:
    (tmp_path / "owner").mkdir()
    no_cgroup_here = RunCgroups(str(tmp_path), "owner", 10)  # a directory without the pids controller
    no_parent = RunCgroups(str(tmp_path / "missing"), "owner", 10)
    failing = [
        (ShellExecutor(), {"command": "true", "env": {"A=B": "1"}}, "refused: env name 'A=B'"),
        (ShellExecutor(), {"command": "true", "env": {"A": "nul\x00byte"}}, "cannot start command: ValueError"),
        (ShellExecutor(), {"command": "true\x00"}, "cannot start command: ValueError"),
        (ShellExecutor(), {"command": "true", "env": {"A": 1}}, "cannot start command: TypeError"),
        (ShellExecutor(), {"command": "true", "cwd": str(tmp_path / "missing")}, "cannot start command: [Errno 2]"),
        (ShellExecutor(), {"command": "true", "cwd": "/tmp\x00"}, "cannot start command: ValueError"),
        (ShellExecutor(inherit_env=True), {"command": "true", "env": {"A": "\x00"}}, "cannot start command:"),
        (ShellExecutor(no_cgroup_here), {"command": "true"}, "cannot create the run's cgroup:"),
        (ShellExecutor(no_parent), {"command": "true"}, "cannot create the run's cgroup:"),
    ]

    def run_all() -> None:
        for executor, action, message in failing:
            outcome = run(executor, {"type": "shell", **action})
            assert not outcome.succeeded and outcome.message.startswith(message), (action, outcome.message)

    run_all()  # the first run opens the /dev/null that every run shares
    before = fd_count()
    for _ in range(30):
        run_all()
    assert fd_count() == before
    assert list((tmp_path / "owner").iterdir()) == []  # the half-made cgroups were removed too


# --- the engine: tasks written before the rules, run under them -----------------------------------


def insert_task(app, action: dict[str, Any]) -> int:
    """A task as an older version stored it: straight into the table, past today's validation."""
    with app.app_context():
        task = Task(name=f"old-{action['type']}-{os.urandom(4).hex()}", cron_expression="0 0 1 1 *",
                    timezone="UTC", enabled=True, max_retries=0, action=action)
        db.session.add(task)
        db.session.commit()
        return task.id


def run_now(client, runs_of, wait_until, task_id: int):
    assert client.post(f"/api/tasks/{task_id}/run/").status_code == 202
    [run] = wait_until(lambda: [r for r in runs_of(task_id) if r.status in ("success", "failed")])
    return run


@pytest.mark.parametrize("app_config", [{**ENGINE, "SHELL_ACTIONS_ENABLED": False}], ids=["shell-disabled"])
def test_a_stored_python_task_outside_the_allowed_modules_fails(app, engine, client, runs_of, wait_until,
                                                                tmp_path):
    # The reproduction: shell actions off, yet a python action could start a shell.
    marker = tmp_path / "ran"
    task_id = insert_task(app, {"type": "python", "callable": "subprocess:getoutput", "args": [f"touch {marker}"]})
    run = run_now(client, runs_of, wait_until, task_id)
    assert run.status == "failed"
    assert run.message == ("refused: module 'subprocess' is not allowed by PYTHON_ACTIONS_MODULES"
                           " (empty: no python actions)")
    assert not marker.exists()


@pytest.mark.parametrize("app_config", [{**ENGINE, "HTTP_ACTIONS_DENY_NETWORKS": LOOPBACK}], ids=["loopback-denied"])
def test_an_http_task_to_a_name_in_a_denied_network_is_accepted_then_refused(engine, client, runs_of, wait_until,
                                                                             server):
    response = client.post("/api/tasks/", json={
        "name": "local", "cron_expression": "0 0 1 1 *", "max_retries": 0,
        "action": {"type": "http", "url": f"http://localhost:{server.port}/ok"},
    })
    assert response.status_code == 201, response.get_json()  # a name: judged when it is resolved
    run = run_now(client, runs_of, wait_until, response.get_json()["id"])
    assert run.status == "failed" and run.http_status is None
    assert run.message == ("refused: localhost resolves to 127.0.0.1, which is in HTTP_ACTIONS_DENY_NETWORKS"
                           " (127.0.0.0/8)")
    assert server.paths == []


@pytest.mark.parametrize("app_config", [ENGINE], ids=["defaults"])
def test_shell_runs_do_not_see_the_service_environment(app, engine, client, runs_of, wait_until, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:hunter2@db/prod")
    monkeypatch.setenv("SECRET_KEY", "not-for-the-tasks-0123456789")
    task_id = insert_task(app, {"type": "shell", "command": "env", "env": {"FROM_TASK": "yes"}})
    run = run_now(client, runs_of, wait_until, task_id)
    assert run.status == "success"
    assert "FROM_TASK=yes" in run.output and "PATH=" in run.output
    assert "hunter2" not in run.output and "SECRET_KEY" not in run.output


@pytest.mark.parametrize("app_config", [{**ENGINE, "SHELL_INHERIT_ENV": True}], ids=["inherit"])
def test_shell_inherit_env_passes_the_service_environment(app, engine, client, runs_of, wait_until, monkeypatch):
    monkeypatch.setenv("FROM_SERVICE", "inherited")
    task_id = insert_task(app, {"type": "shell", "command": 'echo "$FROM_SERVICE"'})
    assert run_now(client, runs_of, wait_until, task_id).output == "inherited\n"


@pytest.mark.parametrize("app_config", [ENGINE], ids=["defaults"])
def test_a_stored_invalid_env_name_fails_the_run_naming_the_rule(app, engine, client, runs_of, wait_until):
    task_id = insert_task(app, {"type": "shell", "command": "true", "env": {"A=B": "1"}})
    run = run_now(client, runs_of, wait_until, task_id)
    assert run.status == "failed"
    assert run.message == "refused: env name 'A=B' does not match [A-Za-z_][A-Za-z0-9_]*"

