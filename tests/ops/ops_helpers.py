"""Helpers of the operations tests: a webhook receiver, a closed port, the shared secret."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WEBHOOK_SECRET = "test-webhook-secret-0123456789"


class Webhook:
    """A local HTTP server that records every POST; ``status``/``delay`` set how it answers."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[dict] = []
        self.status = 200
        self.delay = 0.0
        self.lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if webhook.delay:
                    time.sleep(webhook.delay)
                with webhook.lock:
                    webhook.received.append({
                        "headers": {key: value for key, value in self.headers.items()},
                        "body": body, "json": json.loads(body), "at": time.monotonic(), "path": self.path,
                    })
                self.send_response(webhook.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format, *args) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self) -> list[str]:
        with self.lock:
            return [item["json"]["event"] for item in self.received]

    def of(self, event: str) -> list[dict]:
        with self.lock:
            return [item for item in self.received if item["json"]["event"] == event]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    """A port nothing listens on (for a webhook that is down)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
