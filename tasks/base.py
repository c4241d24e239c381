"""The base of every payhooks task: its runtime (settings, the unit of work), the retry
policy, and what Celery may print about its arguments.

Events are applied by the unit of work (application/unit.py), which owns the
transaction; a task hands it events and decides what a transient failure
means for the message: try again later, for as long as it lasts.

Celery writes ``argsrepr``/``kwargsrepr`` into every message it publishes and
prints them in the worker's "Task received", retry and failure lines (and hands
them to error reporting); left to itself it uses the first kilobyte of the
arguments' repr, raw bodies included. ``apply_async`` is the one door every
publish goes through — ``delay``, beat, and ``Task.retry``, which rebuilds the
message from the request's arguments — so it sets both from ``public_args``:
the arguments a task declares to be ids are shown, every other value only by
its type.
"""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING

from celery import Task

from infra.backoff import backoff_seconds

if TYPE_CHECKING:
    from workers.runtime import Runtime


class PayhooksTask(Task):
    # ``retry(max_retries=None)`` does not mean "no limit" in Celery: it falls back
    # to this attribute, 3 by default, then re-raises and the message is
    # acknowledged — gone. None here is what makes retries unlimited.
    max_retries = None

    #: Names of arguments whose values are ids, safe to show in Celery's log lines.
    public_args: tuple[str, ...] = ()

    @property
    def runtime(self) -> "Runtime":
        return self.app.payhooks

    def apply_async(self, args=None, kwargs=None, **options):
        if not options.get("argsrepr") or not options.get("kwargsrepr"):
            argsrepr, kwargsrepr = self.describe_arguments(args or (), kwargs or {})
            options["argsrepr"] = options.get("argsrepr") or argsrepr
            options["kwargsrepr"] = options.get("kwargsrepr") or kwargsrepr
        return super().apply_async(args, kwargs, **options)

    def describe_arguments(self, args, kwargs) -> tuple[str, str]:
        """What Celery shows instead of the arguments: ids as they are, anything else as <type>."""
        names = _positional_names(type(self))
        shown = [
            _shown(names[index] if index < len(names) else None, value, self.public_args)
            for index, value in enumerate(args)
        ]
        argsrepr = f"({shown[0]},)" if len(shown) == 1 else f"({', '.join(shown)})"
        keywords = (f"{name!r}: {_shown(name, value, self.public_args)}" for name, value in kwargs.items())
        return argsrepr, "{" + ", ".join(keywords) + "}"

    def retry_later(self, exc: BaseException):
        """Retry a transient failure with capped, jittered backoff, for as long as it lasts."""
        settings = self.runtime.settings
        countdown = backoff_seconds(
            self.request.retries, base=settings.retry_backoff_base_seconds, cap=settings.retry_backoff_max_seconds
        )
        return self.retry(exc=exc, countdown=countdown)


@functools.cache
def _positional_names(task_class: type) -> tuple[str, ...]:
    try:
        parameters = inspect.signature(task_class.run).parameters.values()
    except (TypeError, ValueError):
        return ()
    names = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    # Bound tasks' run() takes the task itself first; it is not in the message.
    return tuple(names[1:] if names[:1] == ["self"] else names)


def _shown(name: str | None, value, public: tuple[str, ...]) -> str:
    if name in public and (value is None or isinstance(value, (str, int, float))):
        return repr(value)
    return f"<{type(value).__name__}>"
