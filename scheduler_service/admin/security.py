"""Who is logged in, the CSRF token of every form, and the headers of every admin page.

The session is Flask's signed cookie (HttpOnly, SameSite=Lax). It holds the
user's id, a stamp of their password hash (a password reset ends old
sessions) and the CSRF token that every POST must echo back.
"""
from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from flask import Response, g, request, session

from ..database import db
from .accounts import session_stamp
from .models import AdminUser

CSRF_FIELD = "csrf_token"
_USER_KEY = "admin_user_id"
_STAMP_KEY = "admin_stamp"
_CSRF_KEY = "csrf_token"

# Only our own files: no inline script, no third-party origin (the pages work on closed networks).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def log_in(user: AdminUser) -> None:
    # A new session on login: a session id planted before login is worth nothing after it.
    session.clear()
    session[_USER_KEY] = user.id
    session[_STAMP_KEY] = session_stamp(user)
    session[_CSRF_KEY] = secrets.token_urlsafe(32)


def log_out() -> None:
    session.clear()


def current_admin() -> AdminUser | None:
    """The logged-in user of this request (looked up once), or None."""
    if "admin" not in g:
        user_id = session.get(_USER_KEY)
        user = db.session.get(AdminUser, user_id) if isinstance(user_id, int) else None
        if user is not None and not hmac.compare_digest(session.get(_STAMP_KEY, ""), session_stamp(user)):
            user = None
        g.admin = user
    return g.admin


def csrf_token() -> str:
    """This session's token, made when a form first needs one (the login form included)."""
    token = session.get(_CSRF_KEY)
    if not token:
        token = session[_CSRF_KEY] = secrets.token_urlsafe(32)
    return token


def csrf_ok() -> bool:
    expected = session.get(_CSRF_KEY)
    sent = request.form.get(CSRF_FIELD, "")
    return bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


def safe_next(target: str | None, default: str) -> str:
    """``target`` if it is a path of the admin itself, else ``default`` (no open redirects)."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/admin/") or "\\" in target:
        return default
    return target


def add_security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype == "text/html":
        # Pages show live state and private data: never from a cache.
        response.headers.setdefault("Cache-Control", "no-store")
    return response
