"""A Flask service that stores cron tasks, runs them and logs every run."""
from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from . import api as api_resources
from . import admin, auth, cli, errors, http_headers, ops, run_counts
from .api import docs_assets
from .config import ConfigError, load_settings, settle_defaults
from .database import watch_sqlite_connections
from .extensions import api, db, migrate, scheduler

MIGRATIONS_DIR = str(Path(__file__).resolve().parent.parent / "migrations")


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: config -> extensions -> blueprints -> errors -> auth -> CLI -> scheduler."""
    app = Flask(__name__, instance_relative_config=True)
    configure(app, overrides)
    db.init_app(app)
    watch_sqlite_connections()
    run_counts.watch_orm_writes()
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, render_as_batch=True)
    api.init_app(app)
    api_resources.register(api)
    app.register_blueprint(docs_assets.blp)
    errors.register_error_handlers(app)
    http_headers.init_app(app)
    auth.init_app(app)
    cli.init_app(app)
    ops.init_app(app)
    admin.init_app(app)
    scheduler.init_app(app)
    return app


def configure(app: Flask, overrides: Mapping[str, Any] | None) -> None:
    app.config.from_mapping(
        API_TITLE="Scheduler Service",
        API_VERSION="1.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        # No OPENAPI_SWAGGER_UI_PATH: docs_assets serves /api/docs, without inline script.
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
    )
    app.json.sort_keys = False  # keep the schemas' field order
    app.config.update(load_settings())
    app.config.update(overrides or {})
    settle_defaults(app.config)
    if app.config["SQLALCHEMY_DATABASE_URI"] is None:
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
        app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{Path(app.instance_path) / 'scheduler.db'}"
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        # Several processes may write: wait for the lock rather than fail at once.
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"connect_args": {"timeout": 30}}


def create_app_or_exit() -> Flask:
    """``create_app`` for entry points: a bad setting stops start-up with one line."""
    try:
        return create_app()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
