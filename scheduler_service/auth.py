"""Bearer tokens and their scopes: only a SHA-256 of each token is stored, and every /api/ request is
checked for a valid token whose scope allows it (403 naming the scope needed otherwise).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, TypeVar

import sqlalchemy as sa
from flask import Flask, current_app, g, request
from flask_smorest import abort

from . import audit
from .clock import utcnow
from .extensions import db
from .models import TOKEN_SCOPES, ApiToken

View = TypeVar("View", bound=Callable[..., Any])
READ_METHODS = {"GET", "HEAD", "OPTIONS"}
#: Action types that can do whatever the service's own user can.
PRIVILEGED_ACTIONS = ("shell", "python")
LAST_USED_PRECISION = timedelta(minutes=1)

# Paths a person or a load balancer reaches without a token.
PUBLIC_PATHS = {"/api/health", "/api/openapi.json", "/api/docs"}
PUBLIC_PREFIXES = ("/api/docs/",)

#: How long a process trusts a token it found valid without asking the database again.
#: A token revoked by another process (``flask revoke-token`` is one) is refused by this
#: one at most this many seconds later; README, "Deployment", says so.
TOKEN_CACHE_SECONDS = 5.0
CACHE_KEY = "scheduler_service.valid_tokens"


@dataclass(frozen=True)
class TokenHolder:
    """Who a valid token speaks for: its name and its scope."""

    name: str
    scope: str


def scope_allows(held: str, needed: str) -> bool:
    """Each scope may do everything the scopes before it in TOKEN_SCOPES may."""
    return TOKEN_SCOPES.index(held) >= TOKEN_SCOPES.index(needed)


class ValidTokenCache:
    """Digests of tokens this process has found valid, each trusted for ``ttl`` seconds.

    Only digests the database confirmed are kept, so wrong tokens, however many clients send,
    add nothing. ``clear`` (on a revoke in this process) also
    stops a lookup that began before it from adding its digest back.
    """

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._trusted: dict[str, tuple[float, TokenHolder]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._trusted)

    def holds(self, digest: str) -> TokenHolder | None:
        """The holder of ``digest`` while it is trusted, else None."""
        entry = self._trusted.get(digest)
        if entry is None:
            return None
        until, holder = entry
        if self.clock() < until:
            return holder
        self._trusted.pop(digest, None)
        return None

    @property
    def generation(self) -> int:
        return self._generation

    def add(self, digest: str, generation: int, holder: TokenHolder) -> None:
        """Trust ``digest`` from now on, unless the cache was cleared since ``generation`` was read."""
        with self._lock:
            if generation == self._generation:
                self._trusted[digest] = (self.clock() + self.ttl, holder)

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._trusted.clear()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(name: str, scope: str = "admin") -> str:
    """Store a new token under ``name`` and return it; it is never shown again."""
    if scope not in TOKEN_SCOPES:
        raise ValueError(f"unknown scope {scope!r}: expected one of {', '.join(TOKEN_SCOPES)}")
    token = secrets.token_urlsafe(32)
    db.session.add(ApiToken(name=name, token_hash=hash_token(token), scope=scope))
    db.session.commit()
    return token


def revoke_token(name: str) -> bool:
    deleted = db.session.execute(sa.delete(ApiToken).where(ApiToken.name == name)).rowcount
    db.session.commit()
    cache = _cache()
    if cache is not None:
        cache.clear()  # this process refuses the token from now on, not in a few seconds
    return bool(deleted)


def token_holder(token: str) -> TokenHolder | None:
    """Who ``token`` speaks for, or None for a token that is not (or no longer) stored."""
    digest = hash_token(token)
    cache = _cache()
    if cache is None:
        return _stored(digest)
    holder = cache.holds(digest)
    if holder is not None:
        return holder
    generation = cache.generation
    holder = _stored(digest)
    if holder is not None:
        cache.add(digest, generation, holder)
    return holder


def _stored(digest: str) -> TokenHolder | None:
    row = db.session.execute(
        sa.select(ApiToken.token_hash, ApiToken.name, ApiToken.scope).where(ApiToken.token_hash == digest)
    ).first()
    # The lookup is by a hash the client cannot steer; compare in constant time anyway.
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    _note_use(digest)
    return TokenHolder(row.name, row.scope)


def _note_use(digest: str) -> None:
    """Stamp the token's last use; at most once a minute, so that reads stay reads."""
    now = utcnow()
    db.session.execute(
        sa.update(ApiToken)
        .where(
            ApiToken.token_hash == digest,
            sa.or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < now - LAST_USED_PRECISION),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()


def _cache() -> ValidTokenCache | None:
    return current_app.extensions.get(CACHE_KEY)


# --- scopes ------------------------------------------------------------------------------


def requires_scope(scope: str) -> Callable[[View], View]:
    """Declare the scope a view method needs. Undeclared: ``read`` for GET and HEAD, else ``admin``
    (a new write endpoint that forgets to say is closed, not open)."""
    if scope not in TOKEN_SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def declare(view: View) -> View:
        view.required_scope = scope  # type: ignore[attr-defined]
        return view

    return declare


def _required_scope() -> str:
    view = current_app.view_functions.get(request.endpoint or "")
    handler = getattr(getattr(view, "view_class", None), request.method.lower(), view)
    declared = getattr(handler, "required_scope", None)
    if declared is not None:
        return declared
    return "read" if request.method in READ_METHODS else "admin"


def request_scope() -> str | None:
    """The scope of this request's token; None outside the token-checked API (the admin, the CLI)."""
    return g.get("token_scope")


def require_action_scope(*actions: dict[str, Any] | None) -> None:
    """403 unless this request may manage tasks with these actions: ``shell`` and ``python``
    can do whatever the service's user can, so they need ``admin``."""
    held = request_scope()
    if held is None or held == "admin":
        return
    for action in actions:
        kind = (action or {}).get("type")
        if kind in PRIVILEGED_ACTIONS:
            abort(403, message=f"tasks with a {kind!r} action need a token with the 'admin' scope"
                               f" (this token's scope is {held!r})")


def _require_token() -> None:
    path = request.path
    if not path.startswith("/api/") or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    holder = token_holder(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
    if holder is None:
        abort(401, message="missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
    needed = _required_scope()
    if not scope_allows(holder.scope, needed):
        abort(403, message=f"this request needs a token with the {needed!r} scope"
                           f" (this token's scope is {holder.scope!r})")
    g.token_scope = holder.scope
    audit.set_actor(f"token:{holder.name}")


def init_app(app: Flask) -> None:
    app.extensions[CACHE_KEY] = ValidTokenCache(TOKEN_CACHE_SECONDS)
    app.before_request(_require_token)
