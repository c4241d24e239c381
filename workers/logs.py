"""Structured logs: one JSON object per line, carrying what is being handled.

``log_context(event_id=…, provider=…)`` adds fields to every line logged inside
it (a contextvar, so it follows the code that set it and nothing else), which
lets one event be followed from the receiver through the task to the ledger:
``grep evt_123`` over the logs of every process.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pythonjsonlogger.json import JsonFormatter

_CONTEXT: contextvars.ContextVar[dict] = contextvars.ContextVar("payhooks_log_context", default={})

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


@contextmanager
def log_context(**fields) -> Iterator[None]:
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def add_log_context(**fields) -> None:
    """Add fields to the current context (for facts learned midway, like the payment id)."""
    _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get().items():
            setattr(record, key, value)
        return True


def formatter(fmt: str = "json") -> logging.Formatter:
    """The formatter every process writes its log lines with."""
    if fmt == "json":
        return JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route every log line (ours, Celery's, gunicorn's error log) through one formatter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
