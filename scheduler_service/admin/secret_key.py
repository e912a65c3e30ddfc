"""The key that signs admin sessions: ``SECRET_KEY`` when set, else one kept in the instance folder.

The kept key is made on first use, so sessions survive restarts without any
setup. Processes on one host share it; several hosts behind one address must
set the same ``SECRET_KEY`` instead.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from flask import Flask, Request
from flask.sessions import SecureCookieSessionInterface, SessionMixin

KEY_FILE = "secret_key"


def load_or_create_secret_key(instance_path: str | os.PathLike[str]) -> str:
    """The key in ``instance_path/secret_key``, created (mode 0600) if missing.

    Gunicorn workers may start together: the key is written to a private file
    first and linked into place, so a reader never sees a half-written key and
    only the first writer's key is ever used.
    """
    folder = Path(instance_path)
    target = folder / KEY_FILE
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        draft = folder / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32))
        try:
            os.link(draft, target)
        except FileExistsError:
            pass  # another process was first: use its key
        finally:
            draft.unlink()
    key = target.read_text().strip()
    if not key:
        raise RuntimeError(f"{target} is empty; delete it or set SECRET_KEY")
    return key


class InstanceKeySessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the key resolved when the admin first needs one.

    The API never uses the session, so API requests, ``flask db upgrade`` and
    the tests of other parts never write a key file.
    """

    def __init__(self, path_prefix: str) -> None:
        self.path_prefix = path_prefix

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if not app.secret_key and request.path.startswith(self.path_prefix):
            app.secret_key = load_or_create_secret_key(app.instance_path)
        return super().open_session(app, request)
