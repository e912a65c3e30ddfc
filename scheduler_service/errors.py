"""The one JSON error shape: ``{"code", "status", "message"?, "errors"?}``.

flask-smorest's handler turns every ``HTTPException`` (``abort(404, message=...)``,
webargs validation errors, Flask's own 404/405/413) into that shape; this
module adds the cases it does not see and the helpers views use.
"""
from __future__ import annotations

import logging
from typing import NoReturn

from flask import Flask
from flask_smorest import abort
from sqlalchemy.exc import IntegrityError

log = logging.getLogger(__name__)


def abort_invalid(field: str, message: str, location: str = "json") -> NoReturn:
    """Answer 422 naming ``field``, in the shape webargs gives schema errors."""
    abort(422, errors={location: {field: [message]}})


def _integrity_error(error: IntegrityError):
    # A race the views' own checks could not see (two clients creating one name).
    from .extensions import db

    db.session.rollback()
    return {"code": 409, "status": "Conflict", "message": "conflicts with existing data"}, 409


def _unexpected_error(error: Exception):
    from .extensions import db

    db.session.rollback()
    log.exception("unhandled error")
    return {"code": 500, "status": "Internal Server Error", "message": "internal error"}, 500


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(IntegrityError, _integrity_error)
    if not app.testing:
        # Under test, let an unexpected error propagate so it fails loudly.
        app.register_error_handler(Exception, _unexpected_error)
