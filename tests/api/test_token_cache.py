"""Each process trusts a token it has checked for a few seconds (auth.TOKEN_CACHE_SECONDS).

A revoke in the same process is seen at once; one made elsewhere (the row deleted by
another process) at most TOKEN_CACHE_SECONDS later. Only valid tokens are remembered.
"""
from __future__ import annotations

import sqlalchemy as sa

from scheduler_service import auth
from scheduler_service.extensions import db
from scheduler_service.models import ApiToken


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _cache(app) -> auth.ValidTokenCache:
    return app.extensions[auth.CACHE_KEY]


def _status(app, token: str) -> int:
    return app.test_client().get("/api/tasks/", headers={"Authorization": f"Bearer {token}"}).status_code


def _delete_elsewhere(app, name: str) -> None:
    """What ``revoke-token`` in another process does to this one: the row goes, the cache stays."""
    with app.app_context():
        db.session.execute(sa.delete(ApiToken).where(ApiToken.name == name))
        db.session.commit()


def test_a_token_revoked_elsewhere_is_refused_once_the_cache_expires(app, token):
    clock = _cache(app).clock = FakeClock()
    assert _status(app, token) == 200
    _delete_elsewhere(app, "tests")

    clock.now += auth.TOKEN_CACHE_SECONDS - 0.1
    assert _status(app, token) == 200  # the documented delay
    clock.now += 0.2
    assert _status(app, token) == 401
    assert _status(app, token) == 401


def test_a_revoke_in_this_process_is_seen_at_once(app, token):
    assert _status(app, token) == 200
    with app.app_context():
        assert auth.revoke_token("tests") is True
    assert _status(app, token) == 401


def test_a_refused_token_is_not_remembered(app):
    token = "not-yet-a-token"
    for _ in range(3):
        assert _status(app, token) == 401
    for index in range(50):
        assert _status(app, f"wrong-{index}") == 401
    assert len(_cache(app)) == 0

    # Stored now (by another process): accepted at once, nothing negative was cached.
    with app.app_context():
        db.session.add(ApiToken(name="late", token_hash=auth.hash_token(token)))
        db.session.commit()
    assert _status(app, token) == 200
    assert len(_cache(app)) == 1


def test_a_lookup_that_began_before_a_revoke_does_not_trust_its_token_after_it():
    cache = auth.ValidTokenCache(ttl=5)
    generation = cache.generation  # a request read the database: the token was valid then
    cache.clear()                  # meanwhile this process revoked a token
    holder = auth.TokenHolder("tests", "admin")
    cache.add("digest", generation, holder)
    assert cache.holds("digest") is None
    cache.add("digest", cache.generation, holder)
    assert cache.holds("digest") == holder


def test_each_app_has_its_own_cache(app, token, tmp_path):
    from tests.appfactory import make_app

    assert _status(app, token) == 200
    other = make_app(f"sqlite:///{tmp_path / 'other.db'}")
    with other.app_context():
        db.create_all()
    try:
        assert _status(other, token) == 401  # the same token string means nothing to another database
    finally:
        with other.app_context():
            db.engine.dispose()
