"""Headers of every response: no MIME sniffing anywhere, and HTML pages that run only our own files.

A JSON body or a run's output sniffed as HTML could run script on our origin, so
every response says ``nosniff``. HTML pages (the admin, the API docs) may not be
framed and may load nothing but the service's own files.
"""
from __future__ import annotations

from flask import Flask, Response

# Only our own files: no inline script, no third-party origin (the pages work on closed networks).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def add_security_headers(response: Response) -> Response:
    # setdefault: a page that needs a policy of its own keeps it.
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Frame-Options", "DENY")
    return response


def init_app(app: Flask) -> None:
    app.after_request(add_security_headers)
