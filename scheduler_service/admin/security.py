"""Who is logged in, the CSRF token of every form, and the headers of every admin page.

The session is Flask's signed cookie (HttpOnly, SameSite=Lax, Secure when
SESSION_COOKIE_SECURE is set). It holds a random session id, a stamp of the
user's password hash and the CSRF token that every POST must echo back. The
session lives on the server too, as an ``AdminSession`` row keyed by a SHA-256
of the id: logging out deletes the row, so a copied cookie stops working, and a
password reset deletes every row of the user.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import Response, g, request, session

from ..database import db
from ..http_headers import CONTENT_SECURITY_POLICY
from .accounts import session_stamp
from .models import AdminSession, AdminUser

CSRF_FIELD = "csrf_token"
_SESSION_KEY = "admin_session"
_STAMP_KEY = "admin_stamp"
_CSRF_KEY = "csrf_token"

# C0 and C1 controls and DEL: never part of an address we send back (CR LF would split the Location header).
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _session_digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def log_in(user: AdminUser) -> None:
    # A new session on login: a session id planted before login is worth nothing after it.
    session.clear()
    session_id = secrets.token_urlsafe(32)
    db.session.add(AdminSession(id_hash=_session_digest(session_id), user_id=user.id))
    db.session.commit()
    session[_SESSION_KEY] = session_id
    session[_STAMP_KEY] = session_stamp(user)
    session[_CSRF_KEY] = secrets.token_urlsafe(32)
    g.admin = user


def log_out() -> None:
    session_id = session.get(_SESSION_KEY)
    if isinstance(session_id, str):
        db.session.execute(sa.delete(AdminSession).where(AdminSession.id_hash == _session_digest(session_id)))
        db.session.commit()
    session.clear()
    g.admin = None


def current_admin() -> AdminUser | None:
    """The logged-in user of this request (looked up once), or None."""
    if "admin" not in g:
        g.admin = _session_user()
    return g.admin


def _session_user() -> AdminUser | None:
    session_id = session.get(_SESSION_KEY)
    if not isinstance(session_id, str):
        return None
    user = db.session.execute(
        sa.select(AdminUser).join(AdminSession, AdminSession.user_id == AdminUser.id)
        .where(AdminSession.id_hash == _session_digest(session_id))
    ).scalar_one_or_none()
    if user is None or not hmac.compare_digest(str(session.get(_STAMP_KEY, "")), session_stamp(user)):
        return None
    return user


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


def has_control_character(text: str) -> bool:
    return _CONTROL_CHARACTERS.search(text) is not None


def safe_next(target: str | None, default: str) -> str:
    """``target`` if it is a path of the admin itself, else ``default`` (no open redirects).

    A target with a control character is refused before any view runs (400, see views);
    here it falls back to ``default`` all the same, so no caller can ever redirect to one.
    """
    if not target or has_control_character(target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/admin/") or "\\" in target:
        return default
    return target


def add_security_headers(response: Response) -> Response:
    # Every admin response, JSON and files included, gets the page policy (http_headers adds it to HTML only).
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.mimetype == "text/html":
        # Pages show live state and private data: never from a cache.
        response.headers.setdefault("Cache-Control", "no-store")
    return response
