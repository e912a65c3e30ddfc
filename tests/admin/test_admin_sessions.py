"""Admin sessions and logins, on SQLite and PostgreSQL: throttled failed logins, sessions that end on the
server, the Secure cookie flag, and redirect targets with control characters.

Time is never waited for: the minute of the throttle passes by ageing the stored failures.
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from tests.admin.admin_helpers import ADMIN_NAME, ADMIN_PASSWORD, csrf_of, task_form, text_of
from tests.appfactory import make_app
from scheduler_service.admin import throttle
from scheduler_service.admin.accounts import create_admin, find_admin, set_password
from scheduler_service.admin.models import AdminSession, LoginFailure
from scheduler_service.extensions import db
from scheduler_service.models import Task

UTC = timezone.utc
SECRET = "admin-tests-secret"
HTTPS = "https://localhost"


# --- helpers -----------------------------------------------------------------------------------------


def log_in(client, password: str = ADMIN_PASSWORD, name: str = ADMIN_NAME, address: str | None = None,
           base_url: str = "http://localhost", **fields):
    """POST the login form as a browser would (the form first, for its CSRF token)."""
    environ = {"REMOTE_ADDR": address} if address else {}
    client.get("/admin/login", environ_base=environ, base_url=base_url)
    data = {"name": name, "password": password, "csrf_token": csrf_of(client), **fields}
    return client.post("/admin/login", data=data, environ_base=environ, base_url=base_url)


def logged_in(client) -> bool:
    response = client.get("/admin/")
    assert response.status_code in (200, 302)
    return response.status_code == 200


def count(app, model, *where) -> int:
    with app.app_context():
        return db.session.execute(sa.select(sa.func.count()).select_from(model).where(*where)).scalar_one()


def age_failures(app, seconds: float) -> None:
    """Move every stored failure ``seconds`` into the past: the throttle's minute passes without waiting."""
    with app.app_context():
        for failure in db.session.scalars(sa.select(LoginFailure)):
            failure.at -= timedelta(seconds=seconds)
        db.session.commit()


def add_failures(app, key: str, times: list[datetime]) -> None:
    with app.app_context():
        db.session.add_all(LoginFailure(key=key, at=at) for at in times)
        db.session.commit()


def session_cookie(client) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


# --- throttled logins -------------------------------------------------------------------------------


def test_thirty_wrong_passwords_then_the_right_one_is_still_refused(app, admin_account):
    client = app.test_client()
    started = datetime.now(UTC)
    statuses = [log_in(client, f"wrong password {n}").status_code for n in range(30)]
    assert datetime.now(UTC) - started < timedelta(seconds=30)  # all well within the minute
    assert statuses == [401] * 10 + [429] * 20

    right = log_in(client)
    assert right.status_code == 429
    assert 1 <= int(right.headers["Retry-After"]) <= 60
    page = text_of(right.get_data(as_text=True))
    assert "Too many failed logins for this name or from this address" in page
    assert f"Try again in {right.headers['Retry-After']} seconds" in page
    assert 'value="alice"' in right.get_data(as_text=True)  # the form keeps the name
    assert not logged_in(client)
    assert count(app, AdminSession) == 0
    # Refused tries are not checked, so they are no failures: only the first ten are kept.
    assert count(app, LoginFailure, LoginFailure.key == f"name:{ADMIN_NAME}") == 10

    age_failures(app, 61)
    after_a_minute = log_in(client)
    assert after_a_minute.status_code == 302 and after_a_minute.location == "/admin/"
    assert logged_in(client)


def test_failures_are_counted_per_name_from_any_address(app, admin_account):
    client = app.test_client()
    for n in range(10):
        assert log_in(client, "wrong password", address=f"10.0.0.{n + 1}").status_code == 401
    refused = log_in(client, address="10.0.9.9")
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    # Another name from that address is not held back by alice's failures.
    assert log_in(client, "wrong password", name="bob", address="10.0.9.9").status_code == 401


def test_failures_are_counted_per_address_for_any_name(app, admin_account):
    client = app.test_client()
    for n in range(10):
        assert log_in(client, "wrong password", name=f"guess{n}", address="192.0.2.7").status_code == 401
    assert log_in(client, address="192.0.2.7").status_code == 429
    assert log_in(client, address="192.0.2.8").status_code == 302


def test_the_limit_holds_across_processes_sharing_the_database(app, admin_account):
    """Two apps, each with engines and memory of its own (as two gunicorn workers), one database."""
    other = make_app(app.config["SQLALCHEMY_DATABASE_URI"], SECRET_KEY=SECRET)
    try:
        first, second = app.test_client(), other.test_client()
        for n in range(5):
            assert log_in(first, "wrong password").status_code == 401
            assert log_in(second, "wrong password").status_code == 401
        assert log_in(first).status_code == 429
        assert log_in(second).status_code == 429
    finally:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()


