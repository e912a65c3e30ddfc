"""Bearer tokens: only a SHA-256 of each token is stored, and every /api/ request is checked."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from typing import Callable

import sqlalchemy as sa
from flask import Flask, current_app, request
from flask_smorest import abort

from .extensions import db
from .models import ApiToken

# Paths a person or a load balancer reaches without a token.
PUBLIC_PATHS = {"/api/health", "/api/openapi.json", "/api/docs"}
PUBLIC_PREFIXES = ("/api/docs/",)

#: How long a process trusts a token it found valid without asking the database again.
#: A token revoked by another process (``flask revoke-token`` is one) is refused by this
#: one at most this many seconds later; README, "Deployment", says so.
TOKEN_CACHE_SECONDS = 5.0
CACHE_KEY = "scheduler_service.valid_tokens"


class ValidTokenCache:
    """Digests of tokens this process has found valid, each trusted for ``ttl`` seconds.

    Only digests the database confirmed are kept, so wrong tokens, however many clients send,
    add nothing. ``clear`` (on a revoke in this process) also
    stops a lookup that began before it from adding its digest back.
    """

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._trusted_until: dict[str, float] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._trusted_until)

    def holds(self, digest: str) -> bool:
        until = self._trusted_until.get(digest)
        if until is None:
            return False
        if self.clock() < until:
            return True
        self._trusted_until.pop(digest, None)
        return False

    @property
    def generation(self) -> int:
        return self._generation

    def add(self, digest: str, generation: int) -> None:
        """Trust ``digest`` from now on, unless the cache was cleared since ``generation`` was read."""
        with self._lock:
            if generation == self._generation:
                self._trusted_until[digest] = self.clock() + self.ttl

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._trusted_until.clear()


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(name: str) -> str:
    """Store a new token under ``name`` and return it; it is never shown again."""
    token = secrets.token_urlsafe(32)
    db.session.add(ApiToken(name=name, token_hash=hash_token(token)))
    db.session.commit()
    return token


def revoke_token(name: str) -> bool:
    deleted = db.session.execute(sa.delete(ApiToken).where(ApiToken.name == name)).rowcount
    db.session.commit()
    cache = _cache()
    if cache is not None:
        cache.clear()  # this process refuses the token from now on, not in a few seconds
    return bool(deleted)


def token_is_valid(token: str) -> bool:
    digest = hash_token(token)
    cache = _cache()
    if cache is None:
        return _stored(digest)
    if cache.holds(digest):
        return True
    generation = cache.generation
    if not _stored(digest):
        return False
    cache.add(digest, generation)
    return True


def _stored(digest: str) -> bool:
    stored = db.session.execute(sa.select(ApiToken.token_hash).where(ApiToken.token_hash == digest)).scalar()
    # The lookup is by a hash the client cannot steer; compare in constant time anyway.
    return stored is not None and hmac.compare_digest(stored, digest)


def _cache() -> ValidTokenCache | None:
    return current_app.extensions.get(CACHE_KEY)


def _require_token() -> None:
    path = request.path
    if not path.startswith("/api/") or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or not token_is_valid(token.strip()):
        abort(401, message="missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})


def init_app(app: Flask) -> None:
    app.extensions[CACHE_KEY] = ValidTokenCache(TOKEN_CACHE_SECONDS)
    app.before_request(_require_token)
