"""Bearer tokens: only a SHA-256 of each token is stored, and every /api/ request is checked."""
from __future__ import annotations

import hashlib
import hmac
import secrets

import sqlalchemy as sa
from flask import Flask, request
from flask_smorest import abort

from .extensions import db
from .models import ApiToken

# Paths a person or a load balancer reaches without a token.
PUBLIC_PATHS = {"/api/health", "/api/openapi.json", "/api/docs"}
PUBLIC_PREFIXES = ("/api/docs/",)


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
    return bool(deleted)


def token_is_valid(token: str) -> bool:
    digest = hash_token(token)
    stored = db.session.execute(sa.select(ApiToken.token_hash).where(ApiToken.token_hash == digest)).scalar()
    # The lookup is by a hash the client cannot steer; compare in constant time anyway.
    return stored is not None and hmac.compare_digest(stored, digest)


def _require_token() -> None:
    path = request.path
    if not path.startswith("/api/") or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or not token_is_valid(token.strip()):
        abort(401, message="missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})


def init_app(app: Flask) -> None:
    app.before_request(_require_token)