def test_successful_logins_are_no_failures(app, admin_account):
    client = app.test_client()
    for _ in range(12):
        assert log_in(client).status_code == 302
    assert count(app, LoginFailure) == 0
    assert log_in(client, "wrong password").status_code == 401


def test_retry_after_counts_from_the_oldest_failure_in_the_window(app):
    now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    keys = throttle.throttle_keys("carol", "198.51.100.1")
    # Ten failures of the name 45..36 s ago, and one of the address 5 s ago.
    add_failures(app, "name:carol", [now - timedelta(seconds=45 - n) for n in range(10)])
    add_failures(app, "addr:198.51.100.1", [now - timedelta(seconds=5)])
    with app.app_context():
        refused = throttle.begin_attempt(keys, now)
        assert refused.retry_after == 15 and refused.failure_ids == ()
        # Just before the oldest leaves the window: still refused, for one second.
        assert throttle.begin_attempt(keys, now + timedelta(seconds=14.5)).retry_after == 1
        allowed = throttle.begin_attempt(keys, now + timedelta(seconds=15))
        assert allowed.retry_after is None and len(allowed.failure_ids) == 2
    # The oldest failure, now a minute old, was pruned by that last try.
    assert count(app, LoginFailure, LoginFailure.key == "name:carol") == 10
    assert count(app, LoginFailure, LoginFailure.at <= now - timedelta(seconds=45)) == 0


def test_failures_older_than_a_minute_are_pruned(app, admin_account):
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    add_failures(app, "name:someone else", [long_ago] * 3)
    add_failures(app, "addr:203.0.113.5", [long_ago] * 20)
    client = app.test_client()
    assert log_in(client, "wrong password", address="203.0.113.5").status_code == 401
    assert count(app, LoginFailure) == 2  # this failure's two rows (name and address); the old ones are gone


def test_a_long_name_is_still_throttled(app, admin_account):
    client = app.test_client()
    name = "n" * 5000
    for _ in range(10):
        assert log_in(client, "wrong password", name=name).status_code == 401
    assert log_in(client, "wrong password", name=name, address="10.1.1.1").status_code == 429


# --- sessions that end on the server ---------------------------------------------------------------


def test_a_login_keeps_only_a_hash_of_the_session_id(app, web):
    with web.session_transaction() as session:
        session_id = session["admin_session"]
    with app.app_context():
        (row,) = db.session.scalars(sa.select(AdminSession)).all()
        assert row.id_hash == hashlib.sha256(session_id.encode()).hexdigest()
        assert row.user_id == find_admin(ADMIN_NAME).id
    assert count(app, AdminSession) == 1


def test_a_copied_cookie_stops_working_after_logout(app, web):
    thief = app.test_client()
    thief.set_cookie("session", session_cookie(web))
    assert logged_in(thief)

    response = web.post("/admin/logout", data={"csrf_token": csrf_of(web)})
    assert response.status_code == 302 and response.location == "/admin/login"
    assert count(app, AdminSession) == 0

    refused = thief.get("/admin/tasks/")
    assert refused.status_code == 302 and refused.location.startswith("/admin/login?next=")
    assert not logged_in(web)


def test_logging_out_ends_only_that_session(app, web):
    second = app.test_client()
    assert log_in(second).status_code == 302
    assert count(app, AdminSession) == 2
    web.post("/admin/logout", data={"csrf_token": csrf_of(web)})
    assert not logged_in(web)
    assert logged_in(second)


def test_a_password_reset_ends_every_session_of_that_user_only(app, web):
    second = app.test_client()
    assert log_in(second).status_code == 302
    with app.app_context():
        create_admin("bob", "bobs password")
    bob = app.test_client()
    assert log_in(bob, "bobs password", name="bob").status_code == 302

    with app.app_context():
        set_password(find_admin(ADMIN_NAME), "a brand new password")
    assert count(app, AdminSession) == 1
    assert not logged_in(web) and not logged_in(second)
    assert logged_in(bob)
    assert log_in(web, "a brand new password").status_code == 302


def test_a_session_id_the_server_never_issued_is_no_login(app, web):
    forged = app.test_client()
    forged.get("/admin/login")
    with forged.session_transaction() as session:
        session["admin_session"] = "made-up"
    assert not logged_in(forged)


