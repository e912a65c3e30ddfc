"""Extension objects, created unbound and bound in ``create_app`` with ``init_app``."""
from __future__ import annotations

from flask_migrate import Migrate

from .database import db  # noqa: F401  (re-exported: the one handle views use)
from .engine.scheduler import SchedulerExtension
from .errors import ApiWithHeaders

migrate = Migrate()
api = ApiWithHeaders()
scheduler = SchedulerExtension()

