"""Every error leaves as JSON: ``{"error": "<code>", "message": "<sentence>"}``."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from receiver.responses import Error

log = logging.getLogger("payhooks.receiver")


def error_body(code: str, message: str, **extra) -> dict:
    """The JSON document of an error answer."""
    return Error(error=code, message=message, **extra).model_dump(mode="json", exclude_none=True)


def error(status: int, code: str, message: str, **extra):
    response = jsonify(error_body(code, message, **extra))
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error(exc.code or 500, code, exc.description or exc.name)
        for header in ("Allow", "Retry-After", "WWW-Authenticate"):
            if exc.get_response().headers.get(header):
                response.headers[header] = exc.get_response().headers[header]
        return response

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeoutError)
    def database_unavailable(exc: Exception):
        # Not a bug: the database is away or overloaded. Say so and when to come back.
        log.warning("database unavailable: %s", exc.__class__.__name__)
        response = error(503, "database_unavailable", "the database is unavailable; retry shortly")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return error(500, "internal_error", "an unexpected error occurred; it has been logged")