def test_csrf_still_guards_logout(app, web):
    assert web.post("/admin/logout", data={"csrf_token": "forged"}).status_code == 400
    assert logged_in(web) and count(app, AdminSession) == 1


# --- the Secure flag --------------------------------------------------------------------------------


def login_cookie_attributes(app) -> list[str]:
    """The attributes of the session cookie a login sets (``HttpOnly``, ``Secure``, ``SameSite=Lax``...)."""
    response = log_in(app.test_client(), base_url=HTTPS)
    assert response.status_code == 302
    (cookie,) = [value for value in response.headers.getlist("Set-Cookie") if value.startswith("session=")]
    return cookie_attributes(cookie)


def cookie_attributes(set_cookie: str) -> list[str]:
    return [part.strip() for part in set_cookie.split(";")[1:]]


def test_the_session_cookie_is_not_secure_by_default(app, admin_account):
    assert app.config["SESSION_COOKIE_SECURE"] is False
    attributes = login_cookie_attributes(app)
    assert "HttpOnly" in attributes and "SameSite=Lax" in attributes
    assert "Secure" not in attributes


@pytest.mark.parametrize("how", ["environment", "override"])
def test_session_cookie_secure_marks_the_cookie_secure(app, admin_account, monkeypatch, how):
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    if how == "environment":
        monkeypatch.setenv("SESSION_COOKIE_SECURE", "true")  # the documented setting
        secure = make_app(url, SECRET_KEY=SECRET)
    else:
        secure = make_app(url, SECRET_KEY=SECRET, SESSION_COOKIE_SECURE=True)
    try:
        assert secure.config["SESSION_COOKIE_SECURE"] is True
        attributes = login_cookie_attributes(secure)
        assert "Secure" in attributes and "HttpOnly" in attributes and "SameSite=Lax" in attributes
        # The login form's own cookie (before any login) is Secure too.
        first = secure.test_client().get("/admin/login", base_url=HTTPS)
        assert "Secure" in cookie_attributes(first.headers["Set-Cookie"])
        # And the session works over https.
        client = secure.test_client()
        assert log_in(client, base_url=HTTPS).status_code == 302
        assert client.get("/admin/", base_url=HTTPS).status_code == 200
    finally:
        with secure.app_context():
            db.session.remove()
            db.engine.dispose()


# --- redirect targets with control characters --------------------------------------------------------

CONTROL_TARGETS = ["/admin/\r\nX: y", "/admin/\nSet-Cookie: a=b", "/admin/\x00", "/admin/\tx", "/admin/x\x7f",
                   "/admin/\x85", "/admin/runs/\x1b[2J"]


@pytest.mark.parametrize("target", CONTROL_TARGETS)
def test_a_control_character_in_next_is_400_before_and_after_login(app, web, target):
    assert web.get("/admin/login", query_string={"next": target}).status_code == 400
    anonymous = app.test_client()
    response = anonymous.get("/admin/login", query_string={"next": target})
    assert response.status_code == 400
    assert "control character" in text_of(response.get_data(as_text=True))
    assert "Location" not in response.headers


def test_the_reported_request_is_400(app, web):
    assert web.get("/admin/login?next=/admin/%0d%0aX:%20y").status_code == 400


@pytest.mark.parametrize("target", CONTROL_TARGETS)
def test_a_control_character_in_next_of_a_login_is_400_and_logs_nobody_in(app, admin_account, target):
    client = app.test_client()
    in_form = log_in(client, next=target)
    assert in_form.status_code == 400
    client.get("/admin/login")
    in_query = client.post("/admin/login", query_string={"next": target},
                           data={"name": ADMIN_NAME, "password": ADMIN_PASSWORD, "csrf_token": csrf_of(client)})
    assert in_query.status_code == 400
    assert count(app, AdminSession) == 0 and count(app, LoginFailure) == 0
    assert not logged_in(client)


def test_a_control_character_in_a_buttons_next_is_400_and_the_task_is_left_alone(app, web):
    created = web.post("/admin/tasks/new", data=task_form("guarded", csrf_of(web)))
    task_id = int(re.search(r"/admin/tasks/(\d+)/", created.location).group(1))
    response = web.post(f"/admin/tasks/{task_id}/toggle",
                        data={"csrf_token": csrf_of(web), "next": "/admin/tasks/\r\nX: y"})
    assert response.status_code == 400
    with app.app_context():
        assert db.session.get(Task, task_id).enabled is True
    # A clean target still works.
    back = web.post(f"/admin/tasks/{task_id}/toggle", data={"csrf_token": csrf_of(web), "next": "/admin/tasks/"})
    assert back.status_code == 302 and back.location == "/admin/tasks/"
