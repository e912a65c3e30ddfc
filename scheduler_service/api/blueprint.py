"""The Blueprint every resource uses: flask-smorest's, with a JSON parser that cannot be made to crash."""
from __future__ import annotations

import json
import typing

import flask
import flask_smorest
from webargs.flaskparser import FlaskParser, abort, is_json_request


class JsonBodyParser(FlaskParser):
    """Answers 400 for a body that is not JSON: another content type, an empty body,
    or JSON nested deeper than Python's recursion limit (which would otherwise be a 500)."""

    def _raw_load_json(self, req: flask.Request) -> typing.Any:
        if not is_json_request(req) or not req.get_data(cache=True):
            error = json.JSONDecodeError("the body must be JSON (Content-Type: application/json)", "", 0)
            return self._handle_invalid_json_error(error, req)
        try:
            return super()._raw_load_json(req)
        except RecursionError:
            error = json.JSONDecodeError("JSON nested too deeply", "", 0)
            return self._handle_invalid_json_error(error, req)


    def _handle_invalid_json_error(self, error, req, *args, **kwargs) -> typing.NoReturn:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else "not UTF-8"
        abort(400, exc=error, messages={"json": [f"Invalid JSON body: {reason}."]})


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = JsonBodyParser()
