"""Fixtures of the admin tests: a secret key, an admin account, a logged-in test client."""
from __future__ import annotations

import pytest
from werkzeug.security import generate_password_hash

from tests.admin.admin_helpers import ADMIN_NAME, ADMIN_PASSWORD, csrf_of
from scheduler_service.admin.models import AdminUser
from scheduler_service.extensions import db

# scrypt (the default) takes a good part of a second; the fixtures' account uses a cheap
# hash so that logging in costs nothing. The CLI tests still make real scrypt hashes.
CHEAP_HASH = generate_password_hash(ADMIN_PASSWORD, method="pbkdf2:sha256:1000")


@pytest.fixture
def app_config() -> dict:
    return {"SECRET_KEY": "admin-tests-secret"}


@pytest.fixture
def admin_account(app):
    with app.app_context():
        user = AdminUser(name=ADMIN_NAME, password_hash=CHEAP_HASH)
        db.session.add(user)
        db.session.commit()
        return user.id


@pytest.fixture
def web(app, admin_account):
    """A browser-like test client, logged in as the admin (cookies kept between requests)."""
    client = app.test_client()
    client.get("/admin/login")
    response = client.post(
        "/admin/login",
        data={"name": ADMIN_NAME, "password": ADMIN_PASSWORD, "csrf_token": csrf_of(client)},
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Lets the browser fixtures see whether the test failed, to keep a screenshot of the moment.
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)
