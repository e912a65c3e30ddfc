"""The Blueprint every resource uses: flask-smorest's, with a JSON parser that cannot be made to crash."""
from __future__ import annotations

import json
import typing

import flask
import flask_smorest
from webargs.flaskparser import FlaskParser, abort, is_json_request


def _refuse_constant(name: str) -> typing.NoReturn:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"number out of range: {text[:20]}")
    return number


class JsonBodyParser(FlaskParser):
    """Answers 400 for a body that is not strict JSON: another content type, an empty body
    labelled JSON, NaN or Infinity (which no database JSON type stores), numbers past Python's
    limits, or nesting deeper than the recursion limit (which would otherwise be a 500). No body
    at all (and no Content-Type) is an empty object: `curl -X POST .../pause/` needs none, and a
    body that needs fields gets 422 naming them."""

    def _raw_load_json(self, req: flask.Request) -> typing.Any:
        data = req.get_data(cache=True)
        if not data and not req.content_type:
            return {}
        if not is_json_request(req) or not data:
            error = json.JSONDecodeError("the body must be JSON (Content-Type: application/json)", "", 0)
            return self._handle_invalid_json_error(error, req)
        try:
            return json.loads(data.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else (
                "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(":")[0])
            return self._handle_invalid_json_error(json.JSONDecodeError(reason, "", 0), req)

    def _handle_invalid_json_error(self, error, req, *args, **kwargs) -> typing.NoReturn:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else "not UTF-8"
        abort(400, exc=error, messages={"json": [f"Invalid JSON body: {reason}."]})


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = JsonBodyParser()
