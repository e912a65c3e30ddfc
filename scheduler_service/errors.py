"""The one JSON error shape: ``{"code", "status", "message"?, "errors"?}``.

flask-smorest's handler turns every ``HTTPException`` (``abort(404, message=...)``,
webargs validation errors, Flask's own 404/405/413) into that shape; this
module adds the cases it does not see: the services' refusals (refusals.py) and integrity
errors. It is the only place a refusal becomes HTTP.
"""
from __future__ import annotations

import io
import logging

from flask import Flask, request
from flask_smorest import Api
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES

from .database import db
from .refusals import Conflict, Invalid, NotFound, Refused

log = logging.getLogger(__name__)

_READ_SIZE = 65536

# A refusal answers with the status of the first class it is an instance of.
_REFUSAL_STATUSES: tuple[tuple[type[Refused], int], ...] = (
    (NotFound, 404),
    (Conflict, 409),
    (Invalid, 422),
    (Refused, 422),
)


def _refused(error: Refused):
    """A service's refusal in the shape flask-smorest gives ``abort(code, message=..., errors=...)``."""
    code = next(code for refusal, code in _REFUSAL_STATUSES if isinstance(error, refusal))
    body: dict = {"code": code, "status": HTTP_STATUS_CODES[code]}
    if error.message is not None:
        body["message"] = error.message
    if error.fields:
        # Under where the fields were given ("json", "query"), as webargs puts schema errors.
        body["errors"] = {error.location: error.fields}
    return body, code


def _integrity_error(error: IntegrityError):
    # A race the views' own checks could not see (two clients creating one name).
    db.session.rollback()
    return {"code": 409, "status": "Conflict", "message": "conflicts with existing data"}, 409


def _unexpected_error(error: Exception):
    db.session.rollback()
    log.exception("unhandled error")
    return {"code": 500, "status": "Internal Server Error", "message": "internal error"}, 500


def reject_oversized_bodies() -> None:
    """413 for any body over MAX_REQUEST_BYTES, also on endpoints that never read it
    (Flask itself only refuses a body when a view reads it)."""
    limit = request.max_content_length
    if limit is None:
        return
    if request.content_length is not None:
        if request.content_length > limit:
            raise RequestEntityTooLarge()
    elif "wsgi.input_terminated" in request.environ:
        _buffer_streamed_body(limit)


def _buffer_streamed_body(limit: int) -> None:
    """Read a body sent without a length (``Transfer-Encoding: chunked``) now, and 413 if it is too large.

    Werkzeug cuts such a body at the limit without a word (the view then sees truncated JSON, a 400);
    only the server's own stream tells whether more follows. The body read is handed on to the view.
    """
    stream = request.environ["wsgi.input"]
    chunks, size = [], 0
    while size <= limit:
        chunk = stream.read(min(_READ_SIZE, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise RequestEntityTooLarge()
    request.environ["wsgi.input"] = io.BytesIO(b"".join(chunks))


class ApiWithHeaders(Api):
    """flask-smorest's Api, keeping the headers an HTTP error carries (405's `Allow`)."""

    def handle_http_exception(self, error: HTTPException):
        payload, code, headers = super().handle_http_exception(error)
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            headers = {**headers, "Allow": ", ".join(sorted(error.valid_methods))}
        return payload, code, headers


def register_error_handlers(app: Flask) -> None:
    app.before_request(reject_oversized_bodies)
    app.register_error_handler(Refused, _refused)
    app.register_error_handler(IntegrityError, _integrity_error)
    if not app.testing:
        # Under test, let an unexpected error propagate so it fails loudly.
        app.register_error_handler(Exception, _unexpected_error)
