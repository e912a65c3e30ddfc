"""Real scheduler processes against the test database."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def app_config() -> dict:
    return {"SCHEDULER_TICK_SECONDS": 1, "RUN_LEASE_SECONDS": 2}


class Processes:
    """Starts `flask run-scheduler` (or any command) processes; kills leftovers at the end."""

    def __init__(self, database_url: str, log_dir: Path) -> None:
        self.database_url = database_url
        self.log_dir = log_dir
        self.started: list[subprocess.Popen] = []

    def env(self, **settings: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PYTHONPATH=str(REPO),
            DATABASE_URL=self.database_url,
            SCHEDULER_TICK_SECONDS="1",
            RUN_LEASE_SECONDS="2",
            SCHEDULER_SHUTDOWN_GRACE_SECONDS="5",
        )
        env.update(settings)
        return env

    def start(self, args: list[str] | None = None, **settings: str) -> subprocess.Popen:
        args = args or [sys.executable, "-m", "flask", "--app", "wsgi", "run-scheduler"]
        log = open(self.log_dir / f"process-{len(self.started)}.log", "wb")
        process = subprocess.Popen(args, cwd=REPO, env=self.env(**settings), stdout=log, stderr=subprocess.STDOUT)
        self.started.append(process)
        return process

    def log(self, index: int) -> str:
        return (self.log_dir / f"process-{index}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
        for process in self.started:
            process.wait(timeout=10)


@pytest.fixture
def processes(app, tmp_path):
    running = Processes(app.config["SQLALCHEMY_DATABASE_URI"], tmp_path)
    yield running
    running.stop_all()


@pytest.fixture
def wait():
    return partial(wait_until, interval=0.1)
