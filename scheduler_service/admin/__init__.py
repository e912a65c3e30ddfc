"""The admin web interface at /admin/: server-rendered pages over the API's own rules.

Pages are Jinja templates with a small stylesheet and inline SVG charts; every
file is served by the service itself (no CDN: it runs on closed networks).
Writes go through ``services`` and input through ``TaskSchema``, exactly as
the API's, so the two never disagree about what a valid task is.
"""
from __future__ import annotations

from flask import Flask

from . import models  # noqa: F401  (registers AdminUser on db.metadata, for migrations)
from .cli import create_admin_command
from .formatting import register_filters
from .secret_key import InstanceKeySessionInterface
from .views import blp
from . import calendar_views, pool_views, run_control_views  # noqa: F401  (their pages are routes on views.blp)

URL_PREFIX = "/admin"


def init_app(app: Flask) -> None:
    # SECRET_KEY None (Flask's default) means: a key kept in the instance folder, made on first use.
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:  # Flask's default sets no SameSite at all
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.session_interface = InstanceKeySessionInterface(URL_PREFIX)
    register_filters(app)
    app.register_blueprint(blp, url_prefix=URL_PREFIX)
    app.cli.add_command(create_admin_command)
