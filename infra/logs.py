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
import time
from collections.abc import Iterator
from contextlib import contextmanager

import orjson

_CONTEXT: contextvars.ContextVar[dict] = contextvars.ContextVar("payhooks_log_context", default={})

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


@contextmanager
def log_context(**fields) -> Iterator[None]:
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _CONTEXT.get().items():
            setattr(record, key, value)
        return True


# What every LogRecord has; anything else on a record is a field someone added (extra=, the context).
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonLines(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, then every added field.

    Written with orjson: the workers log a line per event, and a general-purpose
    JSON formatter cost them about as much as applying the event.
    """

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                line.setdefault(key, value)
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def formatter(fmt: str = "json") -> logging.Formatter:
    """The formatter every process writes its log lines with."""
    return JsonLines() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route every log line (ours, Celery's, gunicorn's error log) through one formatter."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
