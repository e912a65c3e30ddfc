"""The http executor: one request with ``requests``, its body streamed into the output tail.

Runs in the engine's pool workers, which wait on a helper thread of their own per
request (the helper does the I/O; see ``HttpExecutor``). Every connection opens
through ``outbound``, the one guard of outbound calls.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import requests
import urllib3
from requests.adapters import DEFAULT_POOLSIZE

from ... import outbound
from ..deadlines import TIMED_OUT
from ..records import Outcome
from .base import READ_CHUNK, Executor, OutputTail, cut_short, describe, wait_for_thread


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: requests and urllib3 nest the real error several levels deep."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        candidates = (exc.__cause__, getattr(exc, "reason", None), exc.args[0] if exc.args else None)
        exc = next((c for c in candidates if isinstance(c, BaseException)), None)


def _request_error_message(exc: requests.RequestException, url: str) -> str:
    chain = list(_causes(exc))
    # Refused first: urllib3's NewConnectionError subclasses its ConnectTimeoutError.
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return f"connection refused: {url}"
    # A read timeout while streaming arrives as ConnectionError(ReadTimeoutError).
    if any(isinstance(e, (requests.Timeout, urllib3.exceptions.ReadTimeoutError, TimeoutError)) for e in chain):
        return TIMED_OUT
    if isinstance(exc, requests.ConnectionError):
        return f"connection failed: {url}: {describe(chain[-1])}"
    return describe(chain[-1])


def _expected(expect_status: int | list[int] | None) -> tuple[Callable[[int], bool], str]:
    """A status check and its description for messages, e.g. '2xx' or '200, 204'."""
    if expect_status is None:
        return (lambda status: 200 <= status < 300), "2xx"
    codes = expect_status if isinstance(expect_status, list) else [expect_status]
    return (lambda status: status in codes), ", ".join(str(code) for code in codes)


class HttpExecutor(Executor):
    """A real HTTP request with ``requests``; the body is streamed into the output tail.

    The request runs in a helper thread that this executor waits on, so the
    timeout covers the whole call (connect, headers and a slowly trickling body,
    which ``requests``' per-read timeouts alone do not) and a shutdown is
    noticed at once. An abandoned helper stops at its next chunk or, at the
    latest, at its own socket timeout.

    Every connection, each redirect hop's too, opens through ``outbound``, which refuses
    addresses in ``deny_networks``. Redirects are followed only when the action says
    ``"follow_redirects": true``. One session serves every run: its pools keep connections
    alive between runs, and it keeps no cookies, so runs never see each other's.
    """

    def __init__(
        self, deny_networks: tuple[outbound.Network, ...] = outbound.DEFAULT_DENY_NETWORKS,
        *, connections: int = DEFAULT_POOLSIZE,
    ) -> None:
        self.http = outbound.session(deny_networks, pool_maxsize=connections)

    def close(self) -> None:
        self.http.close()

    def _run(
        self, action: Mapping[str, Any], deadline: float | None, output_limit: int, stop: threading.Event | None
    ) -> Outcome:
        url = action["url"]
        method = (action.get("method") or "GET").upper()
        body = action.get("body")
        body_kwargs: dict[str, Any] = {}
        if isinstance(body, (dict, list)):
            body_kwargs["json"] = body
        elif body is not None:
            body_kwargs["data"] = str(body).encode("utf-8")
        matches, expected = _expected(action.get("expect_status"))
        follow_redirects = action.get("follow_redirects") is True

        tail = OutputTail(output_limit)
        abandoned = threading.Event()
        status: list[int] = []  # filled by the helper once headers arrive
        result: list[Outcome] = []

        def call() -> None:
            remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
            try:
                with self.http.request(
                    method,
                    url,
                    headers=dict(action.get("headers") or {}),
                    timeout=remaining,
                    stream=True,
                    allow_redirects=follow_redirects,
                    **body_kwargs,
                ) as response:
                    status.append(response.status_code)
                    for chunk in response.iter_content(READ_CHUNK):
                        if abandoned.is_set():
                            return
                        tail.write(chunk)
            except Exception as exc:
                if isinstance(exc, outbound.Refused):
                    message = str(exc)  # says which rule, and which host and address
                elif isinstance(exc, requests.RequestException):
                    message = _request_error_message(exc, url)
                else:
                    message = describe(exc)  # e.g. an invalid header value
                result.append(Outcome(succeeded=False, message=message, http_status=status[0] if status else None))
                return
            code = status[0]
            if matches(code):
                result.append(Outcome(succeeded=True, http_status=code))
            else:
                result.append(Outcome(succeeded=False, message=f"HTTP {code} (expected {expected})", http_status=code))

        helper = threading.Thread(target=call, name=f"http-action {method} {url}", daemon=True)
        helper.start()
        reason = wait_for_thread(helper, deadline, stop)
        if reason:
            abandoned.set()
            return cut_short(reason, output=tail.text(), http_status=status[0] if status else None)
        # requests' own timeout may have fired just before ours: its message is
        # the same TIMED_OUT placeholder.
        return replace(result[0], output=tail.text())
