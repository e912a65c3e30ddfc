"""Extension objects, created unbound and bound in ``create_app`` with ``init_app``."""
from __future__ import annotations

from flask_migrate import Migrate
from flask_smorest import Api

from .database import db  # noqa: F401  (re-exported: the one handle views use)
from .engine.scheduler import SchedulerExtension

migrate = Migrate()
api = Api()
scheduler = SchedulerExtension()

