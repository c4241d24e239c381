"""Request bodies: read in full, within a size limit and a deadline, before anything looks at them.

A client that sends its headers and then trickles the body must not hold the
receiver. The web process runs gunicorn's gevent worker (receiver/gunicorn_conf.py),
where a blocked read can be cut cleanly: the body is read inside a
``gevent.Timeout``, and one not complete after REQUEST_BODY_TIMEOUT_SECONDS is
answered 408. The request line and headers have their own deadline in the server.
Anywhere else (the test client, another WSGI server) the body is read without a
deadline: a thread blocked in ``recv`` cannot be interrupted, which is why the
Procfile does not run the receiver on threads.

Webhooks (receiver/webhooks.py) read with ``BodyReader.read`` and keep
WEBHOOK_MAX_BYTES; Flask's routes read before their view runs, /api within
API_MAX_BYTES. Werkzeug refuses a declared length over the limit before reading
a byte, and stops reading a chunked body at the limit.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager

from flask import Flask, request
from werkzeug.exceptions import RequestTimeout
from werkzeug.wsgi import get_input_stream

from infra.settings import Settings


def cooperative() -> bool:
    """True in a process whose sockets gevent has patched (gunicorn's gevent worker)."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("socket"))


class BodyReader:
    """Reads whole bodies under the settings' deadline; raises werkzeug's 413 and 408 errors."""

    def __init__(self, settings: Settings) -> None:
        self.deadline = _deadline(settings.request_body_timeout_seconds)

    def read(self, environ: dict, limit: int) -> bytes:
        """The whole body of a WSGI request: RequestEntityTooLarge past ``limit``, RequestTimeout past the deadline."""
        stream = get_input_stream(environ, max_content_length=limit)
        with self.deadline():
            return stream.read()


def _deadline(seconds: float) -> Callable[[], AbstractContextManager]:
    if not cooperative():
        return contextlib.nullcontext
    import gevent

    def deadline():
        return gevent.Timeout(seconds, RequestTimeout(f"the body must arrive within {seconds:g} seconds"))

    return deadline


def register(app: Flask, settings: Settings) -> None:
    """Flask's routes (the API, health, metrics) read their body before the view, under the same deadline."""
    deadline = BodyReader(settings).deadline

    @app.before_request
    def read_body():
        request.max_content_length = (
            settings.api_max_bytes if request.blueprint == "api" else settings.webhook_max_bytes
        )
        if not _has_body(request.environ):
            return None
        with deadline():
            request.get_data(cache=True)  # views read it from here; a timeout or 413 raises
        return None


def _has_body(environ: dict) -> bool:
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return True
    try:
        return int(environ.get("CONTENT_LENGTH") or 0) > 0
    except ValueError:
        return False
